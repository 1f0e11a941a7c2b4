"""A watch-fed, in-memory mirror of some etcd prefixes: the base of every view.

A `Mirror` holds sections; each section is one prefix, fed by its own `PrefixWatcher`, with three
callbacks that land keys in the subclass's maps (`put`, `delete`, `clear`). A snapshot (at start or
after a compaction) clears the section and puts every key; changes are applied in revision order.
A record that cannot be decoded is logged and skipped, keeping the last good value: one bad key
never stops a view.

`generation` counts the changes applied, so a reader can tell whether anything changed since it
last looked; `wait_for(revisions)` waits until given prefixes have applied given revisions (a
writer waiting for its own writes to come back). Each waiter is woken once, when its revision
is reached, not on every change: a hundred writes in flight cost a hundred wakeups, not ten
thousand.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import structlog

from fleetd.registry.client import EtcdClient, KeyValue
from fleetd.registry.codec import CodecError
from fleetd.registry.watch import Changes, PrefixWatcher, Snapshot

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class Section:
    """One watched prefix and how its keys land in the mirror."""

    prefix: str
    put: Callable[[KeyValue], None]
    delete: Callable[[str], None]
    clear: Callable[[], None]
    revision: int = 0
    ready: bool = False
    # (revision, tie-breaker, future) of each `wait_for` still waiting, smallest revision first
    waiters: list[tuple[int, int, asyncio.Future[None]]] = field(default_factory=list)

    def wake(self) -> None:
        """Resolve every waiter whose revision has been reached."""
        while self.waiters and self.waiters[0][0] <= self.revision:
            _, _, future = heapq.heappop(self.waiters)
            if not future.done():
                future.set_result(None)


class Mirror:
    """Sections of etcd kept in memory by watches; subclasses add the sections and their maps."""

    def __init__(self, client: EtcdClient, on_change: Callable[[], None] = lambda: None) -> None:
        self._client = client
        self._on_change = on_change
        self._sections: list[Section] = []
        self._advanced = asyncio.Event()
        self._tickets = itertools.count()
        self.generation = 0  # bumped on every change applied

    def add_section(
        self,
        prefix: str,
        put: Callable[[KeyValue], None],
        delete: Callable[[str], None],
        clear: Callable[[], None],
    ) -> None:
        self._sections.append(Section(prefix, put, delete, clear))

    @property
    def ready(self) -> bool:
        """Every prefix has been read once."""
        return all(s.ready for s in self._sections)

    def revision(self, prefix: str) -> int:
        """The last revision applied for one watched prefix."""
        return self._section(prefix).revision

    def _section(self, prefix: str) -> Section:
        return next(s for s in self._sections if s.prefix == prefix)

    async def wait_ready(self) -> None:
        while not self.ready:
            await self._next_advance()

    async def wait_for(self, revisions: Mapping[str, int]) -> None:
        """Return once each prefix in `revisions` has applied at least that revision."""
        for prefix, revision in revisions.items():
            section = self._section(prefix)
            if section.revision < revision:
                future = asyncio.get_running_loop().create_future()
                heapq.heappush(section.waiters, (revision, next(self._tickets), future))
                await future

    async def wait_changed(self) -> None:
        """Return once the mirror has applied its next batch (a reader that re-checks a condition
        on every change: check, then wait, with no await in between)."""
        await self._next_advance()

    async def _next_advance(self) -> None:
        self._advanced.clear()
        await self._advanced.wait()

    def forget(self) -> None:
        """Drop everything held, as before the first read (call it once `run` has ended): the
        next `run` reads every prefix afresh. Whoever still waits on a revision is cancelled."""
        for section in self._sections:
            section.clear()
            section.ready = False
            section.revision = 0
            for _, _, future in section.waiters:
                future.cancel()
            section.waiters.clear()
        self.generation += 1

    async def run(self) -> None:
        """Feed every section from its watcher until cancelled."""
        async with asyncio.TaskGroup() as group:
            for section in self._sections:
                group.create_task(self._feed(section), name=f"mirror:{section.prefix}")

    async def _feed(self, section: Section) -> None:
        async for batch in PrefixWatcher(self._client, section.prefix):
            match batch:
                case Snapshot(revision, kvs):
                    section.clear()
                    for kv in kvs:
                        self._apply(section, kv)
                    section.ready = True
                    changed = True
                case Changes(revision, events):
                    for event in events:
                        self._apply(section, event.kv, deleted=event.kind == "delete")
                    changed = bool(events)
            section.revision = revision
            section.wake()
            self._advanced.set()
            if changed:
                self.generation += 1
                self._on_change()

    def _apply(self, section: Section, kv: KeyValue, *, deleted: bool = False) -> None:
        try:
            if deleted:
                section.delete(kv.key)
            else:
                section.put(kv)
        except (CodecError, ValueError) as exc:
            log.error("skipping unreadable record", key=kv.key, error=str(exc))
