"""Placement: a chain of feasibility checkers and one least-loaded ranker.

`Board` is the planner's working copy of who runs where during one pass. It is private to one
planning call (built from a snapshot, never shared), so the planner stays pure.

A unit may run on a machine when every checker passes, in this order: `MachineID`,
`MachineMetadata`, `MachineOf`, `Conflicts` (both ways), and not being replaced by a unit already
there. Among the machines that pass, the least loaded wins (fewest placed units, then machine id):
deterministic, as no map order or shuffle decides anything. When none passes, `explain` turns
every machine's first rejection into reasons a person can act on ("no machine has metadata
role=db").

Scale: a unit with no static requirement, or with one single-valued `MachineMetadata` pair, takes
the least-loaded machine from a heap (all machines, or those with that pair), so placing it costs
O(log machines). Units pinned by `MachineID`, following a `MachineOf` peer or asking for several
metadata values have few candidates, found through indexes and ranked directly.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from fleetd.core.model import Machine, Unit

_K = TypeVar("_K")


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why one machine cannot take one unit: which check failed, and on what."""

    check: str
    detail: str


def machine_id_matches(wanted: str, machine: Machine) -> bool:
    """`MachineID=` accepts the full id or its 8-character short form."""
    return wanted in (machine.id, machine.short_id)


