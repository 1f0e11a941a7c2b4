"""A harness for the engine planner: seed machines and units in one call each, plan, inspect.

Units are built from real unit-file text, so every planner test also runs the parser and the
`[X-Fleet]` rules.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from fleetd.core.engine_plan import plan_engine
from fleetd.core.engine_tasks import EngineTask, apply_engine_tasks
from fleetd.core.model import ClusterSnapshot, Machine, Placement, Unit
from fleetd.core.requirements import parse_requirements
from fleetd.core.states import JobState
from fleetd.core.unitfile import parse_unit


def unit(name: str, xfleet: str = "", desired: str = "launched", body: str = "") -> Unit:
    """A unit called `name` whose `[X-Fleet]` section holds the lines of `xfleet`."""
    text = f"[Service]\nExecStart=/bin/echo {name} {body}\n"
    if xfleet:
        text += "\n[X-Fleet]\n" + "\n".join(line.strip() for line in xfleet.splitlines()) + "\n"
    parsed = parse_unit(text)
    return Unit(name, parsed.hash, JobState(desired), parse_requirements(name, parsed))


def machine(machine_id: str, **metadata: str) -> Machine:
    return Machine(machine_id, dict(metadata))


def cluster(
    machines: Iterable[Machine] = (),
    units: Iterable[Unit] = (),
    schedule: Mapping[str, str | Iterable[str]] | None = None,
    unplaceable: Mapping[str, tuple[str, ...]] | None = None,
) -> ClusterSnapshot:
    """A snapshot; `schedule` maps a unit name to the machine (or machines) it is placed on."""
    by_name = {u.name: u for u in units}
    placed: dict[str, dict[str, Placement]] = {}
    for name, where in (schedule or {}).items():
        for m in [where] if isinstance(where, str) else where:
            u = by_name.get(name)
            hash_, desired = (u.hash, u.desired) if u else ("0" * 40, JobState.LAUNCHED)
            placed.setdefault(m, {})[name] = Placement(name, m, hash_, desired)
    return ClusterSnapshot(
        units=by_name,
        machines={m.id: m for m in machines},
        schedule=placed,
        unplaceable=dict(unplaceable or {}),
    )


def converge(snapshot: ClusterSnapshot) -> tuple[ClusterSnapshot, list[EngineTask]]:
    """Plan once, apply the plan, and check that a second plan has nothing to do."""
    tasks = plan_engine(snapshot)
    after = apply_engine_tasks(snapshot, tasks)
    again = plan_engine(after)
    assert again == [], f"planning again after applying gave {again}"
    return after, tasks


def placements(snapshot: ClusterSnapshot) -> dict[str, set[str]]:
    """Unit name -> the machines it is placed on."""
    found: dict[str, set[str]] = {}
    for m, placed in snapshot.schedule.items():
        for name in placed:
            found.setdefault(name, set()).add(m)
    return found


def where(snapshot: ClusterSnapshot, name: str) -> str | None:
    """The one machine a non-global unit is on, or None."""
    machines = placements(snapshot).get(name, set())
    assert len(machines) <= 1, f"{name} is on {sorted(machines)}"
    return next(iter(machines), None)
