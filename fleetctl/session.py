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
from dataclasses import dataclass
from typing import NoReturn

import httpx
import typer

from fleetctl.client import (
    DEFAULT_ENDPOINT,
    DEFAULT_REQUEST_TIMEOUT,
    EndpointError,
    FleetClient,
    FleetctlError,
    parse_endpoint,
)
from fleetctl.models import Machine
from fleetctl.output import Output, OutputFormat, machine_id_legend, machine_legend

TOKEN_VARIABLE = "FLEETCTL_API_TOKEN"


@dataclass(slots=True)
class Settings:
    """The global flags of one run, and the transport `main` was given, if any."""

    endpoint: str = DEFAULT_ENDPOINT
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    debug: bool = False
    output: OutputFormat = OutputFormat.TEXT
    transport: httpx.BaseTransport | None = None


class Session:
    def __init__(self, settings: Settings, command: str = "") -> None:
        self.settings = settings
        self.out = Output(settings.output, debug=settings.debug)
        self.out.command = command
        self._client: FleetClient | None = None
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
            self._client = FleetClient(
                endpoint,
                timeout=self.settings.request_timeout,
                token=os.environ.get(TOKEN_VARIABLE) or None,
                transport=self.settings.transport,
                log=self.out.debug,
            )
        return self._client

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
        """Close the API client, if one was made (`run` does it for the commands it runs)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def run(self, body: Callable[[], int]) -> NoReturn:
        """Run a command body and exit with its code, printing errors it did not handle."""
        try:
            code = body()
        except (FleetctlError, EndpointError) as exc:
            self.out.error(f"Error: {exc}")
            code = 1
        finally:
            if self._client is not None:
                self._client.close()
        self.out.finish(code)
        raise typer.Exit(code)
