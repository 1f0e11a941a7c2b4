"""The engine's planner: from one cluster snapshot to the schedule writes that fix it.

`plan_engine(snapshot)` is pure and deterministic. It builds the schedule the cluster should have
and returns only the differences from the schedule it has, so planning again after the tasks are
applied returns nothing. The order of work:

1. drop placements on machines that went away (unless asked to hold them, below), of destroyed
   units and of inactive units;
2. place global units on every machine whose metadata they match (an alphabetically earlier
   global unit wins a conflict between two of them);
3. keep each existing placement that still fits, in `MachineOf` order then by name (so of two
   conflicting units the earlier name stays); a unit never moves for balance;
4. move a unit away from a machine where another unit `Replaces` it (the replaced one moves,
   never the replacer, whatever the order), together with its `MachineOf` followers;
5. place every unplaced unit, `MachineOf` targets before their followers, on the least-loaded
   machine that can run it; a unit that nothing can run gets its reasons stored instead.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping

from fleetd.core.engine_tasks import (
    ClearUnplaceable,
    EngineTask,
    MarkUnplaceable,
    Schedule,
    Unschedule,
)
from fleetd.core.model import ClusterSnapshot, Placement, Unit
from fleetd.core.scheduler import Board, explain, replaces_one_way
from fleetd.core.states import JobState


def _dependencies(units: Mapping[str, Unit]) -> dict[str, list[tuple[str, str]]]:
    """For each unit, the units that must be placed before it, with the kind of each edge.

    A `MachineOf` follower waits for its target; a unit that another `Replaces` waits for its
    replacer, so it can steer clear of the replacer's machine instead of being displaced later.
    """
    deps: dict[str, list[tuple[str, str]]] = {
        name: [(p, "MachineOf") for p in unit.requirements.machine_of if p in units]
        for name, unit in units.items()
    }
    replacers = [u for u in units.values() if u.requirements.replaces]
    for replacer in replacers:
        for name, unit in units.items():
            if name != replacer.name and replaces_one_way(replacer, unit):
                deps[name].append((replacer.name, "Replaces"))
    return deps


def placement_order(units: Mapping[str, Unit]) -> tuple[dict[str, int], dict[str, str]]:
    """Each unit's depth in the placement order, and the units caught in a cycle, with reasons.

    A unit's depth is one more than the deepest unit it waits for (`_dependencies`), so placing
    in depth order places `MachineOf` targets before their followers and replacers before the
    units they replace. Units in a cycle, or waiting on one, can never be placed.
    """
    deps = _dependencies(units)
    depths: dict[str, int] = {}
    cycles: dict[str, str] = {}
    for root in sorted(units):
        if root in depths or root in cycles:
            continue
        path: list[str] = []
        stack: list[tuple[str, int]] = [(root, 0)]
        while stack:
            name, index = stack.pop()
            edges = deps[name]
            if index == 0:
                path.append(name)
            if index < len(edges):
                stack.append((name, index + 1))
                peer = edges[index][0]
                if peer in path:
                    loop = path[path.index(peer) :]
                    kinds = sorted({k for n in loop for p, k in deps[n] if p in loop})
                    text = f"{' and '.join(kinds)} cycle: " + " -> ".join([*loop, peer])
                    for member in loop:
                        cycles.setdefault(member, text)
                elif peer not in depths and peer not in cycles:
                    stack.append((peer, 0))
                continue
            path.pop()
            blocked = [p for p, _ in edges if p in cycles]
            if name in cycles:
                continue
            if blocked:
                cycles[name] = f"waits for {blocked[0]}, which can never be placed"
            else:
                depths[name] = 1 + max((depths[p] for p, _ in edges), default=-1)
    return depths, cycles


class _Planner:
    """One planning pass: the board being built and the reason for each change."""

    def __init__(self, snapshot: ClusterSnapshot, *, hold_departed: bool = False) -> None:
        self.snapshot = snapshot
        self.hold_departed = hold_departed
        self.held: set[tuple[str, str]] = set()  # (machine, unit) kept while its machine is away
        self.held_units: set[str] = set()
        self.units = snapshot.units
        self.board = Board(snapshot.machines)
        self.depths, self.cycles = placement_order(self.units)
        self.why_gone: dict[tuple[str, str], str] = {}
        self.why_placed: dict[str, str] = {}
        self.displaced: set[str] = set()
        self.pending: list[tuple[int, str]] = []
        self.failed: set[str] = set()
        self.unplaceable: dict[str, tuple[str, ...]] = {}

    def run(self) -> list[EngineTask]:
        existing = self._drop_dead_placements()
        self._place_globals()
        self._keep_existing(existing)
        self._move_replaced()
        self._place_pending()
        self._explain_unplaced()
        return self._diff()

    def _wanted(self, unit: Unit) -> bool:
        return unit.desired is not JobState.INACTIVE

    def _drop_dead_placements(self) -> dict[str, list[str]]:
        existing: dict[str, list[str]] = {}
        for machine in sorted(self.snapshot.schedule):
            for name in sorted(self.snapshot.schedule[machine]):
                unit = self.units.get(name)
                if machine not in self.snapshot.machines:
                    if self.hold_departed and unit is not None and self._wanted(unit):
                        self.held.add((machine, name))
                        if not unit.requirements.is_global:
                            self.held_units.add(name)
                        continue
                    self.why_gone[machine, name] = f"machine {machine} went away"
                elif unit is None:
                    self.why_gone[machine, name] = "unit destroyed"
                elif not self._wanted(unit):
                    self.why_gone[machine, name] = "desired state is inactive"
                elif not unit.requirements.is_global:
                    existing.setdefault(name, []).append(machine)
        return existing

    def _place_globals(self) -> None:
        for name in sorted(self.units):
            unit = self.units[name]
            if not unit.requirements.is_global or not self._wanted(unit):
                continue
            for machine in sorted(self.snapshot.machines):
                found = self.board.rejection(unit, machine)
                if found is None:
                    self.board.place(unit, machine)
                else:
                    self.why_gone[machine, name] = f"no longer fits: {found.check} {found.detail}"

    def _order(self, name: str) -> tuple[int, str]:
        return (self.depths.get(name, 0), name)

    def _keep_existing(self, existing: dict[str, list[str]]) -> None:
        for name in sorted(existing, key=self._order):
            unit = self.units[name]
            for machine in existing[name]:
                if self.board.machines_of(name):
                    self.why_gone[machine, name] = "placed on more than one machine"
                    continue
                found = self.board.rejection(unit, machine)
                if found is None:
                    self.board.place(unit, machine)
                else:
                    why = f"no longer fits: {found.check} {found.detail}"
                    self.why_gone[machine, name] = why
                    self.why_placed[name] = f"moved: {why} on {machine}"

    def _move_replaced(self) -> None:
        for machine in sorted(self.board.units_on):
            if not self.board.replacing_on[machine]:
                continue
            here = self.board.units_on[machine]
            for name in sorted(here):
                unit = here.get(name)  # None once displaced along with an earlier unit
                replacer = None if unit is None else self.board.replaced_by(unit, machine)
                if replacer is not None:
                    self._displace(name, machine, f"replaced by {replacer}")

    def _displace(self, name: str, machine: str, reason: str) -> None:
        """Take `name` (and its `MachineOf` followers) off `machine` and queue it again."""
        self.board.remove(name, machine)
        self.why_gone[machine, name] = reason
        self.why_placed[name] = f"moved: {reason} on {machine}"
        self.displaced.add(name)
        heapq.heappush(self.pending, self._order(name))
        for retry in self.failed:  # the room it leaves may be what they were waiting for
            heapq.heappush(self.pending, self._order(retry))
        self.failed.clear()
        followers = [
            f for f, u in self.board.units_on[machine].items() if name in u.requirements.machine_of
        ]
        for follower in sorted(followers):
            self._displace(follower, machine, f"follows {name}")

    def _place_pending(self) -> None:
        for name, unit in self.units.items():
            if unit.requirements.is_global or not self._wanted(unit):
                continue
            if name in self.held_units:
                continue  # placed on a machine that is away for now: not placed twice
            if name not in self.cycles and not self.board.machines_of(name):
                heapq.heappush(self.pending, self._order(name))
        while self.pending:
            _, name = heapq.heappop(self.pending)
            unit = self.units[name]
            if self.board.machines_of(name):
                continue  # queued twice: already placed
            machine = self.board.pick(unit)
            if machine is None:
                self.failed.add(name)
                continue
            self.board.place(unit, machine)
            self.why_placed.setdefault(name, "placed on the least-loaded machine that can run it")
            here = self.board.units_on[machine]
            for other in sorted(here):
                victim = here.get(other)  # None once displaced as a follower of an earlier victim
                if victim and other not in self.displaced and replaces_one_way(unit, victim):
                    self._displace(other, machine, f"replaced by {name}")

    def _explain_unplaced(self) -> None:
        """Reasons for every wanted unit left unplaced, from the final board."""
        for name in sorted(self.units):
            unit = self.units[name]
            if not self._wanted(unit) or self.board.machines_of(name) or name in self.held_units:
                continue
            if name in self.cycles and not unit.requirements.is_global:
                self.unplaceable[name] = (self.cycles[name],)
            else:
                self.unplaceable[name] = explain(unit, self.board)

    def _diff(self) -> list[EngineTask]:
        current = self.snapshot.schedule
        removals: list[EngineTask] = []
        writes: list[EngineTask] = []
        for machine in sorted(current):
            wanted = self.board.units_on.get(machine, {})
            for name in sorted(current[machine]):
                if name not in wanted and (machine, name) not in self.held:
                    reason = self.why_gone.get((machine, name), "no longer scheduled here")
                    removals.append(Unschedule(name, machine, reason))
        for machine in sorted(self.board.units_on):
            have = current.get(machine, {})
            for name, unit in sorted(self.board.units_on[machine].items()):
                change = self._change(have.get(name), unit)
                if change is not None:
                    writes.append(Schedule(name, machine, unit.hash, unit.desired, change))
        return removals + writes + self._diff_unplaceable()

    def _change(self, placed: Placement | None, unit: Unit) -> str | None:
        return schedule_change(placed, unit, self.why_placed)

    def _diff_unplaceable(self) -> list[EngineTask]:
        stored = self.snapshot.unplaceable
        tasks: list[EngineTask] = []
        for name in sorted(stored.keys() | self.unplaceable.keys()):
            task = unplaceable_change(
                name, self.units.get(name), stored.get(name), self.unplaceable.get(name)
            )
            if task is not None:
                tasks.append(task)
        return tasks


def schedule_change(
    placed: Placement | None, unit: Unit, why_placed: Mapping[str, str]
) -> str | None:
    """Why the schedule entry `placed` must be (re)written for `unit`; None when it need not."""
    if placed is None:
        if unit.requirements.is_global:
            return "global unit: machine matches"
        return why_placed.get(unit.name, "placed")
    if placed.hash != unit.hash:
        return "unit file changed"
    if placed.desired != unit.desired:
        return f"desired state {placed.desired} -> {unit.desired}"
    return None


def unplaceable_change(
    name: str, unit: Unit | None, stored: tuple[str, ...] | None, reasons: tuple[str, ...] | None
) -> EngineTask | None:
    """The task that turns the `stored` reasons of `name` into `reasons` (None: not unplaceable)."""
    if reasons is None:
        if stored is None:
            return None
        return ClearUnplaceable(
            name, "unit destroyed" if unit is None else "placed or no longer wanted"
        )
    return None if stored == reasons else MarkUnplaceable(name, reasons)


def plan_engine_full(
    snapshot: ClusterSnapshot, *, hold_departed: bool = False
) -> tuple[list[EngineTask], Board]:
    """`plan_engine`, and the board as it stands once the tasks are applied.

    The engine keeps that board for the incremental planner (`engine_delta`).
    """
    planner = _Planner(snapshot, hold_departed=hold_departed)
    return planner.run(), planner.board


def plan_engine(snapshot: ClusterSnapshot, *, hold_departed: bool = False) -> list[EngineTask]:
    """The schedule writes that bring `snapshot` to the placements its units ask for.

    With `hold_departed`, placements on machines that are not in the snapshot are kept as they
    are and their units are not placed elsewhere: the engine asks for this right after it comes
    to lead, when machines that vanished during an etcd outage are still re-registering.
    """
    return _Planner(snapshot, hold_departed=hold_departed).run()
