"""The engine's incremental planner: a pass that costs what changed, not what the cluster holds.

A full plan (`engine_plan.plan_engine`) rebuilds the whole board every pass: seconds at 100,000
units. `plan_engine_delta(snapshot, state, changes)` gives the same tasks (property-tested
against the full planner) from the board the engine kept after its last plan (`PlanState`) and
the names the view saw change since (`Changes`). It works through the full planner's steps for
the affected units only:

1. machines that left: their placements go ("machine ... went away") and their units wait to be
   placed again; machines that joined get every global unit that fits them;
2. changed units: a destroyed or inactive unit leaves its machine; a new version whose
   requirements are unchanged stays where it is (its entry is rewritten if the hash or desired
   state moved); one whose requirements changed stays only if it still fits;
3. `MachineOf` followers of a unit that left their machine leave too, deepest last;
4. the waiting units are placed in the full planner's order (`MachineOf` depth, then name), on
   the least-loaded machine that can run them; units stored as unplaceable join them whenever
   something happened that could change their fate (a machine came or went, a unit left a
   machine, or a unit placed now is named in somebody's `Conflicts` or `MachineOf`), and their
   reasons are worked out again;
5. only the touched schedule entries and reasons are diffed against the snapshot.

It returns None, and the engine plans fully, whenever it cannot be sure of giving the full
planner's answer: a view that was re-read whole, a schedule or reason it did not write, a
machine whose metadata changed, a global unit or any unit with `Replaces` involved, a unit with
`Conflicts` or `MachineOf` whose requirements changed, or a `MachineOf` cycle. None also means
`state` is spent (half moved along): the engine drops it.

Pure as the other planners are (no I/O, no clock); the one difference is that it moves the
caller's `state` along with its plan instead of building a board of its own.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from fleetd.core.engine_plan import schedule_change, unplaceable_change
from fleetd.core.engine_tasks import (
    ClearUnplaceable,
    EngineTask,
    MarkUnplaceable,
    Schedule,
    Unschedule,
)
from fleetd.core.model import ClusterSnapshot, Unit
from fleetd.core.requirements import glob_match
from fleetd.core.scheduler import Board, explain
from fleetd.core.states import JobState

PLACED = "placed on the least-loaded machine that can run it"


@dataclass(frozen=True, slots=True)
class Changes:
    """What the view saw change since the engine last planned."""

    units: frozenset[str] = frozenset()
    machines: frozenset[str] = frozenset()
    schedule: frozenset[tuple[str, str]] = frozenset()  # (machine, unit)
    unplaceable: frozenset[str] = frozenset()
    reset: bool = False  # a section was read again whole: only a full plan will do


@dataclass(slots=True)
class PlanState:
    """What the engine keeps between passes: the board and indexes over the units it planned."""

    board: Board
    units: dict[str, Unit]
    unplaceable: dict[str, tuple[str, ...]]
    followers: dict[str, set[str]] = field(default_factory=dict)  # target -> its MachineOf units
    globals: set[str] = field(default_factory=set)
    replacers: set[str] = field(default_factory=set)
    conflict_globs: Counter[str] = field(default_factory=Counter)

    @classmethod
    def after(
        cls, snapshot: ClusterSnapshot, board: Board, tasks: Iterable[EngineTask]
    ) -> PlanState:
        """The state once `tasks` (planned fully from `snapshot` onto `board`) are written."""
        state = cls(board, {}, dict(snapshot.unplaceable))
        for unit in snapshot.units.values():
            state.index(unit)
        state.record(tasks)
        return state

    def index(self, unit: Unit) -> None:
        self.units[unit.name] = unit
        req = unit.requirements
        for peer in req.machine_of:
            self.followers.setdefault(peer, set()).add(unit.name)
        if req.is_global:
            self.globals.add(unit.name)
        if req.replaces:
            self.replacers.add(unit.name)
        self.conflict_globs.update(req.conflicts)

    def unindex(self, unit: Unit) -> None:
        del self.units[unit.name]
        req = unit.requirements
        for peer in req.machine_of:
            following = self.followers[peer]
            following.discard(unit.name)
            if not following:
                del self.followers[peer]
        self.globals.discard(unit.name)
        self.replacers.discard(unit.name)
        self.conflict_globs.subtract(req.conflicts)
        for glob in req.conflicts:
            if self.conflict_globs[glob] <= 0:
                del self.conflict_globs[glob]

    def record(self, tasks: Iterable[EngineTask]) -> None:
        """Keep the stored reasons in step with the tasks about to be written."""
        for task in tasks:
            match task:
                case MarkUnplaceable(unit, reasons):
                    self.unplaceable[unit] = reasons
                case ClearUnplaceable(unit, _):
                    self.unplaceable.pop(unit, None)
                case _:
                    pass


class _Fallback(Exception):
    """Only a full plan can tell."""


def _wanted(unit: Unit | None) -> bool:
    return unit is not None and unit.desired is not JobState.INACTIVE


class _Delta:
    """One incremental pass over `state`, recording what it touched."""

    def __init__(self, snapshot: ClusterSnapshot, state: PlanState, changes: Changes) -> None:
        self.snapshot = snapshot
        self.state = state
        self.board = state.board
        self.changes = changes
        self.touched: set[tuple[str, str]] = set()  # (machine, unit) entries that may change
        self.why_gone: dict[tuple[str, str], str] = {}
        self.why_placed: dict[str, str] = {}
        self.pending: set[str] = set()
        self.left: list[tuple[str, str]] = []  # (unit, machine) taken off a live machine
        self.considered: set[str] = set()  # units whose stored reasons may change
        self.unsettled = False  # something happened that may change an unplaceable unit's fate
        self.depths: dict[str, int] = {}

    def run(self) -> list[EngineTask]:
        self._check_echoes()
        added, removed = self._machines()
        changed = sorted(self.changes.units)
        self._check_units(changed)
        for machine in removed:
            self._machine_left(machine)
        for name in changed:
            self._unit_changed(name)
        self._followers_leave()
        for machine in added:
            self._machine_joined(machine)
        if added or removed:
            self.unsettled = True
            self.considered |= self.state.globals
        self._retry_unplaceable()
        failed = self._place_pending()
        return self._diff(failed)

    # ---- what the delta planner cannot reason about

    def _check_echoes(self) -> None:
        if self.changes.reset or self.state.replacers:
            raise _Fallback
        for machine, name in self.changes.schedule:
            placed = self.snapshot.schedule.get(machine, {}).get(name)
            unit = self.board.units_on.get(machine, {}).get(name)
            if placed is None and unit is None:
                continue
            if (
                placed is None
                or unit is None
                or (placed.hash, placed.desired)
                != (
                    unit.hash,
                    unit.desired,
                )
            ):
                raise _Fallback  # a schedule entry this engine did not write
        for name in self.changes.unplaceable:
            if self.snapshot.unplaceable.get(name) != self.state.unplaceable.get(name):
                raise _Fallback

    def _machines(self) -> tuple[list[str], list[str]]:
        added: list[str] = []
        removed: list[str] = []
        for machine in sorted(self.changes.machines):
            now = self.snapshot.machines.get(machine)
            before = self.board.machines.get(machine)
            if now is not None and before is not None:
                if dict(now.metadata) != dict(before.metadata):
                    raise _Fallback
            elif now is not None:
                added.append(machine)
            elif before is not None:
                removed.append(machine)
        return added, removed

    def _check_units(self, changed: list[str]) -> None:
        for name in changed:
            old, new = self.state.units.get(name), self.snapshot.units.get(name)
            for unit in (old, new):
                if unit is not None and (unit.requirements.is_global or unit.requirements.replaces):
                    raise _Fallback
            if old is not None and new is not None and old.requirements != new.requirements:
                for unit in (old, new):
                    if unit.requirements.conflicts or unit.requirements.machine_of:
                        raise _Fallback

    # ---- board moves

    def _take_off(self, name: str, machine: str, reason: str) -> None:
        self.board.remove(name, machine)
        self.touched.add((machine, name))
        self.why_gone[machine, name] = reason
        self.unsettled = True

    def _machine_left(self, machine: str) -> None:
        for name in sorted(self.board.units_on[machine]):
            self._take_off(name, machine, f"machine {machine} went away")
            unit = self.snapshot.units.get(name)
            if unit is not None and not unit.requirements.is_global and _wanted(unit):
                self.pending.add(name)
        for name in self.snapshot.schedule.get(machine, {}):
            self.touched.add((machine, name))
            self.why_gone.setdefault((machine, name), f"machine {machine} went away")
        self.board.remove_machine(machine)

    def _unit_changed(self, name: str) -> None:
        old, new = self.state.units.get(name), self.snapshot.units.get(name)
        if old is not None:
            self.state.unindex(old)
        if new is not None:
            self.state.index(new)
        self.considered.add(name)
        if self.state.unplaceable and self._relates_to_others(name, old, new):
            self.unsettled = True  # e.g. a destroyed unit ends a MachineOf cycle it was part of
        placed_on = sorted(self.board.machines_of(name))
        if new is None or not _wanted(new):
            reason = "unit destroyed" if new is None else "desired state is inactive"
            for machine in placed_on:
                self._take_off(name, machine, reason)
                self.left.append((name, machine))
            return
        if not placed_on:
            self.pending.add(name)
            return
        (machine,) = placed_on
        self.touched.add((machine, name))
        if old is not None and old.requirements == new.requirements:
            self.board.replace_unit(new)
            return
        self.board.remove(name, machine)
        found = self.board.rejection(new, machine)
        if found is None:
            self.board.place(new, machine)
            return
        why = f"no longer fits: {found.check} {found.detail}"
        self.why_gone[machine, name] = why
        self.why_placed[name] = f"moved: {why} on {machine}"
        self.unsettled = True
        self.left.append((name, machine))
        self.pending.add(name)

    def _relates_to_others(self, name: str, *versions: Unit | None) -> bool:
        """Whether a change of `name` may change another unit's fate, placed or not."""
        for unit in versions:
            if unit is not None and (unit.requirements.conflicts or unit.requirements.machine_of):
                return True
        if name in self.state.followers:
            return True
        return any(glob_match(glob, name) for glob in self.state.conflict_globs)

    def _followers_leave(self) -> None:
        """Followers whose `MachineOf` peer left their machine leave it too, shallowest first."""
        queue: list[tuple[int, str, str]] = []
        for name, machine in self.left:
            self._queue_followers(queue, name, machine)
        while queue:
            _, name, machine = heapq.heappop(queue)
            unit = self.board.units_on.get(machine, {}).get(name)
            if unit is None:
                continue
            found = self.board.rejection(unit, machine)
            if found is None:
                continue
            why = f"no longer fits: {found.check} {found.detail}"
            self._take_off(name, machine, why)
            self.why_placed[name] = f"moved: {why} on {machine}"
            self.considered.add(name)
            self.pending.add(name)
            self._queue_followers(queue, name, machine)

    def _queue_followers(self, queue: list[tuple[int, str, str]], name: str, machine: str) -> None:
        for follower in self.state.followers.get(name, ()):
            if machine in self.board.machines_of(follower):
                heapq.heappush(queue, (self._depth(follower), follower, machine))

    def _machine_joined(self, machine: str) -> None:
        self.board.add_machine(self.snapshot.machines[machine])
        for name in sorted(self.state.globals):
            unit = self.snapshot.units[name]
            if _wanted(unit) and self.board.rejection(unit, machine) is None:
                self.board.place(unit, machine)
                self.touched.add((machine, name))

    # ---- placing

    def _retry_unplaceable(self) -> None:
        stored = self.state.unplaceable
        if not stored:
            return
        if not self.unsettled:
            self.unsettled = any(self._named_by_others(name) for name in self.pending)
        if not self.unsettled:
            return
        self.considered |= stored.keys()
        for name in stored:
            unit = self.snapshot.units.get(name)
            if unit is not None and _wanted(unit) and not unit.requirements.is_global:
                self.pending.add(name)

    def _named_by_others(self, name: str) -> bool:
        """Whether placing `name` can change what another unit may do: it has or matches a
        `Conflicts` glob, or another unit follows it."""
        unit = self.snapshot.units[name]
        if unit.requirements.conflicts or unit.requirements.machine_of:
            return True
        if name in self.state.followers:
            return True
        return any(glob_match(glob, name) for glob in self.state.conflict_globs)

    def _depth(self, name: str, path: tuple[str, ...] = ()) -> int:
        """The full planner's placement depth (`MachineOf` only: no unit replaces another)."""
        known = self.depths.get(name)
        if known is not None:
            return known
        if name in path:
            raise _Fallback  # a MachineOf cycle: its reasons come from the full planner
        unit = self.snapshot.units.get(name)
        peers = [] if unit is None else unit.requirements.machine_of
        depth = 1 + max(
            (self._depth(p, (*path, name)) for p in peers if p in self.snapshot.units),
            default=-1,
        )
        self.depths[name] = depth
        return depth

    def _place_pending(self) -> set[str]:
        queue = [(self._depth(name), name) for name in self.pending]
        heapq.heapify(queue)
        failed: set[str] = set()
        while queue:
            _, name = heapq.heappop(queue)
            if self.board.machines_of(name):
                continue
            unit = self.snapshot.units[name]
            machine = self.board.pick(unit)
            if machine is None:
                failed.add(name)
                continue
            self.board.place(unit, machine)
            self.touched.add((machine, name))
            self.why_placed.setdefault(name, PLACED)
        self.considered |= self.pending
        return failed

    # ---- tasks

    def _diff(self, failed: set[str]) -> list[EngineTask]:
        schedule = self.snapshot.schedule
        removals: list[EngineTask] = []
        writes: list[EngineTask] = []
        for machine, name in sorted(self.touched):
            placed = schedule.get(machine, {}).get(name)
            unit = self.board.units_on.get(machine, {}).get(name)
            if unit is None:
                if placed is not None:
                    reason = self.why_gone.get((machine, name), "no longer scheduled here")
                    removals.append(Unschedule(name, machine, reason))
                continue
            change = schedule_change(placed, unit, self.why_placed)
            if change is not None:
                writes.append(Schedule(name, machine, unit.hash, unit.desired, change))
        tasks = removals + writes
        for name in sorted(self.considered):
            unit = self.snapshot.units.get(name)
            reasons = None
            if _wanted(unit) and not self.board.machines_of(name):
                assert unit is not None
                reasons = explain(unit, self.board)
            task = unplaceable_change(name, unit, self.snapshot.unplaceable.get(name), reasons)
            if task is not None:
                tasks.append(task)
        self.state.record(tasks)
        return tasks


def plan_engine_delta(
    snapshot: ClusterSnapshot, state: PlanState, changes: Changes
) -> list[EngineTask] | None:
    """The full planner's tasks for `snapshot`, from `state` and the `changes` since it was made.

    None when only a full plan can tell; `state` must then be dropped.
    """
    try:
        return _Delta(snapshot, state, changes).run()
    except _Fallback:
        return None


def changed_since(before: ClusterSnapshot, after: ClusterSnapshot) -> Changes:
    """Every name that differs between two snapshots (for tests and the bench)."""

    def differ(a: Mapping[str, object], b: Mapping[str, object]) -> frozenset[str]:
        return frozenset(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))

    pairs = {(m, u) for m, placed in before.schedule.items() for u in placed} | {
        (m, u) for m, placed in after.schedule.items() for u in placed
    }
    return Changes(
        units=differ(before.units, after.units),
        machines=differ(before.machines, after.machines),
        schedule=frozenset(
            p
            for p in pairs
            if before.schedule.get(p[0], {}).get(p[1]) != after.schedule.get(p[0], {}).get(p[1])
        ),
        unplaceable=differ(before.unplaceable, after.unplaceable),
    )
