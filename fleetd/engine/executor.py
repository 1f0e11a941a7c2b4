"""Apply the engine's planned tasks to etcd: fenced, batched transactions.

Each transaction carries up to `MAX_TXN_OPS` (etcd's limit of 128) writes and one guard, the
leader term's fence. A failed guard means this engine is no longer the leader: nothing of that
batch was written, and `Deposed` tells the engine to stop acting. Batches go in plan order and
the first failure stops the rest. Every task is logged with its reason.

The result maps each prefix written to the revision of the last transaction that wrote it, so
the engine can wait for its own writes to come back through its watches.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from fleetd.core.engine_tasks import (
    ClearUnplaceable,
    EngineTask,
    MarkUnplaceable,
    Schedule,
    Unschedule,
)
from fleetd.core.model import Placement
from fleetd.registry.client import Compare, Delete, EtcdClient, Put
from fleetd.registry.codec import encode_placement, encode_reasons
from fleetd.registry.keys import Keys

log = structlog.get_logger(__name__)

MAX_TXN_OPS = 128


class Deposed(Exception):
    """The leader fence failed: another engine leads now."""


def task_write(keys: Keys, task: EngineTask) -> tuple[str, Put | Delete]:
    """The prefix a task writes under, and the etcd write that performs it."""
    match task:
        case Schedule(unit, machine, hash_, desired, _):
            value = encode_placement(Placement(unit, machine, hash_, desired))
            return keys.schedule, Put(keys.placement(machine, unit), value)
        case Unschedule(unit, machine, _):
            return keys.schedule, Delete(keys.placement(machine, unit))
        case MarkUnplaceable(unit, reasons):
            return keys.unplaceable, Put(keys.unplaceable_unit(unit), encode_reasons(reasons))
        case ClearUnplaceable(unit, _):
            return keys.unplaceable, Delete(keys.unplaceable_unit(unit))


async def apply_engine_tasks(
    client: EtcdClient, keys: Keys, fence: Compare, tasks: Sequence[EngineTask]
) -> dict[str, int]:
    """Write `tasks` in fenced batches; return prefix -> revision of its last write."""
    written: dict[str, int] = {}
    for start in range(0, len(tasks), MAX_TXN_OPS):
        batch = tasks[start : start + MAX_TXN_OPS]
        writes = [task_write(keys, task) for task in batch]
        result = await client.txn([fence], [op for _, op in writes])
        if not result.succeeded:
            raise Deposed(f"leader fence {fence.key} failed: another engine leads")
        for task in batch:
            log.info(
                type(task).__name__.lower(),
                unit=task.unit,
                machine=getattr(task, "machine", None),
                reason=task.reason,
            )
        for prefix, _ in writes:
            written[prefix] = result.revision
    return written
