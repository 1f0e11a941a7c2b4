"""Helpers for agent tests on a real etcd: store units and placements as the API and the engine
do, read what the agent published, and run components in the background."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from fleetd.core.model import Placement
from fleetd.core.states import JobState
from fleetd.core.unitfile import parse_unit
from fleetd.registry.client import EtcdClient
from fleetd.registry.codec import UnitRecord, UnitStateRecord, decode_state, encode_placement
from fleetd.registry.keys import Keys
from fleetd.registry.units import put_unit

MACHINE = "a" * 32
OTHER = "b" * 32


def service(command: str = "/bin/sleep infinity", description: str = "") -> str:
    head = f"[Unit]\nDescription={description}\n\n" if description else ""
    return f"{head}[Service]\nExecStart={command}\n"


async def schedule(
    client: EtcdClient,
    keys: Keys,
    name: str,
    text: str = service(),
    *,
    machine: str = MACHINE,
    desired: str = "launched",
) -> UnitRecord:
    """Store the unit as the API does and place it on `machine` as the engine does."""
    record = await put_unit(client, keys, name, parse_unit(text), JobState(desired))
    placement = Placement(name, machine, record.hash, JobState(desired))
    await client.put(keys.placement(machine, name), encode_placement(placement))
    return record


async def unschedule(client: EtcdClient, keys: Keys, name: str, machine: str = MACHINE) -> None:
    await client.delete(keys.placement(machine, name))


async def states(client: EtcdClient, keys: Keys, machine: str = MACHINE) -> dict[str, Any]:
    """Published states of `machine`: unit -> (active, sub), with the raw records' leases."""
    kvs, _ = await client.get_prefix(keys.state(machine, ""))
    found: dict[str, Any] = {}
    for kv in kvs:
        record: UnitStateRecord = decode_state(kv.key, kv.value)
        found[kv.key.rsplit("/", 1)[1]] = (record.active_state, record.sub_state)
    return found


@contextlib.asynccontextmanager
async def background(coroutine: Coroutine[Any, Any, None]) -> AsyncIterator[asyncio.Task[None]]:
    """Run `coroutine` as a task for the body of the block, then cancel it and wait."""
    task = asyncio.create_task(coroutine)
    try:
        yield task
    finally:
        task.cancel()
        results = await asyncio.gather(task, return_exceptions=True)
        error = results[0]
        if isinstance(error, BaseException) and not isinstance(error, asyncio.CancelledError):
            raise error
