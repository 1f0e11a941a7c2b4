"""The API's view against a real etcd: what it holds, its indexes, its sorted keys."""

from __future__ import annotations

import asyncio

import structlog
from hypothesis import given
from hypothesis import strategies as st

from fleetd.api.view import ApiView, SortedKeys
from fleetd.core.model import Machine
from fleetd.core.states import JobState
from fleetd.registry.client import EtcdClient
from fleetd.registry.codec import encode_metadata_value
from fleetd.registry.keys import Keys
from tests.api.helpers import (
    M1,
    M2,
    options,
    place,
    publish_state,
    remove,
    seen,
    store_machine,
    store_reasons,
    store_unit,
)


async def test_units_and_global_units(etcd: EtcdClient, keys: Keys, view: ApiView) -> None:
    plain = await store_unit(etcd, keys, view, "b.service")
    xfleet = ("X-Fleet", "Global", "true")
    await store_unit(etcd, keys, view, "a.service", options(("Service", "ExecStart", "/x"), xfleet))
    assert view.units["b.service"] == plain
    assert view.global_units == {"a.service"}
    assert view.unit_names() == ["a.service", "b.service"]
    not_global = options(("Service", "ExecStart", "/x"), ("X-Fleet", "Global", "false"))
    await store_unit(etcd, keys, view, "a.service", not_global)
    assert view.global_units == set()
    await seen(view, keys.units, await etcd.put(keys.unit("c.service"), b"{broken"))
    assert "c.service" not in view.units
    assert view.unit_names() == ["a.service", "b.service"]
    await remove(etcd, view, keys.units, keys.unit("a.service"))
    assert view.unit_names() == ["b.service"]
    assert "a.service" not in view.units


async def test_a_unit_is_held_with_its_mod_revision(
    etcd: EtcdClient, keys: Keys, view: ApiView
) -> None:
    absent = view.unit_at("a.service")
    assert (absent.record, absent.mod_revision) == (None, 0)
    assert absent.observed_at == view.revision(keys.units)
    record = await store_unit(etcd, keys, view, "a.service")
    kv = await etcd.get(keys.unit("a.service"))
    assert kv is not None
    held = view.unit_at("a.service")
    assert (held.record, held.mod_revision) == (record, kv.mod_revision)
    assert held.observed_at >= kv.mod_revision
    await seen(view, keys.units, await etcd.put(keys.unit("a.service"), b"{broken"))
    assert view.unit_at("a.service").mod_revision == kv.mod_revision  # the last good one
    await remove(etcd, view, keys.units, keys.unit("a.service"))
    assert view.unit_at("a.service").mod_revision == 0


async def test_placements_are_indexed_both_ways(
    etcd: EtcdClient, keys: Keys, view: ApiView
) -> None:
    hello = await store_unit(etcd, keys, view, "hello.service")
    await place(etcd, keys, view, hello, M1)
    await place(etcd, keys, view, hello, M2)
    assert set(view.placements["hello.service"]) == {M1, M2}
    assert view.schedule[M1]["hello.service"] is view.placements["hello.service"][M1]
    await remove(etcd, view, keys.schedule, keys.placement(M1, "hello.service"))
    assert set(view.placements["hello.service"]) == {M2}
    assert M1 not in view.schedule
    await remove(etcd, view, keys.schedule, keys.placement(M2, "hello.service"))
    assert view.placements == {}
    assert view.schedule == {}


async def test_states_are_kept_per_unit_and_sorted(
    etcd: EtcdClient, keys: Keys, view: ApiView
) -> None:
    await publish_state(etcd, keys, view, "b.service", M1)
    await publish_state(etcd, keys, view, "a.service", M2)
    state = await publish_state(etcd, keys, view, "a.service", M1, active="inactive")
    assert view.states["a.service"][M1] == state
    assert view.state_keys() == [("a.service", M1), ("a.service", M2), ("b.service", M1)]
    await remove(etcd, view, keys.states, keys.state(M1, "a.service"))
    assert view.state_keys() == [("a.service", M2), ("b.service", M1)]
    assert set(view.states["a.service"]) == {M2}


async def test_machines_are_merged_with_api_metadata(
    etcd: EtcdClient, keys: Keys, view: ApiView
) -> None:
    await store_machine(etcd, keys, view, Machine(M1, {"az": "a", "role": "db"}, "10.0.0.1"))
    await etcd.put(keys.metadata_key(M1, "role"), encode_metadata_value(""))
    revision = await etcd.put(keys.metadata_key(M1, "disk"), encode_metadata_value("ssd"))
    await seen(view, keys.metadata, revision)
    assert view.machines[M1] == Machine(M1, {"az": "a", "disk": "ssd"}, "10.0.0.1")


async def test_unplaceable_reasons(etcd: EtcdClient, keys: Keys, view: ApiView) -> None:
    await store_reasons(etcd, keys, view, "db.service", ("no machine has metadata role=db",))
    assert view.unplaceable == {"db.service": ("no machine has metadata role=db",)}


async def test_a_view_started_late_reads_everything(
    etcd: EtcdClient, keys: Keys, view: ApiView
) -> None:
    hello = await store_unit(etcd, keys, view, "hello.service", desired=JobState.LOADED)
    await place(etcd, keys, view, hello, M1)
    await publish_state(etcd, keys, view, "hello.service", M1)
    late = ApiView(etcd, keys)
    task = asyncio.create_task(late.run())
    try:
        with structlog.testing.capture_logs():
            await asyncio.wait_for(late.wait_ready(), 10)
        assert late.units == view.units
        assert late.placements == view.placements
        assert late.states == view.states
        assert late.unit_names() == ["hello.service"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 30)), max_size=80))
def test_sorted_keys_match_sorting_the_map(steps: list[tuple[bool, int]]) -> None:
    order: SortedKeys[int] = SortedKeys()
    present: set[int] = set()
    for index, (add, key) in enumerate(steps):
        if add and key not in present:
            present.add(key)
            order.add(key)
        elif not add:
            present.discard(key)
            order.discard(key)
        if index % 3 == 0:
            assert order.sorted() == sorted(present)
    assert order.sorted() == sorted(present)
    order.clear()
    assert order.sorted() == []
