"""The agent on real systemd: how fast one node starts and unloads many units, and what it costs
while they just run.

Starts, from the rig's node image (`scripts/rig-build`, honouring `PYFLEET_IMAGE_NAME`), an etcd
and one systemd node whose fleetd runs only the agent (no engine, no API), both exactly as the rig
tests start them (`tests/rig/nodes.py`). Then, talking to etcd from the host:

1. stores `--units` unit records (`units/<unit>`, a `sleep infinity` service each, every file
   different) and waits until the machine is registered;
2. `start`: writes every `schedule/<machine>/<unit>` at once (transactions of 128 puts, as the
   engine does) and times until every `states/<machine>/<unit>` says `active`/`running` with the
   scheduled hash;
3. `idle`: lets the node settle for `--settle` seconds, then reads fleetd's CPU time (user +
   system, `/proc/<pid>/stat` inside the container) over `--idle` seconds, with the units
   running and nothing changing; systemd's (PID 1), dbus-daemon's and journald's over the same
   window too;
4. `unload`: deletes the whole schedule of the machine in one request and times until every
   state is gone and the units directory is empty.

For the start and the unload it also reports where the time went: the CPU seconds each of those
four processes spent during the step (`start_cpu_s`, `unload_cpu_s`), and the agent's stages as
its journal logged them, `[stage, tasks, seconds]` in order (`start_stages`, `unload_stages`).

Prints one JSON line and writes it to `bench/results/agent_systemd.json`:

    PYFLEET_IMAGE_NAME=pyfleet-node-mine .venv/bin/python -m bench.agent_systemd --units 1000

Needs root and a Docker engine, like the rig tests. Figures depend on the machine (and on what
else runs on it); `cpu_count` and the load average before the run are in the output.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from testcontainers.core.container import DockerContainer

from fleetd.core.model import Placement
from fleetd.core.states import JobState
from fleetd.core.unitfile import parse_unit
from fleetd.registry.client import EtcdClient, Put
from fleetd.registry.codec import (
    UnitRecord,
    decode_state,
    encode_placement,
    encode_unit,
)
from fleetd.registry.keys import DEFAULT_PREFIX, Keys
from fleetd.registry.units import checked_unit_record
from tests.rig.nodes import (
    build_image,
    etcd_container,
    fleetd_journal,
    make_network,
    node_container,
    run_in,
)

MACHINE = "0c1ab2f2f1a34a7e8d3a6e1f20aab001"
PREFIX = DEFAULT_PREFIX  # the node's fleetd keeps the default
BATCH = EtcdClient.MAX_TXN_OPS
RESULTS = Path(__file__).resolve().parent / "results" / "agent_systemd.json"
UNITS_DIRECTORY = "/run/fleet/units"


def unit_text(index: int) -> str:
    return f"[Unit]\nDescription=bench unit {index}\n\n[Service]\nExecStart=/bin/sleep infinity\n"


def unit_name(index: int) -> str:
    return f"bench-{index:05d}.service"


async def put_all(client: EtcdClient, items: list[tuple[str, bytes]]) -> None:
    """Write `items` in transactions of `BATCH` puts, a few transactions at a time."""
    limit = asyncio.Semaphore(4)

    async def one(batch: list[tuple[str, bytes]]) -> None:
        async with limit:
            await client.txn([], [Put(key, value) for key, value in batch])

    await asyncio.gather(
        *(one(items[start : start + BATCH]) for start in range(0, len(items), BATCH))
    )


async def wait_for_states(
    client: EtcdClient,
    prefix: str,
    done: Any,
    *,
    within: float,
) -> float:
    """Watch `prefix` until `done(states)` holds (states: unit -> (active, sub, hash)); returns
    the monotonic time it first held. Raises TimeoutError after `within` seconds."""
    kvs, revision = await client.get_prefix(prefix)
    states: dict[str, tuple[str, str, str]] = {}
    for kv in kvs:
        record = decode_state(kv.key, kv.value)
        states[kv.key[len(prefix) :]] = (record.active_state, record.sub_state, record.hash)
    if done(states):
        return time.monotonic()
    stream = client.watch(prefix, start_revision=revision + 1)
    async with asyncio.timeout(within), contextlib.aclosing(stream):
        async for changes in stream:
            for event in changes.events:
                name = event.kv.key[len(prefix) :]
                if event.kind == "put":
                    record = decode_state(event.kv.key, event.kv.value)
                    states[name] = (record.active_state, record.sub_state, record.hash)
                else:
                    states.pop(name, None)
            if done(states):
                return time.monotonic()
    raise TimeoutError  # the watch ended


def cpu_seconds(node: DockerContainer, pid: str) -> float:
    """utime + stime of `pid` in `node`, in seconds (an exec that says nothing is tried again)."""
    output = ""
    for _ in range(5):
        code, output = run_in(node, ["sh", "-c", f"cat /proc/{pid}/stat && getconf CLK_TCK"])
        lines = output.splitlines()
        if code == 0 and len(lines) == 2:
            fields = lines[0].rpartition(")")[2].split()  # after the name, which may hold spaces
            return (int(fields[11]) + int(fields[12])) / int(lines[1])  # utime, stime
        time.sleep(0.2)
    raise RuntimeError(f"cannot read /proc/{pid}/stat: {output!r}")


def main_pid(node: DockerContainer, service: str) -> str:
    _, pid = run_in(node, ["systemctl", "show", "-p", "MainPID", "--value", service])
    return pid


def progress(message: str) -> None:
    print(f"agent_systemd: {message}", file=sys.stderr, flush=True)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    keys = Keys(PREFIX)
    result: dict[str, Any] = {
        "benchmark": "agent_systemd",
        "units": args.units,
        "cpu_count": os.cpu_count(),
        "loadavg_before": os.getloadavg()[0],
    }
    image = build_image()
    result["image"] = image
    network = make_network()
    try:
        with (
            etcd_container(image, network).with_exposed_ports(2379) as etcd,
            node_container(
                image,
                network,
                "bench-node",
                machine_id=MACHINE,
                environment={
                    "FLEET_DISABLE_ENGINE": "true",
                    "FLEET_LISTEN": "",
                    "FLEET_AGENT_TTL": "10",
                },
            ) as node,
        ):
            endpoint = f"{etcd.get_container_host_ip()}:{etcd.get_exposed_port(2379)}"
            client = await EtcdClient.connect([endpoint], timeout=10.0)
            try:
                await measure(client, keys, node, args, result)
            except BaseException:
                print(fleetd_journal(node, 60))
                raise
            finally:
                await client.close()
    finally:
        network.remove()
    return result


async def measure(
    client: EtcdClient,
    keys: Keys,
    node: DockerContainer,
    args: argparse.Namespace,
    result: dict[str, Any],
) -> None:
    records = {}
    for i in range(args.units):
        unit = parse_unit(unit_text(i))
        records[unit_name(i)] = checked_unit_record(unit_name(i), unit, JobState.LAUNCHED)
    await put_all(client, [(keys.unit(name), encode_unit(r)) for name, r in records.items()])
    deadline = time.monotonic() + 60
    while await client.get(keys.machine(MACHINE)) is None:
        if time.monotonic() > deadline:
            raise RuntimeError("the node's agent did not register within 60 s")
        await asyncio.sleep(0.2)
    pids, lines = node_pids(node), journal_length(node)
    before = cpu_by_process(node, pids)
    await time_start(client, keys, node, records, within=args.within, result=result)
    result["start_cpu_s"] = cpu_spent(before, cpu_by_process(node, pids))
    result["start_stages"] = agent_stages(node, lines)
    progress(f"started: {result}")
    await asyncio.sleep(args.settle)
    measure_idle(node, args.idle, result)
    progress(f"idle: {result}")
    lines, before = journal_length(node), cpu_by_process(node, pids)
    await time_unload(client, keys, node, args.within, result)
    result["unload_cpu_s"] = cpu_spent(before, cpu_by_process(node, pids))
    result["unload_stages"] = agent_stages(node, lines)
    _, restarts = run_in(node, ["systemctl", "show", "-p", "NRestarts", "--value", "fleet"])
    result["fleetd_restarts"] = int(restarts)
    _, reloads = run_in(
        node, ["sh", "-c", "journalctl -u fleet.service -o cat | grep -c 'task.: .reload' || true"]
    )
    result["daemon_reloads"] = int(reloads)


async def time_start(
    client: EtcdClient,
    keys: Keys,
    node: DockerContainer,
    records: dict[str, UnitRecord],
    *,
    within: float,
    result: dict[str, Any],
) -> None:
    """Schedule every unit at once; time until every state says active/running."""
    hashes = {name: record.hash for name, record in records.items()}

    def all_running(states: dict[str, tuple[str, str, str]]) -> bool:
        return all(states.get(name) == ("active", "running", h) for name, h in hashes.items())

    watcher = asyncio.create_task(
        wait_for_states(client, keys.state(MACHINE, ""), all_running, within=within)
    )
    await asyncio.sleep(0.5)  # the watch is in place (it reads first, so nothing is missed)
    started = time.monotonic()
    placements = [Placement(name, MACHINE, h, JobState.LAUNCHED) for name, h in hashes.items()]
    await put_all(
        client, [(keys.placement(MACHINE, p.unit), encode_placement(p)) for p in placements]
    )
    written = time.monotonic()
    running_at = await watcher
    result["schedule_write_s"] = round(written - started, 3)
    result["start_s"] = round(running_at - started, 3)
    result["starts_per_s"] = round(len(records) / (running_at - started), 1)
    code, active = run_in(
        node, ["sh", "-c", "systemctl list-units --state=active --no-legend 'bench-*' | wc -l"]
    )
    result["systemd_active"] = int(active) if code == 0 else active


def node_pids(node: DockerContainer) -> dict[str, str]:
    """The node's processes whose CPU the benchmark reports, by name."""
    return {
        "fleetd": main_pid(node, "fleet.service"),
        "systemd": "1",
        "dbus": main_pid(node, "dbus.service"),
        "journald": main_pid(node, "systemd-journald.service"),
    }


