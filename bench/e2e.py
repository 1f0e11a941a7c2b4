"""End to end on a real etcd: submission -> engine placement -> (simulated) agent state.

Starts an etcd (data on tmpfs), runs the real `Engine` in this process, and simulates `--machines`
agents sharing one etcd channel: each registers `machines/<id>` on a shared lease, watches only
`schedule/<id>/` and, for every placement it sees, publishes `states/<id>/<unit>` (what the real
agent does after systemd starts the unit). Then it submits `--units` units, in concurrent bursts,
and measures:

* `units_per_s`: units from the first submission until every state is published;
* `placement_latency_ms`: submission -> the chosen agent's watch delivering the placement (p50,
  p99, max);
* `key_writes_per_unit`: every write to every key the run made (sum of etcd key versions under
  the prefix, machine records excluded), divided by the number of units; the design allows 3;
* `txns`: etcd revisions used (one per put or transaction);
* `foreign_wakeups`: placements delivered to an agent that was not chosen (must be 0: a
  placement wakes only its machine).

    PYTHONPATH=. .venv/bin/python -m bench.e2e --units 2000 --machines 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

from devtools.etcd_server import EtcdServer
from fleetd.core.model import Machine
from fleetd.core.states import JobState
from fleetd.core.unitfile import parse_unit
from fleetd.engine.engine import Engine
from fleetd.registry.client import EtcdClient
from fleetd.registry.codec import encode_machine
from fleetd.registry.keys import Keys
from fleetd.registry.lease import Lease
from fleetd.registry.units import put_unit
from fleetd.registry.watch import Changes, PrefixWatcher

UNIT_TEXT = "[Unit]\nDescription=bench {n}\n\n[Service]\nExecStart=/bin/sleep infinity\n"


class SimulatedAgents:
    """Agents that only watch their own schedule and publish a state for each placement."""

    def __init__(self, client: EtcdClient, keys: Keys, machines: list[str], lease: Lease) -> None:
        self.client, self.keys, self.machines, self.lease = client, keys, machines, lease
        self.seen: dict[str, float] = {}
        self.foreign = 0
        self.published = 0
        self.done = asyncio.Event()
        self.expected = 0

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for machine in self.machines:
                group.create_task(self._agent(machine))

    async def _agent(self, machine: str) -> None:
        prefix = self.keys.schedule_of(machine)
        async for batch in PrefixWatcher(self.client, prefix):
            if not isinstance(batch, Changes):
                continue
            for event in batch.events:
                if event.kind != "put":
                    continue
                placed_on, unit = self.keys.split_pair(self.keys.schedule, event.kv.key)
                if placed_on != machine:
                    self.foreign += 1
                self.seen.setdefault(unit, time.perf_counter())
                state = b'{"loadState":"loaded","activeState":"active","subState":"running"}'
                await self.client.put(self.keys.state(machine, unit), state, lease=self.lease.id)
                self.published += 1
                if self.published >= self.expected:
                    self.done.set()


async def run(units: int, machines: int, burst: int) -> dict[str, object]:
    server = EtcdServer()
    server.start()
    client = await EtcdClient.connect([server.endpoint])
    keys = Keys("/bench/")
    try:
        lease = await Lease.grant(client, 30)
        lease.start()
        ids = [f"{i:032x}" for i in range(machines)]
        for machine_id in ids:
            record = encode_machine(Machine(machine_id, {"role": "bench"}), "bench")
            await client.put(keys.machine(machine_id), record, lease=lease.id)
        agents = SimulatedAgents(client, keys, ids, lease)
        agents.expected = units
        engine = Engine(client, keys, "e" * 32, reconcile_interval=2.0)
        tasks = [asyncio.create_task(agents.run()), asyncio.create_task(engine.run())]
        await asyncio.wait_for(engine.leading.wait(), timeout=30)
        _, start_revision = await client.get_prefix(keys.leader)
        submitted: dict[str, float] = {}
        parsed = [parse_unit(UNIT_TEXT.format(n=i)) for i in range(units)]
        started = time.perf_counter()
        for first in range(0, units, burst):
            names = [f"u{i}.service" for i in range(first, min(units, first + burst))]
            for name in names:
                submitted[name] = time.perf_counter()
            await asyncio.gather(
                *(put_unit(client, keys, n, parsed[int(n[1:-8])], JobState.LAUNCHED) for n in names)
            )
        await asyncio.wait_for(agents.done.wait(), timeout=600)
        elapsed = time.perf_counter() - started
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        kvs, end_revision = await client.get_prefix(keys.prefix)
        writes = sum(kv.version for kv in kvs if not kv.key.startswith(keys.machines))
        latencies = sorted((agents.seen[u] - submitted[u]) * 1000 for u in submitted)
        await lease.revoke()
        return {
            "units": units,
            "machines": machines,
            "burst": burst,
            "seconds": round(elapsed, 2),
            "units_per_s": round(units / elapsed),
            "placement_latency_ms": {
                "p50": round(statistics.median(latencies), 1),
                "p99": round(latencies[int(len(latencies) * 0.99) - 1], 1),
                "max": round(latencies[-1], 1),
            },
            "key_writes_per_unit": round(writes / units, 2),
            "txns": end_revision - start_revision,
            "foreign_wakeups": agents.foreign,
        }
    finally:
        await client.close()
        server.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=2000)
    parser.add_argument("--machines", type=int, default=50)
    parser.add_argument("--burst", type=int, default=100, help="units submitted concurrently")
    args = parser.parse_args()
    result = asyncio.run(run(args.units, args.machines, args.burst))
    out = Path(__file__).parent / "results" / "e2e.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
