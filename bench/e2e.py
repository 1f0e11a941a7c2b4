"""End to end on a real etcd: submission -> engine placement -> the agent starts the unit.

Starts an etcd (data on tmpfs), runs the real `Engine` in this process, and `--machines` real
agents on the fake systemd (`devtools.fakehost.FakeHost`, sharing one etcd channel): each
registers `machines/<id>` on its lease, watches only `schedule/<id>/`, writes the unit file into
its own units directory, starts it in the in-memory systemd and publishes `states/<id>/<unit>`.
Then it submits `--units` units, in concurrent bursts, and measures:

* `units_per_s`: units from the first submission until every unit is seen running;
* `running_latency_ms`: submission -> the unit's state is published `active`/`running` (p50,
  p99, max), as a client watching `states/` sees it (`bench.running`);
* `key_writes_per_unit`: every write to every key the run made (sum of etcd key versions under
  the prefix, machine records excluded), divided by the number of units; the design allows 3;
* `txns`: etcd revisions used (one per put or transaction);
* `state_writes`: states the agents' publishers wrote (one per unit when nothing is written twice);
* `agent_passes`: reconcile passes the agents ran after they were ready (a pass handles every
  change that came before it, so a burst is fewer passes than units).

    PYTHONPATH=. .venv/bin/python -m bench.e2e --units 2000 --machines 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench.logs import warnings_only
from bench.running import RunningWatch
from devtools.etcd_server import EtcdServer
from devtools.fakehost import FakeHost
from fleetd.core.states import JobState
from fleetd.core.unitfile import parse_unit
from fleetd.engine.engine import Engine
from fleetd.registry.client import EtcdClient
from fleetd.registry.keys import Keys
from fleetd.registry.units import put_unit

UNIT_TEXT = "[Unit]\nDescription=bench {n}\n\n[Service]\nExecStart=/bin/sleep infinity\n"
READY_WITHIN = 60.0
RUNNING_WITHIN = 600.0


async def run(units: int, machines: int, burst: int) -> dict[str, object]:
    server = EtcdServer()
    server.start()
    workdir = Path(tempfile.mkdtemp(prefix="pyfleet-e2e-", dir=server.workdir))
    client = await EtcdClient.connect([server.endpoint])
    keys = Keys("/bench/")
    hosts = [
        FakeHost(
            client, keys, f"{i:032x}", workdir / f"{i:032x}", metadata={"role": "bench"}, ttl=30
        )
        for i in range(machines)
    ]
    watch = RunningWatch(client, keys)
    tasks = [asyncio.create_task(watch.run())]
    try:
        async with asyncio.timeout(READY_WITHIN):
            await asyncio.gather(*(host.ready() for host in hosts))
        engine = Engine(client, keys, "e" * 32, reconcile_interval=2.0)
        tasks.append(asyncio.create_task(engine.run()))
        await asyncio.wait_for(engine.leading.wait(), timeout=30)
        _, start_revision = await client.get_prefix(keys.leader)
        passes_before = [host.agent.loop.passes for host in hosts]
        submitted: dict[str, float] = {}
        parsed = [parse_unit(UNIT_TEXT.format(n=i)) for i in range(units)]
        started = time.perf_counter()
        for first in range(0, units, burst):
            names = [f"u{i}.service" for i in range(first, min(units, first + burst))]
            for name in names:
                submitted[name] = time.monotonic()
            await asyncio.gather(
                *(put_unit(client, keys, n, parsed[int(n[1:-8])], JobState.LAUNCHED) for n in names)
            )
        async with asyncio.timeout(RUNNING_WITHIN):
            await watch.wait_for(lambda: len(watch.first_running) >= units)
        elapsed = time.perf_counter() - started
        kvs, end_revision = await client.get_prefix(keys.prefix)
        writes = sum(kv.version for kv in kvs if not kv.key.startswith(keys.machines))
        latencies = sorted((watch.first_running[u] - submitted[u]) * 1000 for u in submitted)
        passes = [
            host.agent.loop.passes - before
            for host, before in zip(hosts, passes_before, strict=True)
        ]
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
            "state_writes": sum(host.agent.publisher.writes for host in hosts),
            "agent_passes": sum(passes),
        }
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for host in hosts:
            await host.leave()
        await client.close()
        shutil.rmtree(workdir, ignore_errors=True)
        server.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=2000)
    parser.add_argument("--machines", type=int, default=50)
    parser.add_argument("--burst", type=int, default=100, help="units submitted concurrently")
    args = parser.parse_args()
    warnings_only()
    result = asyncio.run(run(args.units, args.machines, args.burst))
    out = Path(__file__).parent / "results" / "e2e.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
