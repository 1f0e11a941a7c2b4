"""One fleetctl run: the global flags, the API client, the output and the machine legend cache.

Role: the object every command receives (as typer's `ctx.obj`). It builds the client lazily, so
commands that never talk to the API (`version`, `verify`) work with any `--endpoint`, and it owns
the run's end: `Session.run` calls a command body, prints an unexpected `FleetctlError`, writes
the JSON document and exits with the body's code.

Invariants: at most one client per run, closed at the end; the machine list is fetched at most
once per run, and only when a machine legend is needed; the transport given to `main` (tests)
wins over the one the endpoint implies.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import NoReturn

import httpx
import typer

from fleetctl.client import (
    DEFAULT_ENDPOINT,
    DEFAULT_REQUEST_TIMEOUT,
    Endpoint,
    EndpointError,
    FleetClient,
    FleetctlError,
    TlsFiles,
    make_transport,
    parse_endpoint,
)
from fleetctl.models import Machine
from fleetctl.output import Output, OutputFormat, machine_id_legend, machine_legend
from fleetctl.tunnel import CommandRelay, SshOptions, TunnelError, ssh_argv

TOKEN_VARIABLE = "FLEETCTL_API_TOKEN"


@dataclass(slots=True)
class Settings:
    """The global flags of one run, and the transport `main` was given, if any."""

    endpoint: str = DEFAULT_ENDPOINT
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    debug: bool = False
    output: OutputFormat = OutputFormat.TEXT
    transport: httpx.BaseTransport | None = None
    tls: TlsFiles = field(default_factory=TlsFiles)
    tunnel: str = ""
    ssh: SshOptions = field(default_factory=SshOptions)


class Session:
    def __init__(self, settings: Settings, command: str = "") -> None:
        self.settings = settings
        self.out = Output(settings.output, debug=settings.debug)
        self.out.command = command
        self._client: FleetClient | None = None
        self._relay: CommandRelay | None = None
        self._machines: dict[str, Machine] | None = None

    @classmethod
    def of(cls, ctx: typer.Context) -> Session:
        """The session for the command `ctx` runs (made by the app's callback)."""
        settings = ctx.find_object(Settings)
        assert settings is not None, "the app callback stores the settings"
        return cls(settings, command=ctx.info_name or "")

    @property
    def client(self) -> FleetClient:
        if self._client is None:
            endpoint, warnings = parse_endpoint(self.settings.endpoint)
            for warning in warnings:
                self.out.warn(warning)
            transport = self.settings.transport
            if transport is None and self.settings.tunnel:
                transport = make_transport(endpoint, self.settings.tls, via=self._tunnel(endpoint))
                # errors then say which way the API was tried (ssh prints its own reason)
                shown = f"{endpoint.url} through the SSH tunnel to {self.settings.tunnel}"
                endpoint = replace(endpoint, url=shown)
            self._client = FleetClient(
                endpoint,
                timeout=self.settings.request_timeout,
                token=os.environ.get(TOKEN_VARIABLE) or None,
                transport=transport,
                log=self.out.debug,
                tls=self.settings.tls,
            )
        return self._client

    def _tunnel(self, endpoint: Endpoint) -> str:
        """Start the `--tunnel` relay to `endpoint`; returns the local socket it listens on."""
        if endpoint.socket_path is not None:
            remote = ["fleetctl", "fd-forward", endpoint.socket_path]
            argv = ssh_argv(self.settings.ssh, self.settings.tunnel, remote)
        else:
            argv = ssh_argv(self.settings.ssh, self.settings.tunnel, forward_to=endpoint.host_port)
        self.out.debug(f"tunnel: {' '.join(argv)}")
        self._relay = CommandRelay(argv)
        return self._relay.path

    def machines(self) -> dict[str, Machine]:
        """Live machines by id (one list call per run)."""
        if self._machines is None:
            self._machines = {machine.id: machine for machine in self.client.machines()}
        return self._machines

    def legend(self, machine_id: str, full: bool = False) -> str:
        """`113f16a7.../172.17.8.103` for a machine id; the id alone when the machine is gone."""
        machine = self.machines().get(machine_id)
        if machine is None:
            return machine_id_legend(machine_id, full)
        return machine_legend(machine, full)

    def close(self) -> None:
        """Close the API client and the tunnel's relay, if they were made (`run` does it for the
        commands it runs)."""
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._relay is not None:
            self._relay.close()
            self._relay = None

    def run(self, body: Callable[[], int]) -> NoReturn:
        """Run a command body and exit with its code, printing errors it did not handle."""
        try:
            code = body()
        except (FleetctlError, EndpointError, TunnelError) as exc:
            self.out.error(f"Error: {exc}")
            code = 1
        finally:
            self.close()
        self.out.finish(code)
        raise typer.Exit(code)
