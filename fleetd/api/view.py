"""The API's watch-fed view: every unit, placement, unit state, machine and reason, in memory.

`ApiView` mirrors `units/`, `schedule/`, `states/`, `unplaceable/`, and `machines/` with
`metadata/` (merged by `MachineDirectory`, as the engine's view does), so list and get requests
are answered without a round trip to etcd. It holds what etcd holds and derives nothing;
`fleetd.api.service` joins the maps into what the API shows.

Invariants:
* The maps change only in the watch callbacks, on the event loop: a reader that does not await
  sees one consistent set of maps.
* `placements` is `schedule` indexed by unit (the same `Placement` objects, kept in step), so a
  unit's machine is found without scanning machines. Empty inner maps are removed.
* `unit_names()` and `state_keys()` stay sorted at little cost: new keys are appended and merged
  into the sorted list on the next read (timsort merges a sorted run with a short tail in linear
  time), removed keys are cut out by bisection. A list request never sorts 100,000 names.
* `global_units` holds the units whose `[X-Fleet]` says `Global=true`.
* Each unit's mod revision is kept beside its record, and `unit_at` hands out both with the
  revision the units section has read to: what a write decides from and guards on, so a write
  costs no read when the view is current.
"""

from __future__ import annotations

import contextlib
from bisect import bisect_left
from typing import Generic, Protocol, Self, TypeVar

from fleetd.core.model import Machine, Placement
from fleetd.core.requirements import X_FLEET, parse_requirements
from fleetd.registry.client import EtcdClient, KeyValue
from fleetd.registry.codec import (
    UnitRecord,
    UnitStateRecord,
    decode_placement,
    decode_reasons,
    decode_state,
    decode_unit,
)
from fleetd.registry.keys import Keys
from fleetd.registry.machines import MachineDirectory
from fleetd.registry.mirror import Mirror
from fleetd.registry.units import UnitAt


class _Sortable(Protocol):
    def __lt__(self, other: Self, /) -> bool: ...


K = TypeVar("K", bound=_Sortable)


class SortedKeys(Generic[K]):
    """A map's keys in sorted order. Call `add` only for keys new to the map."""

    def __init__(self) -> None:
        self._sorted: list[K] = []
        self._pending: list[K] = []

    def add(self, key: K) -> None:
        self._pending.append(key)

    def discard(self, key: K) -> None:
        index = bisect_left(self._sorted, key)
        if index < len(self._sorted) and self._sorted[index] == key:
            del self._sorted[index]
        else:
            with contextlib.suppress(ValueError):
                self._pending.remove(key)

    def clear(self) -> None:
        self._sorted, self._pending = [], []

    def sorted(self) -> list[K]:
        """The keys in order; valid until the map next changes (do not hold it across an await)."""
        if self._pending:
            self._sorted += self._pending
            self._pending = []
            self._sorted.sort()
        return self._sorted


