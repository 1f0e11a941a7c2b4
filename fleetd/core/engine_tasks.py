"""The engine's tasks: what a plan asks the executor to write, each with the reason why.

`Schedule` and `Unschedule` touch `schedule/<machine>/<unit>`; `MarkUnplaceable` and
`ClearUnplaceable` touch the reasons stored for a unit that no machine can run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from fleetd.core.model import ClusterSnapshot, Placement
from fleetd.core.states import JobState


@dataclass(frozen=True, slots=True)
class Schedule:
    """Write the placement of `unit` on `machine` (new, or its hash or desired state changed)."""

    unit: str
    machine: str
    hash: str
    desired: JobState
    reason: str


@dataclass(frozen=True, slots=True)
class Unschedule:
    """Remove the placement of `unit` on `machine`."""

    unit: str
    machine: str
    reason: str


@dataclass(frozen=True, slots=True)
class MarkUnplaceable:
    """Store why no machine can run `unit`."""

    unit: str
    reasons: tuple[str, ...]

    @property
    def reason(self) -> str:
        """The stored reasons, joined for a log line."""
        return "; ".join(self.reasons)


@dataclass(frozen=True, slots=True)
class ClearUnplaceable:
    """Drop the stored reasons of `unit` (placed now, inactive, or destroyed)."""

    unit: str
    reason: str


EngineTask = Schedule | Unschedule | MarkUnplaceable | ClearUnplaceable


def apply_engine_tasks(snapshot: ClusterSnapshot, tasks: Iterable[EngineTask]) -> ClusterSnapshot:
    """The snapshot after `tasks` were written: what the executor does, without the I/O.

    Used by the planner's property tests and by the bench's simulated cluster.
    """
    schedule = {m: dict(placed) for m, placed in snapshot.schedule.items()}
    unplaceable = dict(snapshot.unplaceable)
    for task in tasks:
        match task:
            case Schedule(unit, machine, hash_, desired, _):
                schedule.setdefault(machine, {})[unit] = Placement(unit, machine, hash_, desired)
            case Unschedule(unit, machine, _):
                schedule.get(machine, {}).pop(unit, None)
            case MarkUnplaceable(unit, reasons):
                unplaceable[unit] = reasons
            case ClearUnplaceable(unit, _):
                unplaceable.pop(unit, None)
    return replace(
        snapshot,
        schedule={m: placed for m, placed in schedule.items() if placed},
        unplaceable=unplaceable,
    )
