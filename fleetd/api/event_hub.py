"""One etcd watch per fleetd, shared by every event-stream client, with bounded memory.

`EventHub.run` waits until the first client subscribes, then watches the whole key prefix
(with previous values) from the revision current at that moment, turns each batch into cluster
events (`fleetd.api.event_model.describe`), keeps the last `history` of them, and hands each to
the queue of every subscriber whose filter matches.

A subscriber that gives a position (`Last-Event-ID`) gets exactly the events after it:
* from the hub's history when it reaches back that far;
* else from etcd's own history, read by a catch-up watch of its own from that revision, until
  that watch reaches the revisions the hub holds; the subscriber's queue collects live events
  meanwhile, so nothing falls between the two;
* when etcd has compacted that revision, a `relist` event instead: the client must re-read
  the cluster (the stream then goes on from the hub's history). The same happens to every
  subscriber when the hub's own watch meets a compaction.

Invariants:
* Memory is bounded: the history holds at most `history` events, each subscriber's queue at
  most `queue_limit`; a subscriber whose queue is full is dropped (its queue freed, its stream
  ends with a `dropped` event) rather than allowed to grow. Frames are built once and shared.
* When the hub stops (fleetd shuts down), every subscriber is dropped, so streams end at once
  instead of holding up the server's graceful shutdown.
* Events reach each subscriber in revision order, each once. Publishing never awaits: the
  history, the hub's revision and every queue change together, so a subscriber registered
  between two batches sees the first from history and the second from its queue.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Final

import structlog

from fleetd.api.event_model import (
    DROPPED,
    RELIST,
    ClusterEvent,
    EventFilter,
    Position,
    describe,
    frame,
)
from fleetd.registry.client import EtcdClient
from fleetd.registry.errors import EtcdCompacted, EtcdError
from fleetd.registry.keys import Keys
from fleetd.registry.watch import Changes, PrefixWatcher, Snapshot
from fleetd.runtime.backoff import Backoff

log = structlog.get_logger(__name__)

HISTORY: Final = 4096
"""Events the hub keeps for clients that reconnect."""
QUEUE_LIMIT: Final = 8192
"""Events one subscriber may have waiting; one more and it is dropped."""
CATCH_UP_AHEAD: Final = 1024
"""Catch-up events read from etcd ahead of what the client has taken."""


class Subscription:
    """One client's place in the stream; `next_frames` hands out what it has not seen."""

    def __init__(self, hub: EventHub, wanted: EventFilter, skip_through: Position | None) -> None:
        self._hub = hub
        self.filter = wanted
        self._skip_through = skip_through  # live events at or before this were seen already
        self._queue: deque[bytes] = deque()
        self._catch_up: deque[bytes] = deque()
        self.catching_up = False
        self.dropped = False
        self.subscribed_at = 0  # the hub's revision when this subscription was registered
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self.catch_up_task: asyncio.Task[None] | None = None
        self.gone = asyncio.Event()  # set when dropped

    def close(self) -> None:
        """The client is gone: stop everything done for it."""
        self._hub.unsubscribe(self)
        if self.catch_up_task is not None:
            self.catch_up_task.cancel()
        self._queue.clear()
        self._catch_up.clear()

    def offer(self, event: ClusterEvent) -> None:
        """Queue `event` if the client wants it; drop the client when its queue is full."""
        if self.dropped or not self.filter.matches(event):
            return
        if self._skip_through is not None and not self._skip_through.before(event):
            return
        self.push(event.frame)

    def push(self, data: bytes) -> None:
        if self.dropped:
            return
        if len(self._queue) >= self._hub.queue_limit:
            self.drop(f"more than {self._hub.queue_limit} events waiting")
            return
        self._queue.append(data)
        self._wake.set()

    def drop(self, reason: str) -> None:
        self.dropped = True
        self.gone.set()
        self._queue.clear()
        self._catch_up.clear()
        self._queue.append(frame(None, DROPPED, {"reason": reason}))
        self._hub.unsubscribe(self)
        self._wake.set()
        self._room.set()

    async def next_frames(self, wait: float) -> list[bytes]:
        """What is waiting (catch-up first), or [] after `wait` seconds with nothing."""
        if not self._ready():
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    while not self._ready():
                        await self._wake.wait()
                        self._wake.clear()
        if self._catch_up:
            taken = list(self._catch_up)
            self._catch_up.clear()
            self._room.set()
            return taken
        if self.catching_up and not self.dropped:
            return []
        taken = list(self._queue)
        self._queue.clear()
        return taken

    def _ready(self) -> bool:
        return bool(self._catch_up) or (
            bool(self._queue) and (not self.catching_up or self.dropped)
        )

    async def _push_catch_up(self, data: bytes) -> None:
        while len(self._catch_up) >= CATCH_UP_AHEAD and not self.dropped:
            self._room.clear()
            await self._room.wait()
        if not self.dropped:
            self._catch_up.append(data)
            self._wake.set()

    def _caught_up(self) -> None:
        self.catching_up = False
        self._wake.set()


