"""Fenced, batched writes of engine tasks against a real etcd."""

from __future__ import annotations

import pytest
import structlog

from fleetd.core.engine_tasks import (
    ClearUnplaceable,
    EngineTask,
    MarkUnplaceable,
    Schedule,
    Unschedule,
)
from fleetd.core.states import JobState
from fleetd.engine.executor import MAX_TXN_OPS, Deposed, apply_engine_tasks
from fleetd.registry.client import Compare, EtcdClient
from fleetd.registry.codec import decode_placement, decode_reasons
from fleetd.registry.keys import Keys

M1 = "1" * 32


async def _fence(etcd: EtcdClient, keys: Keys) -> Compare:
    revision = await etcd.put(keys.leader, b'{"machineID":"x"}')
    return Compare.create_revision(keys.leader, "==", revision)


async def test_tasks_are_written_in_batches_of_at_most_128(etcd: EtcdClient, keys: Keys) -> None:
    fence = await _fence(etcd, keys)
    tasks: list[EngineTask] = [
        Schedule(f"u{i}.service", M1, "0" * 40, JobState.LAUNCHED, "test") for i in range(300)
    ]
    tasks.append(MarkUnplaceable("nope.service", ("no machine has metadata role=db",)))
    _, before = await etcd.get_prefix(keys.prefix)
    with structlog.testing.capture_logs() as logs:
        written = await apply_engine_tasks(etcd, keys, fence, tasks)
    kvs, after = await etcd.get_prefix(keys.schedule)
    assert len(kvs) == 300
    assert after - before == 3  # 301 writes: ceil(301 / 128) transactions
    assert MAX_TXN_OPS == 128
    assert written == {keys.schedule: after, keys.unplaceable: after}
    placement = decode_placement(kvs[0].key, kvs[0].value, M1, "u0.service")
    assert placement.desired is JobState.LAUNCHED
    reasons = await etcd.get(keys.unplaceable_unit("nope.service"))
    assert reasons is not None
    assert decode_reasons(reasons.key, reasons.value) == ("no machine has metadata role=db",)
    assert {e["event"] for e in logs} == {"schedule", "markunplaceable"}
    assert all(e["reason"] for e in logs)


async def test_unschedule_and_clear_delete_their_keys(etcd: EtcdClient, keys: Keys) -> None:
    fence = await _fence(etcd, keys)
    await apply_engine_tasks(
        etcd,
        keys,
        fence,
        [
            Schedule("a.service", M1, "0" * 40, JobState.LOADED, "test"),
            MarkUnplaceable("b.service", ("x",)),
        ],
    )
    await apply_engine_tasks(
        etcd,
        keys,
        fence,
        [Unschedule("a.service", M1, "test"), ClearUnplaceable("b.service", "test")],
    )
    kvs, _ = await etcd.get_prefix(keys.prefix)
    assert [kv.key for kv in kvs] == [keys.leader]


async def test_a_failed_fence_writes_nothing(etcd: EtcdClient, keys: Keys) -> None:
    fence = await _fence(etcd, keys)
    await etcd.delete(keys.leader)
    await etcd.put(keys.leader, b'{"machineID":"someone else"}')  # a new term
    tasks = [Schedule(f"u{i}.service", M1, "0" * 40, JobState.LAUNCHED, "t") for i in range(5)]
    with pytest.raises(Deposed, match="another engine leads"):
        await apply_engine_tasks(etcd, keys, fence, tasks)
    kvs, _ = await etcd.get_prefix(keys.schedule)
    assert kvs == []
