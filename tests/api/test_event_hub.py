"""The shared watch behind the event stream, on a real etcd: order, resuming, compaction, drops."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from fleetd.api import events
from fleetd.api.event_hub import EventHub, Subscription
from fleetd.api.event_model import EventFilter, Position
from fleetd.core.states import JobState
from fleetd.core.unitfile import UnitFile
from fleetd.registry.client import EtcdClient, Put
from fleetd.registry.codec import UnitRecord, UnitStateRecord, encode_state, encode_unit
from fleetd.registry.keys import Keys
from tests.api.helpers import M1, simple_options

WAIT = 10.0


@asynccontextmanager
async def running(hub: EventHub) -> AsyncIterator[EventHub]:
    task = asyncio.create_task(hub.run(), name="test-event-hub")
    try:
        yield hub
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class Reader:
    """Takes a subscription's frames and parses them into (id, kind, data)."""

    def __init__(self, subscription: Subscription) -> None:
        self.subscription = subscription
        self.events: list[tuple[str | None, str, dict[str, Any]]] = []

    async def until(self, done: Callable[[], bool], within: float = WAIT) -> None:
        async with asyncio.timeout(within):
            while not done():
                for raw in await self.subscription.next_frames(0.5):
                    self.events.append(parse(raw))

    async def count(self, n: int) -> None:
        await self.until(lambda: len(self.events) >= n)

    def ids(self) -> list[str | None]:
        return [event_id for event_id, _, _ in self.events]


def parse(raw: bytes) -> tuple[str | None, str, dict[str, Any]]:
    fields = dict(line.split(": ", 1) for line in raw.decode().strip().splitlines())
    return fields.get("id"), fields["event"], json.loads(fields["data"])


async def submit(etcd: EtcdClient, keys: Keys, name: str, desc: str = "x") -> int:
    opts = simple_options(desc)
    record = UnitRecord(name, opts, UnitFile(opts).hash, JobState.LAUNCHED)
    return await etcd.put(keys.unit(name), encode_unit(record))


async def test_a_submitted_units_events_arrive_in_revision_order(
    etcd: EtcdClient, key_prefix: str
) -> None:
    keys = Keys(key_prefix)
    async with running(EventHub(etcd, keys)) as hub:
        reader = Reader(await hub.subscribe(EventFilter(), None))
        r1 = await submit(etcd, keys, "a.service")
        state = encode_state(UnitStateRecord("loaded", "active", "running", "h", 1.0))
        r2 = await etcd.put(keys.state(M1, "a.service"), state)
        r3 = await submit(etcd, keys, "a.service", "changed")
        await reader.count(3)
        assert [(i, k) for i, k, _ in reader.events] == [
            (str(r1), "unit"),
            (str(r2), "unit-state"),
            (str(r3), "unit"),
        ]


async def resume_exactly(etcd: EtcdClient, keys: Keys, first: EventHub, second: EventHub) -> None:
    """A client reads from `first`, leaves, events happen, it resumes on `second`."""
    async with running(first):
        reader = Reader(await first.subscribe(EventFilter(), None))
        seen = [await submit(etcd, keys, f"seen{i}.service") for i in range(3)]
        await reader.count(3)
        reader.subscription.close()
        assert reader.ids() == [str(r) for r in seen]
        missed = [await submit(etcd, keys, f"missed{i}.service") for i in range(4)]
        result = await etcd.txn(
            [],
            [
                Put(
                    keys.state(M1, f"t{i}.service"),
                    encode_state(UnitStateRecord("a", "b", "c", "h")),
                )
                for i in range(3)
            ],
        )
        async with running(second) if second is not first else _nothing():
            resumed = Reader(await second.subscribe(EventFilter(), Position(seen[-1])))
            after = await submit(etcd, keys, "after.service")
            await resumed.count(8)
            expected = [str(r) for r in missed]
            expected += [f"{result.revision}.0", f"{result.revision}.1", str(result.revision)]
            assert resumed.ids() == [*expected, str(after)]
            # and from the middle of the transaction: exactly its rest
            middle = Reader(await second.subscribe(EventFilter(), Position(result.revision, 0)))
            await middle.count(3)
            assert middle.ids() == [f"{result.revision}.1", str(result.revision), str(after)]


@asynccontextmanager
async def _nothing() -> AsyncIterator[None]:
    yield


async def test_a_client_that_reconnects_gets_exactly_the_missed_events_from_history(
    etcd: EtcdClient, key_prefix: str
) -> None:
    keys = Keys(key_prefix)
    hub = EventHub(etcd, keys)
    await resume_exactly(etcd, keys, hub, hub)