class ApiView(Mirror):
    """Everything the v1 API reads, kept by watches; see the module docstring."""

    def __init__(self, client: EtcdClient, keys: Keys) -> None:
        super().__init__(client)
        self._keys = keys
        self.units: dict[str, UnitRecord] = {}
        self._unit_revisions: dict[str, int] = {}  # unit -> mod revision of units/<unit>
        self.global_units: set[str] = set()
        self.schedule: dict[str, dict[str, Placement]] = {}  # machine -> unit -> placement
        self.placements: dict[str, dict[str, Placement]] = {}  # unit -> machine -> placement
        self.states: dict[str, dict[str, UnitStateRecord]] = {}  # unit -> machine -> state
        self.unplaceable: dict[str, tuple[str, ...]] = {}
        self._unit_order: SortedKeys[str] = SortedKeys()
        self._state_order: SortedKeys[tuple[str, str]] = SortedKeys()
        self.add_section(keys.units, self._put_unit, self._delete_unit, self._clear_units)
        self.directory = MachineDirectory(self, keys)
        self.machines: dict[str, Machine] = self.directory.merged
        self.add_section(
            keys.schedule, self._put_placement, self._delete_placement, self._clear_schedule
        )
        self.add_section(keys.states, self._put_state, self._delete_state, self._clear_states)
        self.add_section(
            keys.unplaceable, self._put_reasons, self._delete_reasons, self.unplaceable.clear
        )

    def unit_names(self) -> list[str]:
        """Every unit name, sorted."""
        return self._unit_order.sorted()

    def state_keys(self) -> list[tuple[str, str]]:
        """Every published state as (unit, machine), sorted."""
        return self._state_order.sorted()

    def unit_at(self, name: str) -> UnitAt:
        """The unit as this view holds it (None: absent), with its revisions."""
        return UnitAt(
            self.units.get(name), self._unit_revisions.get(name, 0), self.revision(self._keys.units)
        )

    # ---- units

    def _put_unit(self, kv: KeyValue) -> None:
        name = self._keys.name_under(self._keys.units, kv.key)
        record = decode_unit(kv.key, kv.value)
        if name not in self.units:
            self._unit_order.add(name)
        self.units[name] = record
        self._unit_revisions[name] = kv.mod_revision
        is_global = any(o.section == X_FLEET for o in record.options) and (
            parse_requirements(name, record.unit_file).is_global
        )
        if is_global:
            self.global_units.add(name)
        else:
            self.global_units.discard(name)

    def _delete_unit(self, key: str) -> None:
        name = self._keys.name_under(self._keys.units, key)
        if self.units.pop(name, None) is not None:
            self._unit_order.discard(name)
        self._unit_revisions.pop(name, None)
        self.global_units.discard(name)

    def _clear_units(self) -> None:
        self.units.clear()
        self._unit_revisions.clear()
        self.global_units.clear()
        self._unit_order.clear()

    # ---- schedule

    def _put_placement(self, kv: KeyValue) -> None:
        machine, unit = self._keys.split_pair(self._keys.schedule, kv.key)
        placement = decode_placement(kv.key, kv.value, machine, unit)
        self.schedule.setdefault(machine, {})[unit] = placement
        self.placements.setdefault(unit, {})[machine] = placement

    def _delete_placement(self, key: str) -> None:
        machine, unit = self._keys.split_pair(self._keys.schedule, key)
        _drop(self.schedule, machine, unit)
        _drop(self.placements, unit, machine)

    def _clear_schedule(self) -> None:
        self.schedule.clear()
        self.placements.clear()

    # ---- states

    def _put_state(self, kv: KeyValue) -> None:
        machine, unit = self._keys.split_pair(self._keys.states, kv.key)
        state = decode_state(kv.key, kv.value)
        on_machines = self.states.setdefault(unit, {})
        if machine not in on_machines:
            self._state_order.add((unit, machine))
        on_machines[machine] = state

    def _delete_state(self, key: str) -> None:
        machine, unit = self._keys.split_pair(self._keys.states, key)
        if _drop(self.states, unit, machine):
            self._state_order.discard((unit, machine))

    def _clear_states(self) -> None:
        self.states.clear()
        self._state_order.clear()

    # ---- reasons

    def _put_reasons(self, kv: KeyValue) -> None:
        name = self._keys.name_under(self._keys.unplaceable, kv.key)
        self.unplaceable[name] = decode_reasons(kv.key, kv.value)

    def _delete_reasons(self, key: str) -> None:
        self.unplaceable.pop(self._keys.name_under(self._keys.unplaceable, key), None)


V = TypeVar("V")


def _drop(nested: dict[str, dict[str, V]], outer: str, inner: str) -> bool:
    """Remove `nested[outer][inner]` and an emptied `nested[outer]`; True if it was there."""
    entries = nested.get(outer)
    if entries is None or inner not in entries:
        return False
    del entries[inner]
    if not entries:
        del nested[outer]
    return True
