"""`bench.running.RunningWatch`, the benchmarks' measure of "running", on a real etcd: a unit runs
where its published state says `active`/`running`, and only there."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from bench.running import RunningWatch
from fleetd.registry.client import EtcdClient
from fleetd.registry.codec import UnitStateRecord, encode_state
from fleetd.registry.keys import Keys
from tests.agent.helpers import MACHINE, OTHER, background

WAIT_WITHIN = 10.0


def state(active: str, sub: str) -> bytes:
    return encode_state(UnitStateRecord("loaded", active, sub, "0" * 40))


@contextlib.asynccontextmanager
async def watching(etcd: EtcdClient, keys: Keys) -> AsyncIterator[RunningWatch]:
    watch = RunningWatch(etcd, keys)
    async with background(watch.run()):
        yield watch


async def until(watch: RunningWatch, condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT_WITHIN):
        await watch.wait_for(condition)


async def test_running_is_active_running_where_it_is_published(
    etcd: EtcdClient, key_prefix: str
) -> None:
    keys = Keys(key_prefix)
    await etcd.put(keys.state(MACHINE, "before.service"), state("active", "running"))
    await etcd.put(keys.state(MACHINE, "loaded.service"), state("inactive", "dead"))
    async with watching(etcd, keys) as watch:
        await until(watch, lambda: "before.service" in watch.running)
        assert set(watch.running) == {"before.service"}
        assert set(watch.running["before.service"]) == {MACHINE}

        await etcd.put(keys.state(OTHER, "web.service"), state("activating", "start"))
        await etcd.put(keys.state(OTHER, "web.service"), state("active", "running"))
        await until(watch, lambda: "web.service" in watch.running)
        first = watch.first_running["web.service"]
        assert set(watch.running["web.service"]) == {OTHER}

        await etcd.put(keys.state(OTHER, "web.service"), state("failed", "failed"))
        await until(watch, lambda: "web.service" not in watch.running)
        await etcd.put(keys.state(MACHINE, "web.service"), state("active", "running"))
        await until(watch, lambda: "web.service" in watch.running)
        assert set(watch.running["web.service"]) == {MACHINE}
        assert watch.first_running["web.service"] == first  # the first time stays the first

        await etcd.delete(keys.state(MACHINE, "before.service"))
        await until(watch, lambda: "before.service" not in watch.running)
        assert "before.service" in watch.first_running
        assert "loaded.service" not in watch.first_running


async def test_machines_come_and_go(etcd: EtcdClient, key_prefix: str) -> None:
    keys = Keys(key_prefix)
    await etcd.put(keys.machine(MACHINE), b"{}")
    async with watching(etcd, keys) as watch:
        await until(watch, lambda: watch.machines == {MACHINE})
        await etcd.put(keys.machine(OTHER), b"{}")
        await until(watch, lambda: watch.machines == {MACHINE, OTHER})
        assert watch.machine_gone == {}
        await etcd.delete(keys.machine(MACHINE))
        await until(watch, lambda: watch.machines == {OTHER})
        assert set(watch.machine_gone) == {MACHINE}