def cpu_by_process(node: DockerContainer, pids: dict[str, str]) -> dict[str, float]:
    return {name: cpu_seconds(node, pid) for name, pid in pids.items()}


def cpu_spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: round(after[name] - cpu, 2) for name, cpu in before.items()}


def agent_stages(node: DockerContainer, since: int) -> list[list[Any]]:
    """The agent's stages after the first `since` journal lines of fleet.service, in order:
    [stage, tasks, seconds] from each "agent stage done" line."""
    _, journal = run_in(node, ["journalctl", "-u", "fleet.service", "--no-pager", "-o", "cat"])
    stages = []
    for line in journal.splitlines()[since:]:
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict) and entry.get("event") == "agent stage done":
                stages.append([entry["stage"], entry["tasks"], entry["seconds"]])
    return stages


def journal_length(node: DockerContainer) -> int:
    _, journal = run_in(node, ["journalctl", "-u", "fleet.service", "--no-pager", "-o", "cat"])
    return len(journal.splitlines())


def measure_idle(node: DockerContainer, seconds: float, result: dict[str, Any]) -> None:
    """CPU of fleetd, systemd, dbus-daemon and journald over `seconds` in which nothing
    changes."""
    pids = node_pids(node)
    before = cpu_by_process(node, pids)
    started = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - started
    after = cpu_by_process(node, pids)
    result["idle_window_s"] = round(elapsed, 1)
    for name, cpu in before.items():
        result[f"idle_cpu_pct_{name}"] = round(100 * (after[name] - cpu) / elapsed, 2)


