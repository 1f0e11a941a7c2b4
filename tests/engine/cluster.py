"""Helpers for engine tests on a real etcd: submit units, register machines, read placements."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from fleetd.core.model import Machine
from fleetd.core.states import JobState
from fleetd.core.unitfile import parse_unit
from fleetd.engine.engine import Engine
from fleetd.registry.client import EtcdClient
from fleetd.registry.codec import UnitRecord, decode_reasons, encode_machine
from fleetd.registry.keys import Keys
from fleetd.registry.lease import Lease
from fleetd.registry.units import put_unit

T = TypeVar("T")


def unit_text(name: str, xfleet: str = "") -> str:
    text = f"[Unit]\nDescription={name}\n\n[Service]\nExecStart=/bin/sleep infinity\n"
    if xfleet:
        text += "\n[X-Fleet]\n" + "\n".join(line.strip() for line in xfleet.splitlines()) + "\n"
    return text


async def submit(
    client: EtcdClient, keys: Keys, name: str, xfleet: str = "", desired: str = "launched"
) -> UnitRecord:
    """Store a unit as the API does."""
    return await put_unit(
        client, keys, name, parse_unit(unit_text(name, xfleet)), JobState(desired)
    )


async def add_machine(
    client: EtcdClient,
    keys: Keys,
    machine_id: str,
    *,
    ttl: int = 10,
    keep_alive: bool = True,
    **metadata: str,
) -> Lease:
    """Register a machine record on its own lease, as an agent does (the documented contract)."""
    lease = await Lease.grant(client, ttl)
    if keep_alive:
        lease.start()
    record = encode_machine(Machine(machine_id, metadata, "127.0.0.1"), "test")
    await client.put(keys.machine(machine_id), record, lease=lease.id)
    return lease


async def placements(client: EtcdClient, keys: Keys) -> dict[str, set[str]]:
    """Unit -> machines, read straight from etcd."""
    kvs, _ = await client.get_prefix(keys.schedule)
    found: dict[str, set[str]] = {}
    for kv in kvs:
        machine, unit = keys.split_pair(keys.schedule, kv.key)
        found.setdefault(unit, set()).add(machine)
    return found


async def stored_reasons(client: EtcdClient, keys: Keys, unit: str) -> tuple[str, ...] | None:
    kv = await client.get(keys.unplaceable_unit(unit))
    return None if kv is None else decode_reasons(kv.key, kv.value)


async def wait_until(
    probe: Callable[[], Awaitable[T]], what: str, *, within: float = 15.0, every: float = 0.05
) -> T:
    """Poll `probe` until it returns something truthy; fail naming `what` after `within` s."""
    deadline = time.monotonic() + within
    last: T | None = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(every)
    raise AssertionError(f"timed out after {within}s waiting for {what}; last saw {last!r}")


@contextlib.asynccontextmanager
async def running(engine: Engine) -> AsyncIterator[asyncio.Task[None]]:
    """Run `engine` in the background for the body of the block, then stop it."""
    task = asyncio.create_task(engine.run(), name=f"engine-{engine.machine_id}")
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