class EventHub:
    """The shared watch and its subscribers; see the module docstring."""

    def __init__(
        self,
        client: EtcdClient,
        keys: Keys,
        *,
        history: int = HISTORY,
        queue_limit: int = QUEUE_LIMIT,
    ) -> None:
        self._client = client
        self._keys = keys
        self.queue_limit = queue_limit
        self._history: deque[ClusterEvent] = deque(maxlen=history)
        self._subscribers: set[Subscription] = set()
        self._wanted = asyncio.Event()
        self._started = asyncio.Event()
        self.revision = 0  # every event up to here has been published
        self.first = 0  # the hub has seen every event from this revision on
        self._catch_ups: set[asyncio.Task[None]] = set()

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    async def run(self) -> None:
        """Watch and publish until cancelled (the watch starts with the first subscriber)."""
        try:
            await self._wanted.wait()
            self.revision = await self._current_revision()
            self.first = self.revision + 1
            self._started.set()
            log.info("event stream watching", prefix=self._keys.prefix, revision=self.revision)
            watcher = PrefixWatcher(
                self._client, self._keys.prefix, start_revision=self.first, prev_kv=True
            )
            async for batch in watcher:
                match batch:
                    case Snapshot(revision):
                        self._lost_history(revision, "the event stream's watch was compacted")
                    case Changes(revision, events):
                        self._publish(describe(self._keys, events), revision)
        finally:
            for subscriber in list(self._subscribers):  # their streams end now, not at a timeout
                subscriber.drop("fleetd is stopping; reconnect")
            for task in self._catch_ups:
                task.cancel()
            await asyncio.gather(*self._catch_ups, return_exceptions=True)

    async def _current_revision(self) -> int:
        backoff = Backoff(initial=0.1, maximum=2.0)
        while True:
            try:
                _, revision = await self._client.get_prefix(self._keys.leader)
                return revision
            except EtcdError as err:
                log.warning("event stream cannot read etcd's revision", error=str(err))
                await asyncio.sleep(backoff.next_delay())

    def _publish(self, events: list[ClusterEvent], revision: int) -> None:
        for event in events:
            self._history.append(event)
            for subscriber in list(self._subscribers):
                subscriber.offer(event)
        self.revision = max(self.revision, revision)

    def _lost_history(self, revision: int, reason: str) -> None:
        """The hub missed events up to `revision`: every client must re-list."""
        self._history.clear()
        self.revision = revision
        self.first = revision + 1
        for subscriber in list(self._subscribers):
            subscriber.push(_relist(revision, reason))

    def _oldest_held(self) -> int:
        """The first revision from which the hub holds every event (history may have evicted)."""
        if len(self._history) == self._history.maxlen and self._history:
            return self._history[0].revision + 1  # that revision may have lost its first events
        return self.first

    async def subscribe(self, wanted: EventFilter, after: Position | None) -> Subscription:
        """A new subscriber: live from now, or from just after `after` (see the module)."""
        self._wanted.set()
        await self._started.wait()
        subscription = Subscription(self, wanted, after)
        subscription.subscribed_at = self.revision
        self._subscribers.add(subscription)
        if after is None or after.revision >= self.revision:
            return subscription
        needed = after.revision if after.index is not None else after.revision + 1
        held = self._oldest_held()
        for event in self._history:
            if event.revision >= held:
                subscription.offer(event)
        if needed < held:
            subscription.catching_up = True
            task = asyncio.create_task(
                self._catch_up(subscription, after, held), name="events-catch-up"
            )
            subscription.catch_up_task = task
            self._catch_ups.add(task)
            task.add_done_callback(self._catch_ups.discard)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)

    async def _catch_up(self, subscription: Subscription, after: Position, held: int) -> None:
        """Events after `after` and before revision `held`, from etcd's history."""
        start = after.revision if after.index is not None else after.revision + 1
        backoff = Backoff(initial=0.1, maximum=2.0)
        try:
            while subscription.catching_up and not subscription.dropped:
                stream = self._client.watch(
                    self._keys.prefix, start_revision=start, progress_notify=True, prev_kv=True
                )
                try:
                    async with aclosing(stream):
                        async for changes in stream:
                            if await self._take_catch_up(subscription, after, held, changes):
                                return
                            start = max(start, changes.revision + 1)
                except EtcdCompacted as err:
                    reason = f"revision {after.revision} was compacted"
                    relist = _relist(held - 1, reason, err.compact_revision)
                    await subscription._push_catch_up(relist)
                    return
                except EtcdError as err:
                    log.warning("event catch-up interrupted, retrying", error=str(err))
                    await asyncio.sleep(backoff.next_delay())
        finally:
            subscription._caught_up()

    async def _take_catch_up(
        self, subscription: Subscription, after: Position, held: int, changes: Changes
    ) -> bool:
        """Hand over the catch-up events before `held`; True once the hub's hold on is reached."""
        for event in describe(self._keys, changes.events):
            if event.revision >= held:
                return True
            if after.before(event) and subscription.filter.matches(event):
                await subscription._push_catch_up(event.frame)
        return changes.revision >= held - 1 and changes.revision >= after.revision


def _relist(revision: int, reason: str, compact_revision: int | None = None) -> bytes:
    data: dict[str, object] = {"revision": revision, "reason": reason}
    if compact_revision is not None:
        data["compactRevision"] = compact_revision
    return frame(str(revision), RELIST, data)


async def frames(subscription: Subscription, heartbeat: float) -> AsyncIterator[list[bytes]]:
    """The subscription's frames, a keep-alive comment after `heartbeat` idle seconds."""
    while not subscription.dropped or subscription._queue:
        taken = await subscription.next_frames(heartbeat)
        yield taken or [b": keep-alive\n\n"]
        if subscription.dropped and not subscription._queue:
            return