async def time_unload(
    client: EtcdClient, keys: Keys, node: DockerContainer, within: float, result: dict[str, Any]
) -> None:
    """Delete the machine's whole schedule; time until no state and no unit file is left."""

    def all_gone(states: dict[str, tuple[str, str, str]]) -> bool:
        return not states

    watcher = asyncio.create_task(
        wait_for_states(client, keys.state(MACHINE, ""), all_gone, within=within)
    )
    await asyncio.sleep(0.5)
    started = time.monotonic()
    await client.delete(keys.schedule_of(MACHINE), prefix=True)
    gone_at = await watcher
    while True:
        _, listing = run_in(node, ["sh", "-c", f"ls {UNITS_DIRECTORY} | grep -c service || true"])
        if listing.strip() == "0":
            break
        if time.monotonic() - started > within:
            raise RuntimeError(f"unit files still present: {listing}")
        await asyncio.sleep(0.1)
    files_gone_at = time.monotonic()
    result["unload_states_s"] = round(gone_at - started, 3)
    result["unload_s"] = round(files_gone_at - started, 3)
    result["unloads_per_s"] = round(result["units"] / (files_gone_at - started), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--units", type=int, default=1000)
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of the idle window")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds before the window")
    parser.add_argument("--within", type=float, default=600.0, help="deadline of each step")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    line = json.dumps(result, sort_keys=True)
    print(line)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(line + "\n")


if __name__ == "__main__":
    main()
