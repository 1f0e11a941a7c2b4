"""The scale benchmark's fleetd: the real engine and the real v1 API in one process, as `fleetd
--disable-agent` runs them, with the engine's passes timed.

The components are wired as `fleetd.wiring.serve` wires them (one etcd client, `Engine` and
`serve_api` under `run_components`), with the API on a unix socket. `TimedEngine` is the real
`Engine`; it only records, for every reconcile pass, when it started, how long it took and
whether it planned in full, incrementally or not at all (nothing had changed).

Replies (see `bench.scale_proc`): `stats` and `stop` give the engine's counters and the passes
timed since the previous reply.

    python -m bench.scale_fleetd --etcd URL --prefix /p/ --socket PATH [--page-size N] ...
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench.logs import warnings_only
from bench.scale_proc import Reply, say, serve_commands
from fleetd.api.listeners import serve_api
from fleetd.config import Config
from fleetd.engine.engine import Engine
from fleetd.engine.leader import Term
from fleetd.registry.client import EtcdClient
from fleetd.registry.keys import Keys
from fleetd.runtime.supervise import run_components
from fleetd.wiring import MIN_DEPARTURE_GRACE

ENGINE_MACHINE = "e" * 32


class TimedEngine(Engine):
    """The real engine; each pass is recorded as (start, seconds, "full" | "delta" | "none")."""

    def __init__(self, client: EtcdClient, keys: Keys, machine_id: str, **options: Any) -> None:
        super().__init__(client, keys, machine_id, **options)
        self.timed: list[tuple[float, float, str]] = []

    async def _pass(self, term: Term) -> None:
        full, delta = self.full_passes, self.delta_passes
        started = time.monotonic()
        try:
            await super()._pass(term)
        finally:
            kind = (
                "full"
                if self.full_passes > full
                else "delta"
                if self.delta_passes > delta
                else "none"
            )
            self.timed.append((started, time.monotonic() - started, kind))


def engine_figures(engine: TimedEngine) -> Reply:
    timed, engine.timed = engine.timed, []
    return {
        "leading": engine.is_leader,
        "full_passes": engine.full_passes,
        "delta_passes": engine.delta_passes,
        "passes_with_writes": engine.passes_with_writes,
        "passes": [[round(t, 4), round(s * 1000, 2), k] for t, s, k in timed],
    }


async def run(args: argparse.Namespace) -> None:
    keys = Keys(args.prefix)
    config = Config(
        etcd_servers=(args.etcd,),
        etcd_key_prefix=keys.prefix,
        listen=(args.socket,),
        token_limit=args.page_size,
        engine_reconcile_interval=args.engine_interval,
        agent_ttl=args.ttl,
        disable_agent=True,
    )
    client = await EtcdClient.connect(config.etcd_servers, timeout=config.etcd_request_timeout)
    engine = TimedEngine(
        client,
        keys,
        ENGINE_MACHINE,
        reconcile_interval=config.engine_reconcile_interval,
        departure_grace=max(config.agent_ttl, MIN_DEPARTURE_GRACE),
    )
    components: dict[str, Callable[[], Awaitable[None]]] = {
        "engine": engine.run,
        "api": functools.partial(serve_api, config, client, keys, shutdown_timeout=2.0),
    }
    stop = asyncio.Event()
    running = asyncio.create_task(run_components(components, stop=stop, shutdown_timeout=4.0))
    try:
        leading = asyncio.create_task(engine.leading.wait())
        await asyncio.wait([running, leading], return_when=asyncio.FIRST_COMPLETED)
        leading.cancel()
        if not running.done():
            say({"ready": True})
            figures = functools.partial(engine_figures, engine)
            commands = asyncio.create_task(serve_commands(figures, figures))
            await asyncio.wait([running, commands], return_when=asyncio.FIRST_COMPLETED)
            commands.cancel()
        if running.done():
            running.result()  # a component failed: raise why
            raise RuntimeError("fleetd's components stopped by themselves")
    finally:
        stop.set()
        await asyncio.gather(running, return_exceptions=True)
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--etcd", required=True, help="etcd URL")
    parser.add_argument("--prefix", required=True, help="etcd key prefix")
    parser.add_argument("--socket", required=True, help="the API's unix socket path")
    parser.add_argument("--page-size", type=int, default=100, help="the API's token_limit")
    parser.add_argument("--engine-interval", type=float, default=2.0)
    parser.add_argument("--ttl", type=float, default=10.0, help="the agents' lease TTL")
    args = parser.parse_args()
    warnings_only()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
