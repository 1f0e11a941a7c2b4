"""The engine's cluster view: units, machines, schedule and stored reasons, fed by etcd watches.

A `Mirror` of `units/`, `machines/`, `metadata/`, `schedule/` and `unplaceable/`; the agents'
`states/` are not watched here, so their churn never wakes the engine. A machine's metadata is its
record's, under the values set through the API (`metadata/<machine>/<key>`, "" removes a key):
`fleetd.registry.machines.MachineDirectory` does that merge for every view.

`snapshot()` hands the planner the live maps without copying. That is safe because planning is
synchronous: no watch event can be applied between taking the snapshot and the planner returning.
A caller must not hold a snapshot across an `await`.

`wait_for(revisions)` lets the engine wait until its own writes have come back through the watches,
so the next plan never works from a view that predates them (which could place a unit twice).

`take_changes()` hands the incremental planner every name that changed since the last call (and
whether a section was read again whole), then starts counting afresh; take it together with the
snapshot, without awaiting in between.
"""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType
from typing import Any

from fleetd.core.engine_delta import Changes
from fleetd.core.model import ClusterSnapshot, Machine, Placement, Unit
from fleetd.registry.client import EtcdClient, KeyValue
from fleetd.registry.codec import decode_placement, decode_reasons, decode_unit
from fleetd.registry.keys import Keys
from fleetd.registry.machines import MachineDirectory
from fleetd.registry.mirror import Mirror


class ClusterView(Mirror):
    """Watch-fed state of the cluster, as the engine plans from it."""

    def __init__(
        self, client: EtcdClient, keys: Keys, on_change: Callable[[], None] = lambda: None
    ) -> None:
        super().__init__(client, on_change)
        self._keys = keys
        self.units: dict[str, Unit] = {}
        self.schedule: dict[str, dict[str, Placement]] = {}
        self.unplaceable: dict[str, tuple[str, ...]] = {}
        self._changed_units: set[str] = set()
        self._changed_machines: set[str] = set()
        self._changed_schedule: set[tuple[str, str]] = set()
        self._changed_reasons: set[str] = set()
        self._reset = True
        self.add_section(keys.units, self._put_unit, self._delete_unit, self._clear(self.units))
        self.machines: dict[str, Machine] = MachineDirectory(
            self, keys, self._machine_changed
        ).merged
        self.add_section(
            keys.schedule,
            self._put_placement,
            self._delete_placement,
            self._clear(self.schedule),
        )
        self.add_section(
            keys.unplaceable,
            self._put_reasons,
            self._delete_reasons,
            self._clear(self.unplaceable),
        )

    def snapshot(self) -> ClusterSnapshot:
        """The live view, read-only; valid until the caller next awaits."""
        return ClusterSnapshot(
            units=MappingProxyType(self.units),
            machines=MappingProxyType(self.machines),
            schedule=MappingProxyType(self.schedule),
            unplaceable=MappingProxyType(self.unplaceable),
        )

    def copy_snapshot(self) -> ClusterSnapshot:
        """A copy of the view that later watch events leave alone (for planning off the loop)."""
        return ClusterSnapshot(
            units=dict(self.units),
            machines=dict(self.machines),
            schedule={machine: dict(placed) for machine, placed in self.schedule.items()},
            unplaceable=dict(self.unplaceable),
        )

    def take_changes(self) -> Changes:
        """What changed since the last call; the next call starts from here."""
        changes = Changes(
            units=frozenset(self._changed_units),
            machines=frozenset(self._changed_machines),
            schedule=frozenset(self._changed_schedule),
            unplaceable=frozenset(self._changed_reasons),
            reset=self._reset,
        )
        self._changed_units.clear()
        self._changed_machines.clear()
        self._changed_schedule.clear()
        self._changed_reasons.clear()
        self._reset = False
        return changes

    # ---- sections

    def _clear(self, mapping: dict[str, Any]) -> Callable[[], None]:
        def clear() -> None:
            mapping.clear()
            self._reset = True

        return clear

    def _machine_changed(self, machine: str | None) -> None:
        if machine is None:
            self._reset = True
        else:
            self._changed_machines.add(machine)

    def _put_unit(self, kv: KeyValue) -> None:
        name = self._keys.name_under(self._keys.units, kv.key)
        self.units[name] = decode_unit(kv.key, kv.value).to_unit()
        self._changed_units.add(name)

    def _delete_unit(self, key: str) -> None:
        name = self._keys.name_under(self._keys.units, key)
        self.units.pop(name, None)
        self._changed_units.add(name)

    def _put_placement(self, kv: KeyValue) -> None:
        machine, unit = self._keys.split_pair(self._keys.schedule, kv.key)
        placement = decode_placement(kv.key, kv.value, machine, unit)
        self.schedule.setdefault(machine, {})[unit] = placement
        self._changed_schedule.add((machine, unit))

    def _delete_placement(self, key: str) -> None:
        machine, unit = self._keys.split_pair(self._keys.schedule, key)
        self._changed_schedule.add((machine, unit))
        placed = self.schedule.get(machine)
        if placed is not None:
            placed.pop(unit, None)
            if not placed:
                del self.schedule[machine]

    def _put_reasons(self, kv: KeyValue) -> None:
        name = self._keys.name_under(self._keys.unplaceable, kv.key)
        self.unplaceable[name] = decode_reasons(kv.key, kv.value)
        self._changed_reasons.add(name)

    def _delete_reasons(self, key: str) -> None:
        name = self._keys.name_under(self._keys.unplaceable, key)
        self.unplaceable.pop(name, None)
        self._changed_reasons.add(name)
