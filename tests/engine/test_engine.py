"""The engine against a real etcd: placement, stored reasons, election, fencing, failover."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from prometheus_client import Counter, Gauge

from devtools.etcd_server import EtcdServer
from fleetd.core.engine_plan import plan_engine_full
from fleetd.core.engine_tasks import Schedule
from fleetd.core.states import JobState
from fleetd.engine.engine import Engine, leader_ttl
from fleetd.engine.executor import Deposed, apply_engine_tasks
from fleetd.registry.client import EtcdClient
from fleetd.registry.codec import decode_leader, decode_placement, encode_metadata_value
from fleetd.registry.keys import Keys
from fleetd.registry.watch import Changes, PrefixWatcher
from fleetd.runtime.metrics import Metrics
from tests.engine.cluster import (
    add_machine,
    placements,
    running,
    stored_reasons,
    submit,
    wait_until,
)

WEB, DB1, DB2 = "a" * 32, "b" * 32, "c" * 32


async def _leader(client: EtcdClient, keys: Keys) -> str | None:
    kv = await client.get(keys.leader)
    return None if kv is None else decode_leader(kv.key, kv.value).machine_id


async def test_engine_places_units_as_their_requirements_say(etcd: EtcdClient, keys: Keys) -> None:
    leases = [
        await add_machine(etcd, keys, WEB, role="web"),
        await add_machine(etcd, keys, DB1, role="db"),
        await add_machine(etcd, keys, DB2, role="db"),
    ]
    engine = Engine(etcd, keys, WEB, reconcile_interval=0.5)
    async with running(engine):
        await submit(etcd, keys, "hello.service")
        await submit(etcd, keys, "pong.service", "MachineOf=hello.service")
        await submit(etcd, keys, "db.service", "MachineMetadata=role=db")
        await submit(etcd, keys, "web.service", "MachineMetadata=role=web")
        await submit(etcd, keys, "global.service", "Global=true")
        await submit(etcd, keys, "c1.service", "Conflicts=c*.service")
        await submit(etcd, keys, "c2.service", "Conflicts=c*.service")
        await submit(etcd, keys, "pinned.service", f"MachineID={DB2[:8]}")
        await submit(etcd, keys, "idle.service", desired="inactive")

        async def all_placed() -> dict[str, set[str]]:
            found = await placements(etcd, keys)
            return found if len(found) == 8 else {}

        found = await wait_until(all_placed, "eight units placed")
    assert found["global.service"] == {WEB, DB1, DB2}
    assert found["pong.service"] == found["hello.service"]
    assert found["db.service"] <= {DB1, DB2}
    assert found["web.service"] == {WEB}
    assert found["pinned.service"] == {DB2}
    assert found["c1.service"] != found["c2.service"]
    assert "idle.service" not in found
    kv = await etcd.get(keys.placement(DB2, "pinned.service"))
    assert kv is not None
    placement = decode_placement(kv.key, kv.value, DB2, "pinned.service")
    assert placement.desired is JobState.LAUNCHED
    for lease in leases:
        await lease.revoke()


async def test_unplaceable_unit_keeps_its_reasons_until_it_fits(
    etcd: EtcdClient, keys: Keys
) -> None:
    web = await add_machine(etcd, keys, WEB, role="web")
    metrics = Metrics()
    engine = Engine(etcd, keys, WEB, reconcile_interval=0.5, metrics=metrics)
    async with running(engine):
        await submit(etcd, keys, "db.service", "MachineMetadata=role=db")
        reasons = await wait_until(
            lambda: stored_reasons(etcd, keys, "db.service"), "reasons stored for db.service"
        )
        assert reasons == ("no machine has metadata role=db",)
        assert await placements(etcd, keys) == {}
        await wait_until(unplaceable_counted(metrics, 1), "one unplaceable unit counted")
        assert gauge(metrics.engine_leader) == 1

        db = await add_machine(etcd, keys, DB1, role="db")

        async def moved() -> bool:
            placed = await placements(etcd, keys)
            gone = await stored_reasons(etcd, keys, "db.service") is None
            return placed.get("db.service") == {DB1} and gone

        await wait_until(moved, "db.service placed on the db machine, reasons cleared")
        await wait_until(unplaceable_counted(metrics, 0), "no unplaceable unit counted")
    assert gauge(metrics.engine_leader) == 0  # stopped leading
    tasks = metrics.engine_tasks
    assert count(tasks.labels("mark_unplaceable")) == 1
    assert count(tasks.labels("clear_unplaceable")) == 1
    assert count(tasks.labels("schedule")) == count(metrics.engine_placements) == 1
    passes = metrics.engine_passes
    assert count(passes.labels("full")) + count(passes.labels("delta")) >= 2
    await web.revoke()
    await db.revoke()


def gauge(instrument: Gauge) -> float:
    return float(instrument._value.get())


def count(instrument: Counter) -> float:
    return float(instrument._value.get())


def unplaceable_counted(metrics: Metrics, units: int) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return gauge(metrics.engine_unplaceable_units) == units

    return probe


async def test_units_move_when_their_machine_lease_expires(etcd: EtcdClient, keys: Keys) -> None:
    doomed = await add_machine(etcd, keys, WEB, ttl=3, keep_alive=False)
    engine = Engine(etcd, keys, DB1, reconcile_interval=0.5)
    async with running(engine):
        await submit(etcd, keys, "a.service")
        await submit(etcd, keys, "b.service", "MachineOf=a.service")
        await submit(etcd, keys, "pin.service", f"MachineID={WEB}")

        async def on_web() -> bool:
            found = await placements(etcd, keys)
            return all(found.get(u) == {WEB} for u in ("a.service", "b.service", "pin.service"))

        await wait_until(on_web, "units placed on the short-lived machine", within=2.5)
        survivor = await add_machine(etcd, keys, DB1)

        async def moved() -> dict[str, set[str]]:
            found = await placements(etcd, keys)
            ok = found.get("a.service") == {DB1} and found.get("b.service") == {DB1}
            return found if ok else {}

        found = await wait_until(moved, "units moved after the lease expired", within=10)
        assert "pin.service" not in found
        reasons = await stored_reasons(etcd, keys, "pin.service")
        assert reasons == (f"no machine has id {WEB}",)
    await survivor.revoke()
    assert not doomed.alive


async def test_only_the_leader_writes(etcd: EtcdClient, keys: Keys) -> None:
    lease = await add_machine(etcd, keys, WEB)
    first = Engine(etcd, keys, DB1, reconcile_interval=0.5)
    second = Engine(etcd, keys, DB2, reconcile_interval=0.5)
    async with running(first), running(second):
        leader = await wait_until(lambda: _leader(etcd, keys), "an engine leads")
        for i in range(20):
            await submit(etcd, keys, f"u{i}.service")

        async def placed() -> bool:
            return len(await placements(etcd, keys)) == 20

        await wait_until(placed, "20 units placed")
        engines = {DB1: first, DB2: second}
        assert leader in engines
        follower = engines[DB2 if leader == DB1 else DB1]
        assert engines[leader].is_leader
        assert not follower.is_leader
        assert engines[leader].passes_with_writes > 0
        assert follower.passes_with_writes == 0
    await lease.revoke()


async def test_only_the_leader_mirrors_the_cluster(etcd: EtcdClient, keys: Keys) -> None:
    lease = await add_machine(etcd, keys, WEB)
    for i in range(5):
        await submit(etcd, keys, f"u{i}.service")
    first = Engine(etcd, keys, DB1, reconcile_interval=0.5)
    standby = Engine(etcd, keys, DB2, reconcile_interval=0.5)
    first_run = asyncio.create_task(first.run())
    try:
        await wait_until(lambda: asyncio.sleep(0, first.is_leader), "the first engine to lead")
        async with running(standby):
            await submit(etcd, keys, "late.service")
            await wait_until(
                lambda: asyncio.sleep(0, "late.service" in first.view.units), "the leader sees it"
            )
            # the standby campaigns, but decodes nothing of the cluster meanwhile
            assert not standby.view.ready
            assert (standby.view.units, standby.view.schedule) == ({}, {})
            old = first.term
            assert old is not None
            await etcd.lease_revoke(old.lease.id)  # the first engine's term ends...
            await wait_until(
                lambda: asyncio.sleep(0, first.term is not old), "the first engine's term to end"
            )
            first_run.cancel()  # ...and it stops campaigning
            await asyncio.gather(first_run, return_exceptions=True)
            assert not first.view.ready, "a term's view is dropped"
            assert first.view.units == {}
            await wait_until(lambda: asyncio.sleep(0, standby.is_leader), "the standby to lead")
            await wait_until(
                lambda: asyncio.sleep(0, len(standby.view.units) == 6), "the new leader's view"
            )
    finally:
        first_run.cancel()
        await asyncio.gather(first_run, return_exceptions=True)
    await lease.revoke()


async def test_another_engine_takes_over_when_the_leader_stops(
    etcd: EtcdClient, keys: Keys
) -> None:
    lease = await add_machine(etcd, keys, WEB)
    first = Engine(etcd, keys, DB1, reconcile_interval=0.5)
    second = Engine(etcd, keys, DB2, reconcile_interval=0.5)
    async with running(second):
        async with running(first):
            await wait_until(lambda: _leader(etcd, keys), "an engine leads")
            await wait_until(
                lambda: asyncio.sleep(0, first.is_leader or second.is_leader), "a leader in process"
            )

        # first is stopped now; if it led, its lease was revoked and second must take over
        async def second_leads() -> bool:
            return await _leader(etcd, keys) == DB2

        await wait_until(second_leads, "the second engine to lead")
        await submit(etcd, keys, "late.service")

        async def placed() -> bool:
            return (await placements(etcd, keys)).get("late.service") == {WEB}

        await wait_until(placed, "the new leader to place late.service")
    await lease.revoke()


async def test_a_deposed_leader_cannot_write(etcd: EtcdClient, keys: Keys) -> None:
    engine = Engine(etcd, keys, DB1, reconcile_interval=0.5)
    async with running(engine):
        await wait_until(lambda: asyncio.sleep(0, engine.term), "the engine to lead")
        old = engine.term
        assert old is not None
        await etcd.lease_revoke(old.lease.id)  # as if the lease had expired

        async def new_term() -> bool:
            kv = await etcd.get(keys.leader)
            return kv is not None and kv.create_revision != old.revision

        await wait_until(new_term, "a new leader term")
        task = Schedule("x.service", WEB, "0" * 40, JobState.LAUNCHED, "test")
        with pytest.raises(Deposed):
            await apply_engine_tasks(etcd, keys, old.fence(), [task])
        assert await etcd.get(keys.placement(WEB, "x.service")) is None


async def test_engine_rides_out_an_etcd_restart(private_etcd: EtcdServer, key_prefix: str) -> None:
    keys = Keys(key_prefix)
    client = await EtcdClient.connect([private_etcd.endpoint], timeout=2.0)
    try:
        lease = await add_machine(client, keys, WEB, ttl=30)
        engine = Engine(client, keys, DB1, reconcile_interval=0.5, ttl=30)
        async with running(engine) as task:
            await submit(client, keys, "before.service")
            await wait_until(
                lambda: _placed(client, keys, "before.service"), "before.service placed"
            )
            private_etcd.restart()

            async def submitted() -> bool:
                try:
                    await submit(client, keys, "after.service")
                except Exception:
                    return False
                return True

            await wait_until(submitted, "etcd to take writes again")
            await wait_until(lambda: _placed(client, keys, "after.service"), "after.service placed")
            assert not task.done()
        await lease.revoke()
    finally:
        await client.close()


async def _placed(client: EtcdClient, keys: Keys, unit: str) -> bool:
    try:
        return unit in await placements(client, keys)
    except Exception:
        return False


def test_leader_ttl_follows_fleet() -> None:
    assert leader_ttl(2.0) == 10
    assert leader_ttl(0.1) == 2


async def test_a_placement_wakes_only_the_chosen_machine(etcd: EtcdClient, keys: Keys) -> None:
    leases = [await add_machine(etcd, keys, WEB), await add_machine(etcd, keys, DB1)]
    seen_by_db1: list[str] = []
    sentinel = keys.placement(DB1, "sentinel.service")

    async def watch_db1() -> None:
        async for batch in PrefixWatcher(etcd, keys.schedule_of(DB1)):
            if isinstance(batch, Changes):
                seen_by_db1.extend(e.kv.key for e in batch.events)
                if sentinel in seen_by_db1:
                    return

    watcher = asyncio.create_task(watch_db1())
    engine = Engine(etcd, keys, WEB, reconcile_interval=0.5)
    async with running(engine):
        for i in range(5):
            await submit(etcd, keys, f"pinned{i}.service", f"MachineID={WEB}")

        async def all_on_web() -> bool:
            return len((await placements(etcd, keys)).get("pinned4.service", set())) == 1

        await wait_until(all_on_web, "five units placed on the web machine")
        # the watch delivers in revision order: once it has the sentinel written after the
        # placements, it has delivered everything that touched this machine before it
        await etcd.put(sentinel, b"{}")
        await asyncio.wait_for(watcher, timeout=10)
    assert seen_by_db1 == [sentinel]
    for lease in leases:
        await lease.revoke()


async def test_metadata_set_through_the_api_moves_units(etcd: EtcdClient, keys: Keys) -> None:
    lease = await add_machine(etcd, keys, WEB, role="web")
    engine = Engine(etcd, keys, WEB, reconcile_interval=0.5)
    async with running(engine):
        await submit(etcd, keys, "db.service", "MachineMetadata=role=db")
        await wait_until(
            lambda: stored_reasons(etcd, keys, "db.service"), "db.service to be unplaceable"
        )
        await etcd.put(keys.metadata_key(WEB, "role"), encode_metadata_value("db"))
        await wait_until(lambda: _placed(etcd, keys, "db.service"), "db.service placed")
        await etcd.put(keys.metadata_key(WEB, "role"), encode_metadata_value(""))  # removed

        async def unplaced() -> bool:
            return not await _placed(etcd, keys, "db.service")

        await wait_until(unplaced, "db.service unscheduled once role is removed")
        assert await stored_reasons(etcd, keys, "db.service") == (
            "no machine has metadata role=db",
        )
    await lease.revoke()


async def test_passes_after_the_first_plan_only_what_changed(etcd: EtcdClient, keys: Keys) -> None:
    leases = [await add_machine(etcd, keys, m) for m in (WEB, DB1, DB2)]
    engine = Engine(etcd, keys, WEB, reconcile_interval=0.5)
    async with running(engine):
        await submit(etcd, keys, "first.service")
        await wait_until(lambda: _placed_count(etcd, keys, 1), "the first unit placed", within=5)
        full = engine.full_passes
        for i in range(6):
            await submit(etcd, keys, f"more{i}.service")
        found = await wait_until(
            lambda: _placed_count(etcd, keys, 7), "six more units placed", within=5
        )
        await leases[2].revoke()  # DB2 leaves: its units move in an incremental pass too

        async def off_db2() -> dict[str, set[str]]:
            now = await placements(etcd, keys)
            return now if len(now) == 7 and all(DB2 not in m for m in now.values()) else {}

        await wait_until(off_db2, "DB2's units placed again", within=5)
    assert any(DB2 in machines for machines in found.values())
    assert engine.full_passes == full, "an incremental pass fell back to a full plan"
    assert engine.delta_passes >= 2
    for lease in leases[:2]:
        await lease.revoke()


async def _placed_count(etcd: EtcdClient, keys: Keys, count: int) -> dict[str, set[str]]:
    found = await placements(etcd, keys)
    return found if len(found) == count else {}


async def test_a_full_plan_off_the_event_loop_places_the_same_way(
    etcd: EtcdClient, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large cluster's full plan runs in a worker thread, never on the event loop that also
    carries the API and the lease keep-alives; it places as a plan on the loop would."""
    monkeypatch.setattr("fleetd.engine.engine.FULL_PLAN_IN_THREAD", 0)
    planned_in: list[int] = []

    def recorded(*args: Any, **kwargs: Any) -> Any:
        planned_in.append(threading.get_ident())
        return plan_engine_full(*args, **kwargs)

    monkeypatch.setattr("fleetd.engine.engine.plan_engine_full", recorded)
    for i in range(4):
        await submit(etcd, keys, f"early{i}.service")
    leases = [await add_machine(etcd, keys, m) for m in (WEB, DB1)]
    engine = Engine(etcd, keys, WEB, reconcile_interval=0.5)
    async with running(engine):
        found = await wait_until(
            lambda: _placed_count(etcd, keys, 4), "units placed by a threaded plan", within=5
        )
    assert engine.full_passes >= 1
    assert planned_in
    assert threading.get_ident() not in planned_in  # the loop's thread never planned in full
    assert sorted(len([u for u, m in found.items() if m == {x}]) for x in (WEB, DB1)) == [2, 2]
    for lease in leases:
        await lease.revoke()
