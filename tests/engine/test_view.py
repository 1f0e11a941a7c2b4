"""The engine's watch-fed view against a real etcd: snapshot, live changes, bad records."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import structlog

from fleetd.core.model import Placement
from fleetd.core.states import JobState
from fleetd.engine.view import ClusterView
from fleetd.registry.client import EtcdClient
from fleetd.registry.codec import encode_placement, encode_reasons
from fleetd.registry.keys import Keys
from tests.engine.cluster import add_machine, submit, wait_until

M1 = "1" * 32


@pytest.fixture
async def view(etcd: EtcdClient, keys: Keys) -> AsyncIterator[tuple[ClusterView, list[int]]]:
    changes: list[int] = []
    cluster_view = ClusterView(etcd, keys, on_change=lambda: changes.append(1))
    task = asyncio.create_task(cluster_view.run())
    try:
        yield cluster_view, changes
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _ready(v: ClusterView) -> bool:
    await asyncio.sleep(0)
    return v.ready


async def test_the_view_starts_from_what_is_stored(etcd: EtcdClient, keys: Keys) -> None:
    lease = await add_machine(etcd, keys, M1, role="web")
    hello = await submit(etcd, keys, "hello.service")
    placed = Placement("hello.service", M1, hello.hash, JobState.LAUNCHED)
    await etcd.put(keys.placement(M1, "hello.service"), encode_placement(placed))
    await etcd.put(keys.unplaceable_unit("db.service"), encode_reasons(("no machine",)))
    cluster_view = ClusterView(etcd, keys)
    task = asyncio.create_task(cluster_view.run())
    try:
        await wait_until(lambda: _ready(cluster_view), "the view to be ready")
        snapshot = cluster_view.snapshot()
        assert snapshot.units["hello.service"].hash == hello.hash
        assert snapshot.machines[M1].metadata == {"role": "web"}
        assert snapshot.schedule == {M1: {"hello.service": placed}}
        assert snapshot.unplaceable == {"db.service": ("no machine",)}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await lease.revoke()


async def test_live_changes_reach_the_view_and_wake_the_engine(
    etcd: EtcdClient, keys: Keys, view: tuple[ClusterView, list[int]]
) -> None:
    cluster_view, changes = view
    await wait_until(lambda: _ready(cluster_view), "the view to be ready")
    before = len(changes)
    await submit(etcd, keys, "a.service", "MachineMetadata=role=db")
    await wait_until(
        lambda: asyncio.sleep(0, "a.service" in cluster_view.units), "a.service in the view"
    )
    assert cluster_view.units["a.service"].requirements.metadata == (("role", frozenset({"db"})),)
    assert len(changes) > before
    assert await etcd.delete(keys.unit("a.service")) == 1
    await wait_until(
        lambda: asyncio.sleep(0, "a.service" not in cluster_view.units), "a.service gone"
    )


async def test_wait_for_returns_once_a_write_came_back(
    etcd: EtcdClient, keys: Keys, view: tuple[ClusterView, list[int]]
) -> None:
    cluster_view, _ = view
    await wait_until(lambda: _ready(cluster_view), "the view to be ready")
    placed = Placement("x.service", M1, "0" * 40, JobState.LOADED)
    revision = await etcd.put(keys.placement(M1, "x.service"), encode_placement(placed))
    await asyncio.wait_for(cluster_view.wait_for({keys.schedule: revision}), timeout=10)
    assert cluster_view.schedule[M1]["x.service"] == placed
    assert cluster_view.revision(keys.schedule) >= revision


async def test_an_unreadable_record_is_skipped_and_logged(
    etcd: EtcdClient, keys: Keys, view: tuple[ClusterView, list[int]]
) -> None:
    cluster_view, _ = view
    await wait_until(lambda: _ready(cluster_view), "the view to be ready")
    good = await submit(etcd, keys, "a.service")
    await wait_until(lambda: asyncio.sleep(0, "a.service" in cluster_view.units), "a.service")
    with structlog.testing.capture_logs() as logs:
        revision = await etcd.put(keys.unit("a.service"), b"{not json")
        await etcd.put(keys.unit("b.service"), b'{"name": 3}')
        await submit(etcd, keys, "c.service")
        await wait_until(lambda: asyncio.sleep(0, "c.service" in cluster_view.units), "c.service")
    assert revision > 0
    assert cluster_view.units["a.service"].hash == good.hash  # the last good version stays
    assert "b.service" not in cluster_view.units
    errors = [e for e in logs if e["event"] == "skipping unreadable record"]
    assert {e["key"] for e in errors} == {keys.unit("a.service"), keys.unit("b.service")}
    assert "not valid JSON" in errors[0]["error"]