async def test_a_client_that_reconnects_to_a_new_fleetd_gets_them_from_etcd(
    etcd: EtcdClient, key_prefix: str
) -> None:
    keys = Keys(key_prefix)
    await resume_exactly(etcd, keys, EventHub(etcd, keys), EventHub(etcd, keys))


async def test_a_compacted_revision_tells_the_client_to_relist(
    etcd: EtcdClient, key_prefix: str
) -> None:
    keys = Keys(key_prefix)
    old = await submit(etcd, keys, "old.service")
    await submit(etcd, keys, "lost.service")  # the revision after `old`: compacted away
    latest = await submit(etcd, keys, "new.service")
    await etcd.compact(latest)
    async with running(EventHub(etcd, keys)) as hub:
        reader = Reader(await hub.subscribe(EventFilter(), Position(old)))
        after = await submit(etcd, keys, "after.service")
        await reader.count(2)
        (relist_id, kind, data), (next_id, _, _) = reader.events[:2]
        assert kind == "relist"
        assert data["compactRevision"] == latest
        assert "compacted" in data["reason"]
        assert int(relist_id or 0) <= after
        assert next_id == str(after)


async def test_a_slow_client_is_dropped_and_its_queue_freed(
    etcd: EtcdClient, key_prefix: str
) -> None:
    keys = Keys(key_prefix)
    async with running(EventHub(etcd, keys, queue_limit=5)) as hub:
        slow = await hub.subscribe(EventFilter(), None)
        fast = Reader(await hub.subscribe(EventFilter(), None))
        for i in range(8):
            await submit(etcd, keys, f"u{i}.service")
            await fast.count(i + 1)  # the fast client keeps up and stays
        assert slow.dropped
        assert hub.subscribers == 1
        frames = await slow.next_frames(0.1)
        assert [parse(f)[1] for f in frames] == ["dropped"]
        assert "more than 5 events" in parse(frames[0])[2]["reason"]
        assert parse(frames[0])[0] is None  # no id: the client resumes from what it last saw


async def test_filters_apply_to_live_and_replayed_events(etcd: EtcdClient, key_prefix: str) -> None:
    keys = Keys(key_prefix)
    async with running(EventHub(etcd, keys)) as hub:
        everything = Reader(await hub.subscribe(EventFilter(), None))
        start = await submit(etcd, keys, "db.service")
        web = await submit(etcd, keys, "web@1.service")
        await submit(etcd, keys, "db2.service")
        await everything.count(3)
        only_web = Reader(
            await hub.subscribe(EventFilter.build(["web@*"], [], []), Position(start - 1))
        )
        web2 = await submit(etcd, keys, "web@2.service")
        await submit(etcd, keys, "db3.service")
        await only_web.count(2)
        assert only_web.ids() == [str(web), str(web2)]


async def test_stopping_the_hub_ends_every_stream(etcd: EtcdClient, key_prefix: str) -> None:
    keys = Keys(key_prefix)
    async with running(EventHub(etcd, keys)) as hub:
        reader = Reader(await hub.subscribe(EventFilter(), None))
    assert reader.subscription.dropped
    await reader.count(1)
    assert reader.events[0][1] == "dropped"
    assert "stopping" in reader.events[0][2]["reason"]


async def test_a_stream_whose_client_stopped_reading_is_cut_once_dropped(
    etcd: EtcdClient, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer is stuck in `send` (the client reads nothing): once the client is dropped, the
    response gives up after DROP_GRACE instead of holding the connection and its queue."""
    monkeypatch.setattr(events, "DROP_GRACE", 0.1)
    keys = Keys(key_prefix)
    async with running(EventHub(etcd, keys, queue_limit=3)) as hub:
        subscription = await hub.subscribe(EventFilter(), None)
        stream = events.EventStream(subscription, heartbeat=60)
        sent: list[dict[str, Any]] = []
        stuck = asyncio.Event()

        async def send(message: Any) -> None:
            sent.append(message)
            if len(sent) >= 3:  # the first event is out; then the socket is full for good
                stuck.set()
                await asyncio.Event().wait()

        async def receive() -> Any:
            await asyncio.Event().wait()  # the client never hangs up

        responding = asyncio.create_task(stream({"type": "http"}, receive, send))
        for i in range(6):
            await submit(etcd, keys, f"u{i}.service")
            if i == 0:
                await asyncio.wait_for(stuck.wait(), WAIT)
        async with asyncio.timeout(WAIT):
            await subscription.gone.wait()
            await responding
        assert hub.subscribers == 0
        assert sent[0]["status"] == 200
