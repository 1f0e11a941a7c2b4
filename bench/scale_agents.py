"""The scale benchmark's machines: `--count` real agents on the fake systemd in one process.

Each machine is a `devtools.fakehost.FakeHost` (the real `agent.agent.Agent` on a
`FakeUnitManager`) with its own id (`--first` + n, as 32 hex digits) and its own units directory
under `--dir`; all of them share one etcd client, as the agents of one rack would share a
network. They are started `--start-batch` at a time, each batch once the previous one is
registered and has read its schedule, so thousands of machines do not all grant a lease at once.

Replies (see `bench.scale_proc`): `ready` once every machine is, or `--ready-within` has passed
(with how many are and how long it took; the others keep trying), then
`stats`/`stop` with what the agents did: states published, reconcile passes, units running in
their fake systemd.

    python -m bench.scale_agents --etcd URL --prefix /p/ --first 0 --count 250 --dir DIR
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path

from bench.logs import warnings_only
from bench.scale_proc import Reply, rss_kib, say, serve_commands
from devtools.fakehost import FakeHost
from fleetd.registry.client import EtcdClient
from fleetd.registry.keys import Keys


def figures(hosts: list[FakeHost]) -> Reply:
    running = 0
    for host in hosts:
        for unit in host.manager.systemd.units.values():
            running += (unit.active_state, unit.sub_state) == ("active", "running")
    rss, peak = rss_kib(os.getpid())
    return {
        "machines": len(hosts),
        "state_writes": sum(host.agent.publisher.writes for host in hosts),
        "agent_passes": sum(host.agent.loop.passes for host in hosts),
        "failed_passes": sum(host.agent.loop.failures for host in hosts),
        "units_running": running,
        "rss_kib": rss,
        "peak_rss_kib": peak,
    }


async def run(args: argparse.Namespace) -> None:
    keys = Keys(args.prefix)
    client = await EtcdClient.connect([args.etcd], timeout=args.etcd_timeout)
    root = Path(args.dir)
    hosts = [
        FakeHost(
            client,
            keys,
            f"{index:032x}",
            root / f"{index:032x}",
            metadata={"role": "bench"},
            ttl=args.ttl,
        )
        for index in range(args.first, args.first + args.count)
    ]
    started = time.monotonic()
    try:
        try:
            async with asyncio.timeout(args.ready_within):
                for first in range(0, len(hosts), args.start_batch):
                    batch = hosts[first : first + args.start_batch]
                    await asyncio.gather(*(host.ready() for host in batch))
        except TimeoutError:
            for host in hosts:
                host.start()  # the rest join when they can; the driver counts who did
        ready = sum(1 for host in hosts if host.agent.schedule is not None)
        seconds = round(time.monotonic() - started, 2)
        say({"ready": ready == len(hosts), "machines_ready": ready, "seconds": seconds})
        await serve_commands(lambda: figures(hosts), lambda: figures(hosts))
    finally:
        await asyncio.gather(*(host.stop() for host in hosts), return_exceptions=True)
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--etcd", required=True, help="etcd URL")
    parser.add_argument("--prefix", required=True, help="etcd key prefix")
    parser.add_argument("--first", type=int, required=True, help="index of the first machine")
    parser.add_argument("--count", type=int, required=True, help="machines in this process")
    parser.add_argument("--dir", required=True, help="where the machines' units directories go")
    parser.add_argument("--ttl", type=int, default=10, help="each machine's lease TTL, seconds")
    parser.add_argument("--start-batch", type=int, default=50)
    parser.add_argument("--ready-within", type=float, default=300.0)
    parser.add_argument("--etcd-timeout", type=float, default=5.0)
    args = parser.parse_args()
    warnings_only()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