class Board:
    """Who runs where while a plan is computed, with the indexes the ranker needs.

    A full plan builds one from the machines alone; the engine then keeps it, and the
    incremental planner (`engine_delta`) moves it along with each change, adding and removing
    machines as they come and go. The board holds its own copy of the machine map.
    """

    def __init__(self, machines: Mapping[str, Machine]) -> None:
        self.machines: dict[str, Machine] = {}
        self.units_on: dict[str, dict[str, Unit]] = {}
        # the few units that carry Conflicts or Replaces, per machine: most units carry neither,
        # so the checks for them look here instead of at every unit on the machine
        self.conflicting_on: dict[str, dict[str, Unit]] = {}
        self.replacing_on: dict[str, dict[str, Unit]] = {}
        self.where: dict[str, set[str]] = {}
        self._by_meta: dict[tuple[str, str], set[str]] = {}
        self._by_short_id: dict[str, set[str]] = {}
        # (load, machine) heaps with lazy stale entries: one over every machine (key None) and
        # one per metadata pair, so a unit asking for `role=db` pops only db machines
        self._heaps: dict[tuple[str, str] | None, list[tuple[int, str]]] = {None: []}
        for machine in sorted(machines.values(), key=lambda m: m.id):
            self._add(machine)
        for heap in self._heaps.values():
            heapq.heapify(heap)

    def _add(self, machine: Machine) -> None:
        self.machines[machine.id] = machine
        self.units_on[machine.id] = {}
        self.conflicting_on[machine.id] = {}
        self.replacing_on[machine.id] = {}
        self._by_short_id.setdefault(machine.short_id, set()).add(machine.id)
        self._heaps[None].append((0, machine.id))
        for pair in machine.metadata.items():
            self._by_meta.setdefault(pair, set()).add(machine.id)
            self._heaps.setdefault(pair, []).append((0, machine.id))

    def add_machine(self, machine: Machine) -> None:
        """A machine joined: it is empty and may take units."""
        self._add(machine)
        for heap in (self._heaps[None], *(self._heaps[p] for p in machine.metadata.items())):
            heapq.heappush(heap, heap.pop())  # restore the heap order after `_add`'s append

    def remove_machine(self, machine_id: str) -> None:
        """A machine left; its units must have been removed first."""
        machine = self.machines.pop(machine_id)
        assert not self.units_on[machine_id], f"machine {machine_id} still has units"
        del self.units_on[machine_id], self.conflicting_on[machine_id]
        del self.replacing_on[machine_id]
        self._discard(self._by_short_id, machine.short_id, machine_id)
        for pair in machine.metadata.items():
            self._discard(self._by_meta, pair, machine_id)
        # its heap entries go stale: `_pick_from_heap` skips machines that are not here

    @staticmethod
    def _discard(index: dict[_K, set[str]], key: _K, machine_id: str) -> None:
        members = index.get(key)
        if members is not None:
            members.discard(machine_id)
            if not members:
                del index[key]

    def replace_unit(self, unit: Unit) -> None:
        """Swap in a new version of a placed unit whose requirements are unchanged."""
        for machine in self.where.get(unit.name, ()):
            self.units_on[machine][unit.name] = unit
            if unit.name in self.conflicting_on[machine]:
                self.conflicting_on[machine][unit.name] = unit
            if unit.name in self.replacing_on[machine]:
                self.replacing_on[machine][unit.name] = unit

    def load(self, machine: str) -> int:
        """How many units are placed on `machine`."""
        return len(self.units_on[machine])

    def machines_of(self, unit: str) -> set[str]:
        """The machines `unit` is placed on (one, or several for a global unit)."""
        return self.where.get(unit, set())

    def place(self, unit: Unit, machine: str) -> None:
        """Record `unit` on `machine`."""
        self.units_on[machine][unit.name] = unit
        if unit.requirements.conflicts:
            self.conflicting_on[machine][unit.name] = unit
        if unit.requirements.replaces:
            self.replacing_on[machine][unit.name] = unit
        self.where.setdefault(unit.name, set()).add(machine)
        self._push(machine)

    def remove(self, unit: str, machine: str) -> None:
        """Forget `unit` on `machine`."""
        del self.units_on[machine][unit]
        self.conflicting_on[machine].pop(unit, None)
        self.replacing_on[machine].pop(unit, None)
        placed = self.where[unit]
        placed.discard(machine)
        if not placed:
            del self.where[unit]
        self._push(machine)

    def _push(self, machine: str) -> None:
        """Record `machine`'s new load in every heap it belongs to."""
        entry = (self.load(machine), machine)
        for key in (None, *self.machines[machine].metadata.items()):
            heap = self._heaps[key]
            heapq.heappush(heap, entry)
            if len(heap) > 4 * len(self._members(key)) + 64:
                self._compact(key)

    def _members(self, key: tuple[str, str] | None) -> Collection[str]:
        """The machines one heap ranks: all of them, or those with one metadata pair."""
        return self.machines.keys() if key is None else self._by_meta.get(key, set())

    def _compact(self, key: tuple[str, str] | None) -> None:
        """Rebuild one heap from the current loads, dropping its stale entries (a kept board
        pushes one entry per change, so without this its heaps would only grow)."""
        heap = [(self.load(m), m) for m in self._members(key)]
        heapq.heapify(heap)
        self._heaps[key] = heap

    def replaced_by(self, unit: Unit, machine: str) -> str | None:
        """The first (by name) unit on `machine` that replaces `unit`, if any."""
        found = [
            other.name
            for other in self.replacing_on[machine].values()
            if other.name != unit.name and replaces_one_way(other, unit)
        ]
        return min(found) if found else None

    def rejection(self, unit: Unit, machine: str) -> Rejection | None:
        """The first checker that refuses `unit` on `machine`, or None when it may run there."""
        for check in CHECKERS:
            found = check(unit, self.machines[machine], self)
            if found is not None:
                return found
        return None

    def pick(self, unit: Unit) -> str | None:
        """The least-loaded machine that can run `unit`, or None."""
        req = unit.requirements
        if req.machine_id is None and not req.machine_of:
            if not req.metadata:
                return self._pick_from_heap(unit, self._heaps[None])
            if len(req.metadata) == 1 and len(req.metadata[0][1]) == 1:
                key, values = req.metadata[0]
                (value,) = values
                return self._pick_from_heap(unit, self._heaps.get((key, value), []))
        narrowed = self._narrow(unit)
        for machine in sorted(narrowed, key=lambda m: (self.load(m), m)):
            if self.rejection(unit, machine) is None:
                return machine
        return None

    def _pick_from_heap(self, unit: Unit, heap: list[tuple[int, str]]) -> str | None:
        seen: list[str] = []
        found: str | None = None
        while heap:
            load, machine = heapq.heappop(heap)
            if machine not in self.units_on or load != self.load(machine) or machine in seen:
                continue  # a stale entry: the machine left, or its load changed since the push
            seen.append(machine)
            if self.rejection(unit, machine) is None:
                found = machine
                break
        for machine in seen:
            heapq.heappush(heap, (self.load(machine), machine))
        return found

    def _narrow(self, unit: Unit) -> set[str]:
        """The machines that the unit's static requirements allow."""
        req = unit.requirements
        narrowed: set[str] | None = None
        if req.machine_id is not None:
            wanted = req.machine_id
            narrowed = {wanted} if wanted in self.machines else set()
            narrowed |= self._by_short_id.get(wanted, set())
        for key, values in req.metadata:
            allowed: set[str] = set()
            for value in values:
                allowed |= self._by_meta.get((key, value), set())
            narrowed = allowed if narrowed is None else narrowed & allowed
        for peer in req.machine_of:
            peers_at = self.machines_of(peer)
            narrowed = set(peers_at) if narrowed is None else narrowed & peers_at
        return set(self.machines) if narrowed is None else narrowed


