"""pyfleet's main job for now: a local cluster on a real etcd, scheduling the example units.

It starts etcd and two `fleetd` engine candidates (real processes), registers three machines the
way an agent does (a record under `machines/<id>` on a kept-alive lease; the real agent on
systemd arrives with the agent issue), submits the units in `units/` the way the API stores them,
and shows where the elected engine placed them. Then it takes a machine away and kills the
leading fleetd, and shows the cluster recover. Everything it started is stopped at the end.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from devtools.etcd_server import EtcdServer
from fleetd.core.model import Machine
from fleetd.core.names import parse_unit_name
from fleetd.core.states import JobState
from fleetd.core.submission import parse_unit_text
from fleetd.registry.client import EtcdClient
from fleetd.registry.codec import (
    decode_leader,
    decode_reasons,
    encode_machine,
)
from fleetd.registry.keys import Keys
from fleetd.registry.lease import Lease
from fleetd.registry.units import put_unit

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[1]
MACHINES = {
    "0c1ab2f2f1a34a7e8d3a6e1f20aa0001": {"role": "web"},
    "5d9e01b7c3f04b1d9a2e4c6b80bb0002": {"role": "db"},
    "9f2c44e6d87a4c2f8b1e3d5a70cc0003": {"role": "db"},
}
ENGINES = ("e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1", "e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2")
UNITS = [
    "hello.service",
    "web@1.service",
    "web@2.service",
    "monitor.service",
    "app.service",
    "app-announce.service",
    "db.service",
    "cache.service",
]


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def unit_file_for(name: str) -> Path:
    direct = ROOT / "units" / name
    if direct.exists():
        return direct
    template = parse_unit_name(name).template
    assert template is not None, f"no unit file for {name}"
    return ROOT / "units" / template


async def submit(client: EtcdClient, keys: Keys, name: str) -> None:
    unit = parse_unit_text(name, unit_file_for(name).read_text())
    await put_unit(client, keys, name, unit, JobState.LAUNCHED)


async def show(client: EtcdClient, keys: Keys) -> dict[str, set[str]]:
    kvs, _ = await client.get_prefix(keys.schedule)
    placed: dict[str, set[str]] = {}
    for kv in kvs:
        machine, unit = keys.split_pair(keys.schedule, kv.key)
        placed.setdefault(unit, set()).add(machine)
    units, _ = await client.get_prefix(keys.units)
    print(f"{'UNIT':<22} {'DSTATE':<9} MACHINE / WHY NOT")
    for kv in units:
        name = keys.name_under(keys.units, kv.key)
        where = ", ".join(
            f"{m[:8]}.../{MACHINES.get(m, {}).get('role', '?')}"
            for m in sorted(placed.get(name, ()))
        )
        if not where:
            reasons = await client.get(keys.unplaceable_unit(name))
            why = decode_reasons(reasons.key, reasons.value) if reasons else ("(not yet placed)",)
            where = "unplaced: " + "; ".join(why)
        print(f"{name:<22} {'launched':<9} {where}")
    return placed


async def wait_for(probe: Callable[[], Awaitable[T]], what: str, within: float = 30.0) -> T:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        result = await probe()
        if result:
            return result
        await asyncio.sleep(0.1)
    raise SystemExit(f"demo: timed out waiting for {what}")


def start_fleetd(
    endpoint: str, prefix: str, machine_id: str, workdir: Path
) -> subprocess.Popen[bytes]:
    id_file = workdir / f"machine-id-{machine_id[:4]}"
    id_file.write_text(machine_id + "\n")
    log = (workdir / f"fleetd-{machine_id[:4]}.log").open("wb")
    return subprocess.Popen(
        [
            str(Path(sys.executable).parent / "fleetd"),
            f"--etcd-servers={endpoint}",
            f"--etcd-key-prefix={prefix}",
            "--engine-reconcile-interval=0.4",
            "--disable-agent",
        ],
        env={**os.environ, "FLEET_MACHINE_ID_FILE": str(id_file)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )


async def leader(client: EtcdClient, keys: Keys) -> str:
    kv = await client.get(keys.leader)
    return decode_leader(kv.key, kv.value).machine_id if kv else ""


async def schedule_count(client: EtcdClient, keys: Keys) -> int:
    kvs, _ = await client.get_prefix(keys.schedule)
    return len(kvs)


async def register_machines(client: EtcdClient, keys: Keys, leases: dict[str, Lease]) -> None:
    say("registering three machines (records on kept-alive leases, as agents do)")
    for machine_id, metadata in MACHINES.items():
        lease = await Lease.grant(client, 5)
        lease.start()
        leases[machine_id] = lease
        record = encode_machine(Machine(machine_id, metadata, "127.0.0.1"), "demo")
        await client.put(keys.machine(machine_id), record, lease=lease.id)
        print(f"{machine_id[:8]}...  {metadata}")


async def lose_a_machine(client: EtcdClient, keys: Keys, leases: dict[str, Lease]) -> None:
    placed = await show(client, keys)
    lost = next(iter(placed["db.service"]))
    say(f"machine {lost[:8]}... goes away (its lease is revoked)")
    await leases.pop(lost).revoke()

    async def moved() -> bool:
        kvs, _ = await client.get_prefix(keys.schedule)
        return not any(keys.split_pair(keys.schedule, kv.key)[0] == lost for kv in kvs)

    await wait_for(moved, "units to leave the lost machine")
    await asyncio.sleep(0.5)
    await show(client, keys)


async def kill_the_leader(
    client: EtcdClient, keys: Keys, fleetds: dict[str, subprocess.Popen[bytes]]
) -> None:
    first = await leader(client, keys)
    say(f"killing the leading fleetd {first[:8]}... (SIGKILL: its lease must expire)")
    fleetds[first].send_signal(signal.SIGKILL)
    fleetds[first].wait()

    async def new_leader() -> str:
        now = await leader(client, keys)
        return now if now != first else ""

    started = time.monotonic()
    second = await wait_for(new_leader, "a new engine leader")
    print(f"new engine leader: fleetd {second[:8]}... after {time.monotonic() - started:.1f}s")
    await submit(client, keys, "web@3.service")

    async def judged() -> bool:
        return await client.get(keys.unplaceable_unit("web@3.service")) is not None

    await wait_for(judged, "the new leader to judge web@3.service")
    await show(client, keys)


async def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="pyfleet-demo-"))
    etcd = EtcdServer()
    fleetds: dict[str, subprocess.Popen[bytes]] = {}
    leases: dict[str, Lease] = {}
    client: EtcdClient | None = None
    try:
        say(f"starting etcd on {etcd.endpoint}")
        etcd.start()
        keys = Keys("/fleet-demo/")
        client = await EtcdClient.connect([etcd.endpoint])
        say("starting two fleetd engine candidates")
        for machine_id in ENGINES:
            fleetds[machine_id] = start_fleetd(etcd.endpoint, keys.prefix, machine_id, workdir)
        first = await wait_for(lambda: leader(client, keys), "an engine leader")
        print(f"engine leader: fleetd {first[:8]}...")
        await register_machines(client, keys, leases)
        say("submitting the example units from units/")
        for name in UNITS:
            await submit(client, keys, name)
        await wait_for(lambda: _at_least(schedule_count(client, keys), 9), "the units to be placed")
        await asyncio.sleep(0.5)
        await lose_a_machine(client, keys, leases)
        await kill_the_leader(client, keys, fleetds)
        say("done; stopping everything")
    finally:
        for lease in leases.values():
            await lease.revoke()
        if client is not None:
            await client.close()
        for proc in fleetds.values():
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=15)
        etcd.cleanup()
        print(f"fleetd logs are in {workdir}")


async def _at_least(count: Awaitable[int], wanted: int) -> bool:
    return await count >= wanted


if __name__ == "__main__":
    asyncio.run(main())
