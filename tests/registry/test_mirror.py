"""The Mirror base on a real etcd: sections fed in revision order, and waiting for revisions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from fleetd.registry.client import EtcdClient, KeyValue
from fleetd.registry.mirror import Mirror

WAIT = 10.0


class Recorded(Mirror):
    """A mirror of two prefixes that keeps each one's keys and values."""

    def __init__(self, client: EtcdClient, prefix: str) -> None:
        super().__init__(client)
        self.a, self.b = prefix + "a/", prefix + "b/"
        self.values: dict[str, bytes] = {}
        for section in (self.a, self.b):
            self.add_section(section, self._put, self._delete, self.values.clear)

    def _put(self, kv: KeyValue) -> None:
        self.values[kv.key] = kv.value

    def _delete(self, key: str) -> None:
        self.values.pop(key, None)


@pytest.fixture
async def mirror(etcd: EtcdClient, key_prefix: str) -> AsyncIterator[Recorded]:
    recorded = Recorded(etcd, key_prefix)
    task = asyncio.create_task(recorded.run())
    try:
        await asyncio.wait_for(recorded.wait_ready(), WAIT)
        yield recorded
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_each_waiter_returns_once_its_revisions_are_applied(
    etcd: EtcdClient, mirror: Recorded
) -> None:
    first = await etcd.put(mirror.a + "1", b"1")
    second = await etcd.put(mirror.a + "2", b"2")
    later = asyncio.create_task(mirror.wait_for({mirror.a: second + 1}))
    both = asyncio.create_task(mirror.wait_for({mirror.a: second, mirror.b: second + 2}))
    abandoned = asyncio.create_task(mirror.wait_for({mirror.a: second + 1}))
    await asyncio.wait_for(mirror.wait_for({mirror.a: first}), WAIT)
    await asyncio.wait_for(mirror.wait_for({mirror.a: second}), WAIT)
    assert mirror.values == {mirror.a + "1": b"1", mirror.a + "2": b"2"}
    assert not later.done()
    assert not both.done()
    abandoned.cancel()
    third = await etcd.put(mirror.a + "3", b"3")
    assert third == second + 1
    await asyncio.wait_for(later, WAIT)
    assert mirror.values[mirror.a + "3"] == b"3"
    assert not both.done()  # b/ has not reached its revision yet
    fourth = await etcd.put(mirror.b + "4", b"4")
    assert fourth == second + 2
    await asyncio.wait_for(both, WAIT)
    assert mirror.values[mirror.b + "4"] == b"4"
    assert abandoned.cancelled()


async def test_a_revision_already_applied_does_not_wait(etcd: EtcdClient, mirror: Recorded) -> None:
    revision = await etcd.put(mirror.b + "x", b"x")
    await asyncio.wait_for(mirror.wait_for({mirror.b: revision}), WAIT)
    waiting = asyncio.create_task(mirror.wait_for({mirror.a: 0, mirror.b: revision}))
    await asyncio.sleep(0)  # one step of the loop: nothing to wait for, so it is done
    assert waiting.done()