def _check_machine_id(unit: Unit, machine: Machine, board: Board) -> Rejection | None:
    wanted = unit.requirements.machine_id
    if wanted is None or machine_id_matches(wanted, machine):
        return None
    return Rejection("machine_id", wanted)


def _check_metadata(unit: Unit, machine: Machine, board: Board) -> Rejection | None:
    for key, values in unit.requirements.metadata:
        if machine.metadata.get(key) not in values:
            return Rejection("metadata", " or ".join(f"{key}={v}" for v in sorted(values)))
    return None


def _check_machine_of(unit: Unit, machine: Machine, board: Board) -> Rejection | None:
    for peer in unit.requirements.machine_of:
        if machine.id not in board.machines_of(peer):
            return Rejection("machine_of", peer)
    return None


def _check_conflicts(unit: Unit, machine: Machine, board: Board) -> Rejection | None:
    mine = unit.requirements
    others = board.units_on if mine.conflicts else board.conflicting_on
    found = [
        other.name
        for other in others[machine.id].values()
        if other.name != unit.name
        and mine.conflicts_with(unit.name, other.name, other.requirements)
    ]
    return Rejection("conflicts", min(found)) if found else None


def replaces_one_way(replacer: Unit, replaced: Unit) -> bool:
    """`replacer` displaces `replaced`.

    Mutual replacement is ignored, as in fleet, and a global unit is never displaced: it runs on
    every machine that matches it.
    """
    return (
        replacer.requirements.replaces_unit(replaced.name)
        and not replaced.requirements.is_global
        and not replaced.requirements.replaces_unit(replacer.name)
    )


def _check_replaced(unit: Unit, machine: Machine, board: Board) -> Rejection | None:
    replacer = board.replaced_by(unit, machine.id)
    return None if replacer is None else Rejection("replaced", replacer)


Checker = Callable[[Unit, Machine, Board], Rejection | None]
CHECKERS: tuple[Checker, ...] = (
    _check_machine_id,
    _check_metadata,
    _check_machine_of,
    _check_conflicts,
    _check_replaced,
)


def _names(machines: Iterable[str]) -> str:
    ordered = sorted(machines)
    shown = ", ".join(m[:8] for m in ordered[:3])
    return shown if len(ordered) <= 3 else f"{shown} and {len(ordered) - 3} more"


def explain(unit: Unit, board: Board) -> tuple[str, ...]:
    """Every reason no machine can take `unit`, worded for `fleetctl status`."""
    total = len(board.machines)
    if total == 0:
        return ("no machines are available",)
    groups: dict[Rejection, list[str]] = {}
    for machine in sorted(board.machines):
        found = board.rejection(unit, machine)
        if found is not None:
            groups.setdefault(found, []).append(machine)
    reasons: list[str] = []
    for rejection, machines in sorted(groups.items(), key=lambda kv: (kv[0].check, kv[0].detail)):
        everywhere = len(machines) == total
        detail = rejection.detail
        match rejection.check:
            case "machine_id" if everywhere:
                reasons.append(f"no machine has id {detail}")
            case "machine_of" if not board.machines_of(detail):
                reasons.append(f"MachineOf peer {detail} is not placed on any machine")
            case "metadata":
                if everywhere:
                    reasons.append(f"no machine has metadata {detail}")
                else:
                    reasons.append(f"{len(machines)} of {total} machines lack metadata {detail}")
            case "conflicts":
                where = "every machine" if everywhere else _names(machines)
                reasons.append(f"conflicts with {detail} on {where}")
            case "replaced":
                reasons.append(f"replaced by {detail} on {_names(machines)}")
            case _:
                pass  # a pin or a peer elsewhere: the machine it points at explains itself
    return tuple(reasons) or ("no machine can run it",)
