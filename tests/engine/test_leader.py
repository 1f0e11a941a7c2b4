"""Leader election on a real etcd: one leader at a time, the next one takes over."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from fleetd.engine.leader import Election
from fleetd.registry.client import EtcdClient, Put
from fleetd.registry.codec import decode_leader
from fleetd.registry.keys import Keys

A, B = "a" * 32, "b" * 32


async def test_one_leader_then_the_other_after_it_goes(etcd: EtcdClient, keys: Keys) -> None:
    first = await Election(etcd, keys, A, ttl=5).campaign()
    kv = await etcd.get(keys.leader)
    assert kv is not None
    assert kv.create_revision == first.revision
    assert decode_leader(kv.key, kv.value).machine_id == A

    second_election = Election(etcd, keys, B, ttl=5)
    waiting = asyncio.create_task(second_election.campaign())
    await asyncio.wait_for(_until(lambda: second_election.leader == A), timeout=10)
    assert not waiting.done()  # B saw A lead and waits

    ok = await etcd.txn([first.fence()], [Put(keys.prefix + "probe", b"1")])
    assert ok.succeeded
    await first.lease.revoke()
    second = await asyncio.wait_for(waiting, timeout=10)
    assert second.revision > first.revision
    assert second_election.leader == B
    stale = await etcd.txn([first.fence()], [Put(keys.prefix + "probe", b"2")])
    assert not stale.succeeded
    assert (await etcd.txn([second.fence()], [Put(keys.prefix + "probe", b"3")])).succeeded
    await second.lease.revoke()


async def _until(condition: Callable[[], bool]) -> None:
    """Poll `condition`; callers bound the wait with `asyncio.wait_for`."""
    while not condition():  # noqa: ASYNC110 - a plain attribute, nothing to wait on
        await asyncio.sleep(0.02)
