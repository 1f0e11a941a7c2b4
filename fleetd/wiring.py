"""fleetd's wiring: config -> etcd client -> engine, API and agent.

Every component runs under one `run_components` task group; a crashed component takes fleetd
down loudly (systemd restarts it), and shutdown on SIGTERM is bounded. An unreachable etcd is
never fatal: the client, the watches and the election retry with backoff and log it. Neither is
an unreachable system bus: the agent logs it and keeps retrying (`agent.agent`).

The agent (unless `--disable-agent`) runs as machine `/etc/machine-id`, announcing `public_ip`
(or, when it is empty, the address of the interface the default route leaves by, else
127.0.0.1) and `metadata`, on a lease of `agent_ttl` seconds (rounded up), with its unit files
in `units_directory`. With `peer_listen`, the `peer` component serves the node-to-node endpoint
(`fleetd.api.peer`: unit journals for other fleetds, behind the cluster credential) and the
agent publishes its address in the machine record.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import re
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

import structlog

from agent.agent import run_agent_on_systemd
from fleetd.api.listeners import read_token, serve_api
from fleetd.api.peer import serve_peer
from fleetd.config import Config
from fleetd.core.model import Machine, lease_seconds
from fleetd.engine.engine import Engine
from fleetd.registry.client import EtcdClient
from fleetd.registry.errors import EtcdUnavailable
from fleetd.registry.keys import Keys
from fleetd.runtime.backoff import Backoff
from fleetd.runtime.metrics import Metrics
from fleetd.runtime.supervise import run_components

log = structlog.get_logger(__name__)

# after an engine comes to lead, machines get this long (at least agent_ttl) to re-register
# before their units are moved: an etcd outage expires every lease at once
MIN_DEPARTURE_GRACE = 5.0

_MACHINE_ID = re.compile(r"[0-9a-f]{32}")


class MachineIdError(RuntimeError):
    """The machine id file is missing or does not hold a 32-hex-digit id."""


def read_machine_id(path: str) -> str:
    """The id in `/etc/machine-id` (or the configured file), checked."""
    try:
        text = Path(path).read_text().strip()
    except OSError as exc:
        raise MachineIdError(f"cannot read machine id from {path}: {exc.strerror}") from None
    if not _MACHINE_ID.fullmatch(text):
        raise MachineIdError(f"{path} does not hold a machine id (32 hex digits): {text[:40]!r}")
    return text


_SIOCGIFADDR = 0x8915
_RTF_UP = 0x1
LOOPBACK = "127.0.0.1"


def default_route_interface(route_table: str) -> str | None:
    """The interface of the IPv4 default route in `/proc/net/route` text; None without one."""
    for line in route_table.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8 or fields[1] != "00000000" or fields[7] != "00000000":
            continue
        try:
            if int(fields[3], 16) & _RTF_UP:
                return fields[0]
        except ValueError:
            continue
    return None


def interface_address(interface: str) -> str | None:
    """The IPv4 address of `interface`; None when it has none (or does not exist)."""
    request = struct.pack("256s", interface.encode()[:15])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            reply = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, request)
        except OSError:
            return None
    return socket.inet_ntoa(reply[20:24])


def detect_public_ip(route_table: str = "/proc/net/route") -> str:
    """The address of the interface the default route leaves by, or 127.0.0.1."""
    try:
        table = Path(route_table).read_text()
    except OSError:
        return LOOPBACK
    interface = default_route_interface(table)
    address = interface_address(interface) if interface is not None else None
    return address or LOOPBACK


_WILDCARDS = frozenset({"", "0.0.0.0", "[::]", "::"})


def peer_address(peer_listen: str, public_ip: str) -> str:
    """The node-to-node address others use: `peer_listen`, with a wildcard host (`0.0.0.0:P`,
    `:P`, `[::]:P`) replaced by the machine's public IP; "" when `peer_listen` is empty."""
    if not peer_listen:
        return ""
    host, _, port = peer_listen.rpartition(":")
    if host not in _WILDCARDS:
        return peer_listen
    return f"[{public_ip}]:{port}" if ":" in public_ip else f"{public_ip}:{port}"


def agent_machine(config: Config, machine_id: str) -> Machine:
    """This machine as its agent announces it, with its node-to-node address when it has one."""
    public_ip = config.public_ip or detect_public_ip()
    return Machine(
        machine_id,
        dict(config.metadata),
        public_ip,
        peer_address(config.peer_listen, public_ip),
    )


async def connect_with_retry(config: Config, metrics: Metrics | None = None) -> EtcdClient:
    """Connect to etcd, retrying with backoff for as long as it takes, and saying so."""
    backoff = Backoff(initial=0.5, maximum=10.0)
    while True:
        try:
            return await EtcdClient.connect(
                config.etcd_servers, timeout=config.etcd_request_timeout, metrics=metrics
            )
        except EtcdUnavailable as exc:
            delay = backoff.next_delay()
            log.warning("etcd unreachable, retrying", error=str(exc), retry_in=round(delay, 2))
            await asyncio.sleep(delay)


async def serve(config: Config, stop: asyncio.Event, *, shutdown_timeout: float = 10.0) -> None:
    """Run this fleetd's components until `stop` is set."""
    machine_id = read_machine_id(config.machine_id_file)
    keys = Keys(config.etcd_key_prefix)
    metrics = Metrics()  # this fleetd's, served at /metrics
    client = await connect_with_retry(config, metrics)
    try:
        components: dict[str, Callable[[], Awaitable[None]]] = {}
        if not config.disable_engine:
            engine = Engine(
                client,
                keys,
                machine_id,
                reconcile_interval=config.engine_reconcile_interval,
                departure_grace=max(config.agent_ttl, MIN_DEPARTURE_GRACE),
                metrics=metrics,
            )
            components["engine"] = engine.run
        if config.listen:
            components["api"] = functools.partial(
                serve_api,
                config,
                client,
                keys,
                shutdown_timeout=shutdown_timeout / 2,
                metrics=metrics,
            )
        if config.peer_listen:
            components["peer"] = functools.partial(
                serve_peer,
                config.peer_listen,
                read_token(config.cluster_secret_file, "cluster_secret_file"),
                shutdown_timeout=shutdown_timeout / 2,
            )
        if not config.disable_agent:
            components["agent"] = functools.partial(
                run_agent_on_systemd,
                client,
                keys,
                agent_machine(config, machine_id),
                units_directory=Path(config.units_directory),
                ttl=lease_seconds(config.agent_ttl),
                metrics=metrics,
            )
        log.info(
            "fleetd starting",
            machine=machine_id,
            etcd=list(config.etcd_servers),
            prefix=keys.prefix,
            components=sorted(components),
        )
        if components:
            await run_components(components, stop=stop, shutdown_timeout=shutdown_timeout)
        else:
            await stop.wait()
    finally:
        await client.close()
        log.info("fleetd stopped", machine=machine_id)
