"""End to end on a real etcd: submission -> engine placement -> (simulated) agent state.

Starts an etcd (data on tmpfs), runs the real `Engine` in this process, and `--machines`
`devtools.simagent.SimulatedAgent`s sharing one etcd channel: each registers `machines/<id>` on its
lease, watches only `schedule/<id>/` and, for every placement it sees, publishes
`states/<id>/<unit>` (what the real agent does after systemd starts the unit). Then it submits
`--units` units, in concurrent bursts, and measures:

* `units_per_s`: units from the first submission until every state is published;
* `running_latency_ms`: submission -> the chosen agent has seen the placement and published the
  unit's state (p50, p99, max);
* `key_writes_per_unit`: every write to every key the run made (sum of etcd key versions under
  the prefix, machine records excluded), divided by the number of units; the design allows 3;
* `txns`: etcd revisions used (one per put or transaction);
* `extra_wakeups`: placements delivered to agents beyond one per unit (must be 0: a placement
  wakes only the machine it chose).

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
from devtools.simagent import SimulatedAgent
from fleetd.core.states import JobState
from fleetd.core.unitfile import parse_unit
from fleetd.engine.engine import Engine
from fleetd.registry.client import EtcdClient
from fleetd.registry.keys import Keys
from fleetd.registry.units import put_unit

UNIT_TEXT = "[Unit]\nDescription=bench {n}\n\n[Service]\nExecStart=/bin/sleep infinity\n"


async def run(units: int, machines: int, burst: int) -> dict[str, object]:
    server = EtcdServer()
    server.start()
    client = await EtcdClient.connect([server.endpoint])
    keys = Keys("/bench/")
    try:
        seen: dict[str, float] = {}
        done = asyncio.Event()

        def published(unit: str, machine: str) -> None:
            seen.setdefault(unit, time.perf_counter())
            if len(seen) == units:
                done.set()

        agents = [
            SimulatedAgent(
                client, keys, f"{i:032x}", {"role": "bench"}, ttl=30, on_published=published
            )
            for i in range(machines)
        ]
        for agent in agents:
            await agent.register()
        engine = Engine(client, keys, "e" * 32, reconcile_interval=2.0)
        tasks = [asyncio.create_task(a.run()) for a in agents]
        tasks.append(asyncio.create_task(engine.run()))
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
        await asyncio.wait_for(done.wait(), timeout=600)
        elapsed = time.perf_counter() - started
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        kvs, end_revision = await client.get_prefix(keys.prefix)
        writes = sum(kv.version for kv in kvs if not kv.key.startswith(keys.machines))
        latencies = sorted((seen[u] - submitted[u]) * 1000 for u in submitted)
        delivered = sum(a.published for a in agents)
        for agent in agents:
            await agent.stop()
        return {
            "units": units,
            "machines": machines,
            "burst": burst,
            "seconds": round(elapsed, 2),
            "units_per_s": round(units / elapsed),
            "running_latency_ms": {
                "p50": round(statistics.median(latencies), 1),
                "p99": round(latencies[int(len(latencies) * 0.99) - 1], 1),
                "max": round(latencies[-1], 1),
            },
            "key_writes_per_unit": round(writes / units, 2),
            "txns": end_revision - start_revision,
            "placements_delivered": delivered,
            "extra_wakeups": delivered - units,
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
