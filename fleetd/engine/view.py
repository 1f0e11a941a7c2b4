"""The engine's cluster view: units, machines, schedule and stored reasons, fed by etcd watches.

One `PrefixWatcher` per prefix (`units/`, `machines/`, `schedule/`, `unplaceable/`); the agents'
`states/` are not watched here, so their churn never wakes the engine. Each watcher starts from a
paged snapshot, then applies changes; after a compaction it gets a fresh snapshot and the section
is rebuilt from it.

`snapshot()` hands the planner the live maps without copying. That is safe because planning is
synchronous: no watch event can be applied between taking the snapshot and the planner returning.
A caller must not hold a snapshot across an `await`.

`wait_for(revisions)` lets the engine wait until its own writes have come back through the watches,
so the next plan never works from a view that predates them (which could place a unit twice).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import structlog

from fleetd.core.model import ClusterSnapshot, Machine, Placement, Unit
from fleetd.registry.client import EtcdClient, KeyValue
from fleetd.registry.codec import (
    CodecError,
    decode_machine,
    decode_placement,
    decode_reasons,
    decode_unit,
)
from fleetd.registry.keys import Keys
from fleetd.registry.watch import Changes, PrefixWatcher, Snapshot

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class _Section:
    """One watched prefix and how its keys land in the view."""

    prefix: str
    put: Callable[[KeyValue], None]
    delete: Callable[[str], None]
    clear: Callable[[], None]
    revision: int = 0
    ready: bool = False


class ClusterView:
    """Watch-fed state of the cluster, as the engine plans from it."""

    def __init__(
        self, client: EtcdClient, keys: Keys, on_change: Callable[[], None] = lambda: None
    ) -> None:
        self._client = client
        self._keys = keys
        self._on_change = on_change
        self.units: dict[str, Unit] = {}
        self.machines: dict[str, Machine] = {}
        self.schedule: dict[str, dict[str, Placement]] = {}
        self.unplaceable: dict[str, tuple[str, ...]] = {}
        self._advanced = asyncio.Event()
        self.generation = 0  # bumped on every change the view applies
        self._sections = [
            _Section(keys.units, self._put_unit, self._delete_unit, self.units.clear),
            _Section(keys.machines, self._put_machine, self._delete_machine, self.machines.clear),
            _Section(
                keys.schedule, self._put_placement, self._delete_placement, self.schedule.clear
            ),
            _Section(
                keys.unplaceable, self._put_reasons, self._delete_reasons, self.unplaceable.clear
            ),
        ]

    # ---- reading

    @property
    def ready(self) -> bool:
        """Every prefix has been read once."""
        return all(s.ready for s in self._sections)

    def revision(self, prefix: str) -> int:
        """The last revision applied for one watched prefix."""
        return next(s.revision for s in self._sections if s.prefix == prefix)

    def snapshot(self) -> ClusterSnapshot:
        """The live view, read-only; valid until the caller next awaits."""
        return ClusterSnapshot(
            units=MappingProxyType(self.units),
            machines=MappingProxyType(self.machines),
            schedule=MappingProxyType(self.schedule),
            unplaceable=MappingProxyType(self.unplaceable),
        )

    async def wait_ready(self) -> None:
        while not self.ready:
            await self._next_advance()

    async def wait_for(self, revisions: Mapping[str, int]) -> None:
        """Return once each prefix in `revisions` has applied at least that revision."""
        while any(self.revision(prefix) < rev for prefix, rev in revisions.items()):
            await self._next_advance()

    async def _next_advance(self) -> None:
        self._advanced.clear()
        await self._advanced.wait()

    # ---- feeding

    async def run(self) -> None:
        """Feed every section from its watcher until cancelled."""
        async with asyncio.TaskGroup() as group:
            for section in self._sections:
                group.create_task(self._feed(section), name=f"view:{section.prefix}")

    async def _feed(self, section: _Section) -> None:
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
            self._advanced.set()
            if changed:
                self.generation += 1
                self._on_change()

    def _apply(self, section: _Section, kv: KeyValue, *, deleted: bool = False) -> None:
        try:
            if deleted:
                section.delete(kv.key)
            else:
                section.put(kv)
        except (CodecError, ValueError) as exc:
            log.error("skipping unreadable record", key=kv.key, error=str(exc))

    # ---- sections

    def _put_unit(self, kv: KeyValue) -> None:
        name = self._keys.name_under(self._keys.units, kv.key)
        self.units[name] = decode_unit(kv.key, kv.value).to_unit()

    def _delete_unit(self, key: str) -> None:
        self.units.pop(self._keys.name_under(self._keys.units, key), None)

    def _put_machine(self, kv: KeyValue) -> None:
        machine_id = self._keys.name_under(self._keys.machines, kv.key)
        machine = decode_machine(kv.key, kv.value)
        if machine.id != machine_id:
            raise CodecError(f"{kv.key}: record names machine {machine.id!r}")
        self.machines[machine_id] = machine

    def _delete_machine(self, key: str) -> None:
        self.machines.pop(self._keys.name_under(self._keys.machines, key), None)

    def _put_placement(self, kv: KeyValue) -> None:
        machine, unit = self._keys.split_pair(self._keys.schedule, kv.key)
        placement = decode_placement(kv.key, kv.value, machine, unit)
        self.schedule.setdefault(machine, {})[unit] = placement

    def _delete_placement(self, key: str) -> None:
        machine, unit = self._keys.split_pair(self._keys.schedule, key)
        placed = self.schedule.get(machine)
        if placed is not None:
            placed.pop(unit, None)
            if not placed:
                del self.schedule[machine]

    def _put_reasons(self, kv: KeyValue) -> None:
        name = self._keys.name_under(self._keys.unplaceable, kv.key)
        self.unplaceable[name] = decode_reasons(kv.key, kv.value)

    def _delete_reasons(self, key: str) -> None:
        self.unplaceable.pop(self._keys.name_under(self._keys.unplaceable, key), None)
