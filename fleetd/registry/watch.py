"""A prefix watcher that survives etcd restarts and compaction.

`PrefixWatcher` turns the client's raw, one-shot Watch stream into an endless
series of batches: a `Snapshot` (the whole prefix at one revision) whenever a
full read is needed, and `Changes` (events in revision order) in between.
Feeding every batch, in order, into a dict rebuilds the prefix exactly.

Invariants:

- `revision` is the last revision delivered; every event at or below it has
  been yielded and none above it has. A Changes batch never repeats an event
  and a resumed stream starts at `revision + 1`, so nothing is lost or
  duplicated across reconnects.
- Transient errors (etcd down, stream broken) never escape: the watcher logs
  one warning per outage, retries with capped exponential backoff and logs
  once on recovery.
- When etcd has compacted the revision the watcher needs, it yields a fresh
  Snapshot and continues from that; it never hangs on a cancelled watch.
- An empty Changes with a higher revision is a progress notification: nothing
  under the prefix changed up to that revision.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing

import structlog

from fleetd.registry.client import Changes, EtcdClient, Snapshot, WatchBatch
from fleetd.registry.errors import EtcdCompacted, EtcdError, EtcdUnavailable

__all__ = ["Changes", "PrefixWatcher", "Snapshot", "WatchBatch"]

log = structlog.get_logger(__name__)

BACKOFF_MIN = 0.05  # first retry delay, seconds; doubles up to backoff_max


class PrefixWatcher:
    """Watch every key under `prefix`; iterate it for Snapshot and Changes batches.

    start_revision 0: begin with a Snapshot, then watch from after it.
    start_revision > 0: deliver events from start_revision on, with no Snapshot
    unless that revision has been compacted.
    prev_kv: each event carries the key's previous value (`Event.prev`).
    """

    def __init__(
        self,
        client: EtcdClient,
        prefix: str,
        *,
        start_revision: int = 0,
        backoff_max: float = 2.0,
        prev_kv: bool = False,
    ) -> None:
        self.prefix = prefix
        self.revision = max(start_revision - 1, 0)
        self._client = client
        self._prev_kv = prev_kv
        self._snapshot_first = start_revision <= 0
        self._backoff_max = max(backoff_max, BACKOFF_MIN)
        self._backoff = BACKOFF_MIN
        self._failing = False  # inside an outage: warned once, not yet recovered

    async def __aiter__(self) -> AsyncIterator[WatchBatch]:
        need_snapshot = self._snapshot_first
        while True:
            try:
                if need_snapshot:
                    kvs, revision = await self._client.get_prefix(self.prefix)
                    need_snapshot = False
                    self._healthy()
                    self.revision = revision
                    yield Snapshot(revision=revision, kvs=kvs)
                stream = self._client.watch(
                    self.prefix,
                    start_revision=self.revision + 1,
                    progress_notify=True,
                    prev_kv=self._prev_kv,
                )
                async with aclosing(stream):
                    async for changes in stream:
                        self._healthy()
                        batch = self._news(changes)
                        if batch is not None:
                            yield batch
            except EtcdCompacted as err:
                log.info(
                    "watch revision compacted, re-reading the prefix",
                    prefix=self.prefix,
                    revision=self.revision,
                    compact_revision=err.compact_revision,
                )
                need_snapshot = True
            except EtcdError as err:
                await self._back_off(err)

    def _healthy(self) -> None:
        """etcd answered: end the outage, if any, and reset the backoff."""
        if self._failing:
            self._failing = False
            log.info("etcd watch recovered", prefix=self.prefix, revision=self.revision)
        self._backoff = BACKOFF_MIN

    async def _back_off(self, err: EtcdError) -> None:
        if not self._failing:
            self._failing = True
            log.warning(
                "etcd watch interrupted, retrying",
                prefix=self.prefix,
                revision=self.revision,
                error=str(err),
                transient=isinstance(err, EtcdUnavailable),
            )
        await asyncio.sleep(self._backoff)
        self._backoff = min(self._backoff * 2, self._backoff_max)

    def _news(self, changes: Changes) -> Changes | None:
        """The part of `changes` not delivered yet (None if nothing), advancing `revision`."""
        events = [e for e in changes.events if e.kv.mod_revision > self.revision]
        if changes.events and not events:
            return None
        if not changes.events and changes.revision <= self.revision:
            return None  # the stream's confirmation, or a progress report with no news
        self.revision = max(self.revision, changes.revision)
        return Changes(revision=self.revision, events=events)
