"""The pieces of the integration cluster: its machines, and fleetctl runs.

systemd is the only stand-in (each machine is the real agent on the fake systemd,
`devtools.fakehost.FakeHost`): everything else the tests talk to is pyfleet's own code on a real
etcd. `Cluster` is what the `fleet_cluster` fixture
(`conftest.py`) hands to a test: the etcd client and key layout, the endpoints of the served API,
a working directory for local unit files, and `fleetctl` runs over either endpoint.

fleetctl is synchronous, so each run happens in a worker thread (`asyncio.to_thread`) while the
event loop keeps the API, the engine, the agents and the etcd client going. fleetctl writes to
`sys.stdout`/`sys.stderr` as they are at each write, so the run redirects both into buffers; only
one fleetctl runs at a time, and fleetd's logs go to a file (`conftest.fleetd_log`), so nothing
else lands in those buffers.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from dataclasses import dataclass
from pathlib import Path

from devtools.fakehost import FakeHost
from fleetctl.app import main
from fleetd.core.model import Placement
from fleetd.engine.engine import Engine
from fleetd.registry.client import EtcdClient
from fleetd.registry.codec import UnitStateRecord, decode_placement, decode_state
from fleetd.registry.keys import Keys

WEB = "1a2b3c4d5e6f40718293a4b5c6d7e8f9"
DB1 = "5e6f7a8b9c0d41e2a3b4c5d6e7f80912"
DB2 = "9c0d1e2f3a4b45c6d7e8f90a1b2c3d4e"
MACHINE_ROLES = {WEB: "web", DB1: "db", DB2: "db"}
"""Each machine's only metadata, `role`. Ids sort WEB < DB1 < DB2, so the engine's tie-break
(lowest id) is known."""
IP = "127.0.0.1"  # every machine's public IP
TOKEN = "integration-token-4f1e"

POLL_INTERVAL = 0.05
ATTEMPT_WINDOW = 0.5
"""fleetctl's wait timing here: windows of 0.5s polled every 50ms (fleet: 2s and 250ms)."""


def legend(machine_id: str) -> str:
    """fleetctl's machine legend: `1a2b3c4d.../127.0.0.1`."""
    return f"{machine_id[:8]}.../{IP}"


@dataclass(frozen=True)
class Result:
    """One fleetctl run: exit code, stdout, stderr, and how long it took (seconds)."""

    code: int
    out: str
    err: str
    seconds: float


@dataclass
class Cluster:
    """A running cluster, the endpoints of its API, and a directory for local unit files.

    `hosts` holds each live machine (its agent on the fake systemd), by machine id.
    """

    client: EtcdClient
    keys: Keys
    engine: Engine
    socket_path: str
    port: int
    workdir: Path
    hosts: dict[str, FakeHost]

    async def remove_machine(self, machine_id: str) -> None:
        """The machine goes away: its agent stops and its lease is revoked, which deletes its
        `machines/` record and the states it published, as when a node dies."""
        await self.hosts.pop(machine_id).leave()

    @property
    def unix_endpoint(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def tcp_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def run(self, *argv: str) -> Result:
        """fleetctl with exactly `argv`, in a worker thread."""
        return await asyncio.to_thread(_invoke, list(argv))

    async def fleetctl(self, *argv: str) -> Result:
        """fleetctl over the unix socket."""
        return await self.run("--endpoint", self.unix_endpoint, *argv)

    async def fleetctl_tcp(self, *argv: str) -> Result:
        """fleetctl over TCP (the token, if any, comes from `FLEETCTL_API_TOKEN`)."""
        return await self.run("--endpoint", self.tcp_endpoint, *argv)

    def write_unit(self, name: str, text: str) -> Path:
        """Write a local unit file into the working directory (the current directory)."""
        path = self.workdir / name
        path.write_text(text, encoding="utf-8")
        return path

    # ---- what etcd holds, read directly

    async def placements(self) -> dict[str, dict[str, Placement]]:
        """Unit -> machine -> placement, straight from `schedule/`."""
        kvs, _ = await self.client.get_prefix(self.keys.schedule)
        found: dict[str, dict[str, Placement]] = {}
        for kv in kvs:
            machine, unit = self.keys.split_pair(self.keys.schedule, kv.key)
            found.setdefault(unit, {})[machine] = decode_placement(kv.key, kv.value, machine, unit)
        return found

    async def states(self) -> dict[tuple[str, str], tuple[UnitStateRecord, int]]:
        """(unit, machine) -> (published state, lease id), straight from `states/`."""
        kvs, _ = await self.client.get_prefix(self.keys.states)
        found = {}
        for kv in kvs:
            machine, unit = self.keys.split_pair(self.keys.states, kv.key)
            found[unit, machine] = (decode_state(kv.key, kv.value), kv.lease)
        return found

    async def running_on(self, unit: str, machines: set[str]) -> bool:
        """Whether exactly `machines` report `unit` active."""
        states = await self.states()
        running = {
            m
            for (u, m), (state, _) in states.items()
            if u == unit and state.active_state == "active"
        }
        return running == machines

    async def all_stopped(self, count: int) -> bool:
        """Whether exactly `count` states are published, every one inactive."""
        states = await self.states()
        return len(states) == count and all(
            s.active_state == "inactive" for s, _ in states.values()
        )

    async def nothing_scheduled(self) -> bool:
        """No placement and no published state left."""
        return not await self.placements() and not await self.states()

    async def unit_names(self) -> list[str]:
        kvs, _ = await self.client.get_prefix(self.keys.units)
        return [self.keys.name_under(self.keys.units, kv.key) for kv in kvs]


def _invoke(argv: list[str]) -> Result:
    out, err = io.StringIO(), io.StringIO()
    started = time.monotonic()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return Result(code, out.getvalue(), err.getvalue(), time.monotonic() - started)
