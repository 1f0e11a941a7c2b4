"""PrefixWatcher against a real etcd: snapshots, live events, restarts, compaction, progress."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import Self

import pytest
from structlog.testing import capture_logs

from devtools.etcd_server import EtcdServer
from fleetd.registry.client import Delete, EtcdClient, KeyValue
from fleetd.registry.errors import EtcdCompacted
from fleetd.registry.watch import Changes, PrefixWatcher, Snapshot, WatchBatch

WAIT = 10.0  # deadline for any single condition


class Collector:
    """Runs a PrefixWatcher on a task and records its batches; wait on conditions over them."""

    def __init__(self, watcher: PrefixWatcher) -> None:
        self.watcher = watcher
        self.batches: list[WatchBatch] = []
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.wait([self._task])

    async def _run(self) -> None:
        try:
            async for batch in self.watcher:
                async with self._changed:
                    self.batches.append(batch)
                    self._changed.notify_all()
        finally:
            async with self._changed:
                self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[], bool], within: float = WAIT) -> None:
        assert self._task is not None
        task = self._task
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: task.done() or predicate())
        if task.done():
            task.result()  # re-raise what ended the watcher
            raise AssertionError("the watcher stopped")

    async def wait_for_revision(self, revision: int, within: float = WAIT) -> None:
        await self.wait_for(lambda: self.watcher.revision >= revision, within)

    def events(self) -> list[tuple[str, str, int]]:
        return [
            (event.kind, event.kv.key, event.kv.mod_revision)
            for batch in self.batches
            if isinstance(batch, Changes)
            for event in batch.events
        ]

    def snapshots(self) -> list[Snapshot]:
        return [batch for batch in self.batches if isinstance(batch, Snapshot)]


async def drain(stream: AsyncGenerator[Changes, None]) -> None:
    """Read a raw watch stream until it raises (or WAIT runs out)."""
    async with asyncio.timeout(WAIT), aclosing(stream):
        async for _ in stream:
            pass


def keys(kvs: list[KeyValue]) -> list[str]:
    return [kv.key for kv in kvs]


async def test_snapshot_then_live_events(etcd: EtcdClient, key_prefix: str) -> None:
    await etcd.put(key_prefix + "a", b"1")
    r_b = await etcd.put(key_prefix + "b", b"1")
    await etcd.put("/elsewhere/" + key_prefix, b"not watched")

    async with Collector(PrefixWatcher(etcd, key_prefix)) as seen:
        await seen.wait_for(lambda: len(seen.batches) >= 1)
        snapshot = seen.batches[0]
        assert isinstance(snapshot, Snapshot)
        assert keys(snapshot.kvs) == [key_prefix + "a", key_prefix + "b"]
        assert snapshot.revision >= r_b

        r_c = await etcd.put(key_prefix + "c", b"1")
        r_a = await etcd.put(key_prefix + "a", b"2")
        r_del = (await etcd.txn([], [Delete(key_prefix + "b")])).revision
        await seen.wait_for_revision(r_del)

        assert seen.events() == [
            ("put", key_prefix + "c", r_c),
            ("put", key_prefix + "a", r_a),
            ("delete", key_prefix + "b", r_del),
        ]
        assert len(seen.snapshots()) == 1
        changes = [b for b in seen.batches if isinstance(b, Changes)]
        assert all(b.revision > snapshot.revision for b in changes)
        assert [b.revision for b in changes] == sorted(b.revision for b in changes)
        updated = next(e.kv for b in changes for e in b.events if e.kv.mod_revision == r_a)
        assert (updated.value, updated.version) == (b"2", 2)


async def test_start_revision_replays_history_without_a_snapshot(
    etcd: EtcdClient, key_prefix: str
) -> None:
    r1 = await etcd.put(key_prefix + "x", b"1")
    r2 = await etcd.put(key_prefix + "x", b"2")
    async with Collector(PrefixWatcher(etcd, key_prefix, start_revision=r1)) as seen:
        await seen.wait_for_revision(r2)
        assert seen.snapshots() == []
        assert seen.events() == [("put", key_prefix + "x", r1), ("put", key_prefix + "x", r2)]


async def test_resumes_across_an_etcd_restart_without_loss_or_duplicates(
    private_etcd: EtcdServer,
) -> None:
    client = await EtcdClient.connect([private_etcd.endpoint], timeout=1.0)
    try:
        await client.put("/w/a", b"1")
        with capture_logs() as logs:
            async with Collector(PrefixWatcher(client, "/w/", backoff_max=0.2)) as seen:
                await seen.wait_for(lambda: len(seen.batches) >= 1)
                expected = [("put", "/w/b", await client.put("/w/b", b"1"))]
                await seen.wait_for_revision(expected[-1][2])

                private_etcd.kill()  # mid-watch, no goodbye
                private_etcd.start()  # same data dir and port
                expected.append(("put", "/w/c", await client.put("/w/c", b"1")))
                expected.append(("put", "/w/a", await client.put("/w/a", b"2")))
                deleted = await client.txn([], [Delete("/w/b")])
                expected.append(("delete", "/w/b", deleted.revision))
                await seen.wait_for_revision(expected[-1][2])

                assert seen.events() == expected
                assert len(seen.snapshots()) == 1

    finally:
        await client.close()
    warnings = [e for e in logs if e["event"] == "etcd watch interrupted, retrying"]
    recoveries = [e for e in logs if e["event"] == "etcd watch recovered"]
    assert len(warnings) == 1
    assert warnings[0]["log_level"] == "warning"
    assert len(recoveries) == 1


async def test_compacted_start_revision_yields_a_fresh_snapshot(
    private_etcd: EtcdServer,
) -> None:
    client = await EtcdClient.connect([private_etcd.endpoint])
    try:
        old = await client.put("/c/a", b"1")
        await client.put("/c/b", b"1")
        latest = await client.put("/c/a", b"2")
        await client.compact(latest)

        # The raw stream reports the compaction instead of hanging...
        with pytest.raises(EtcdCompacted) as compacted:
            await drain(client.watch("/c/", start_revision=old))
        assert compacted.value.compact_revision == latest

        # ...and the watcher turns it into a snapshot, then carries on live.
        async with Collector(PrefixWatcher(client, "/c/", start_revision=old)) as seen:
            await seen.wait_for(lambda: len(seen.batches) >= 1)
            snapshot = seen.batches[0]
            assert isinstance(snapshot, Snapshot)
            assert snapshot.revision >= latest
            assert [(kv.key, kv.value) for kv in snapshot.kvs] == [
                ("/c/a", b"2"),
                ("/c/b", b"1"),
            ]
            r_c = await client.put("/c/c", b"1")
            await seen.wait_for_revision(r_c)
            assert seen.events() == [("put", "/c/c", r_c)]
    finally:
        await client.close()


async def test_progress_notifications_advance_an_idle_watch(
    etcd: EtcdClient, key_prefix: str
) -> None:
    async with Collector(PrefixWatcher(etcd, key_prefix + "idle/")) as seen:
        await seen.wait_for(lambda: len(seen.batches) >= 1)
        start = seen.watcher.revision
        elsewhere = await etcd.put(key_prefix + "busy", b"")  # outside the watched prefix
        assert elsewhere > start

        await seen.wait_for_revision(elsewhere)
        progress = [b for b in seen.batches if isinstance(b, Changes)]
        assert progress
        assert all(b.events == [] for b in progress)
        assert progress[-1].revision == seen.watcher.revision >= elsewhere


async def test_prev_kv_gives_each_event_the_value_it_replaced(
    etcd: EtcdClient, key_prefix: str
) -> None:
    r1 = await etcd.put(key_prefix + "x", b"1")
    r2 = await etcd.put(key_prefix + "x", b"2")
    r3 = (await etcd.txn([], [Delete(key_prefix + "x")])).revision
    watcher = PrefixWatcher(etcd, key_prefix, start_revision=r1, prev_kv=True)
    async with Collector(watcher) as seen:
        await seen.wait_for_revision(r3)
        events = [e for b in seen.batches if isinstance(b, Changes) for e in b.events]
        previous = [None if e.prev is None else (e.prev.value, e.prev.mod_revision) for e in events]
        assert previous == [None, (b"1", r1), (b"2", r2)]
    async with Collector(PrefixWatcher(etcd, key_prefix, start_revision=r1)) as plain:
        await plain.wait_for_revision(r3)
        changes = [b for b in plain.batches if isinstance(b, Changes)]
        assert all(e.prev is None for b in changes for e in b.events)
