"""The incremental planner gives exactly the full planner's tasks, and takes the fast path often.

The property: from any converged cluster, after any few edits (units added, destroyed, stopped,
edited, their requirements changed; machines joining, leaving, relabelled), `plan_engine_delta`
returns either None (plan fully) or the very list `plan_engine` returns, and the board it keeps
matches the schedule once those tasks are written. Several rounds run on the same kept state.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetd.core.engine_delta import Changes, PlanState, changed_since, plan_engine_delta
from fleetd.core.engine_plan import plan_engine, plan_engine_full
from fleetd.core.engine_tasks import Schedule, Unschedule, apply_engine_tasks
from fleetd.core.model import ClusterSnapshot, Machine, Unit
from tests.core.harness import cluster, converge, machine, unit
from tests.core.test_engine_plan_props import ROLES, clusters

KINDS = ["plain", "plain", "conflicts", "machine_of", "metadata", "global", "replaces"]
EDITS = ["add", "add", "destroy", "desired", "edit", "requirements", "join", "leave", "relabel"]


@st.composite
def a_unit(draw: st.DrawFn, name: str, names: list[str]) -> Unit:
    kind = draw(st.sampled_from(KINDS))
    lines: list[str] = []
    if kind == "conflicts":
        lines.append("Conflicts=" + draw(st.sampled_from(["u*.service", "n*.service", *names])))
    elif kind == "machine_of" and names:
        lines.append("MachineOf=" + draw(st.sampled_from(names)))
    elif kind == "metadata":
        lines.append("MachineMetadata=role=" + draw(st.sampled_from([*ROLES, "none"])))
    elif kind == "global":
        lines.append("Global=true")
    elif kind == "replaces" and names:
        lines.append("Replaces=" + draw(st.sampled_from(names)))
    desired = draw(st.sampled_from(["inactive", "loaded", "launched", "launched"]))
    return unit(name, "\n".join(lines), desired=desired, body=str(draw(st.integers(0, 2))))


@st.composite
def edited(draw: st.DrawFn, snapshot: ClusterSnapshot, round_: int) -> ClusterSnapshot:
    units = dict(snapshot.units)
    machines = dict(snapshot.machines)
    for step in range(draw(st.integers(1, 4))):
        names = sorted(units)
        action = draw(st.sampled_from(EDITS))
        if action == "add":
            name = f"n{round_}x{step}.service"
            units[name] = draw(a_unit(name, names))
        elif action == "join":
            mid = f"j{round_}x{step}"
            machines[mid] = machine(mid, role=draw(st.sampled_from(ROLES)))
        elif action in ("leave", "relabel") and machines:
            mid = draw(st.sampled_from(sorted(machines)))
            if action == "leave":
                del machines[mid]
            else:
                machines[mid] = Machine(mid, {"role": draw(st.sampled_from(ROLES))})
        elif names:
            name = draw(st.sampled_from(names))
            old = units[name]
            if action == "destroy":
                del units[name]
            elif action == "desired":
                desired = draw(st.sampled_from(["inactive", "loaded", "launched"]))
                units[name] = replace(old, desired=type(old.desired)(desired))
            elif action == "edit":
                units[name] = replace(old, hash=f"{draw(st.integers(0, 9)):040d}")
            else:
                units[name] = draw(a_unit(name, [n for n in names if n != name]))
    return replace(snapshot, units=units, machines=machines)


def kept_schedule(state: PlanState) -> set[tuple[str, str]]:
    return {(m, u) for m, placed in state.board.units_on.items() for u in placed}


def schedule_pairs(snapshot: ClusterSnapshot) -> set[tuple[str, str]]:
    return {(m, u) for m, placed in snapshot.schedule.items() for u in placed}


@settings(deadline=None, max_examples=300)
@given(st.data(), clusters())
def test_the_delta_plan_is_the_full_plan(data: st.DataObject, start: ClusterSnapshot) -> None:
    current, _ = converge(start)
    tasks, board = plan_engine_full(current)
    state = PlanState.after(current, board, tasks)
    for round_ in range(3):
        after_edit = data.draw(edited(current, round_))
        full = plan_engine(after_edit)
        delta = plan_engine_delta(after_edit, state, changed_since(current, after_edit))
        if delta is not None:
            assert delta == full
        current = apply_engine_tasks(after_edit, full)
        if delta is None:
            tasks, board = plan_engine_full(after_edit)
            state = PlanState.after(after_edit, board, tasks)
        assert kept_schedule(state) == schedule_pairs(current)
        assert state.unplaceable == dict(current.unplaceable)


def settled(units: list[Unit], machines: list[Machine]) -> tuple[ClusterSnapshot, PlanState]:
    snapshot, _ = converge(cluster(machines, units))
    tasks, board = plan_engine_full(snapshot)
    return snapshot, PlanState.after(snapshot, board, tasks)


def test_a_new_unit_goes_to_the_least_loaded_machine() -> None:
    before, state = settled([unit("a.service"), unit("b.service")], [machine("m1"), machine("m2")])
    after = replace(before, units={**before.units, "c.service": unit("c.service")})
    tasks = plan_engine_delta(after, state, Changes(units=frozenset({"c.service"})))
    assert tasks is not None
    assert [(t.unit, t.machine) for t in tasks if isinstance(t, Schedule)] == [("c.service", "m1")]
    assert tasks == plan_engine(after)


def test_a_machine_that_leaves_has_its_units_placed_again() -> None:
    units = [unit(f"u{i}.service") for i in range(6)]
    before, state = settled(units, [machine("m1"), machine("m2"), machine("m3")])
    after = replace(before, machines={k: v for k, v in before.machines.items() if k != "m2"})
    tasks = plan_engine_delta(after, state, Changes(machines=frozenset({"m2"})))
    assert tasks is not None
    assert tasks == plan_engine(after)
    gone = {t.unit for t in tasks if isinstance(t, Unschedule)}
    assert len(gone) == 2
    assert {t.unit for t in tasks if isinstance(t, Schedule)} == gone


def test_a_unit_that_nothing_can_run_gets_the_full_planners_reasons() -> None:
    before, state = settled([unit("a.service")], [machine("m1", role="web")])
    db = unit("db.service", "MachineMetadata=role=db")
    after = replace(before, units={**before.units, "db.service": db})
    tasks = plan_engine_delta(after, state, Changes(units=frozenset({"db.service"})))
    assert tasks == plan_engine(after)
    assert state.unplaceable == {"db.service": ("no machine has metadata role=db",)}


@pytest.mark.parametrize(
    "changes",
    [
        Changes(reset=True),
        Changes(schedule=frozenset({("m1", "stranger.service")})),
        Changes(unplaceable=frozenset({"a.service"})),
    ],
)
def test_what_it_did_not_write_sends_it_to_the_full_planner(changes: Changes) -> None:
    before, state = settled([unit("a.service")], [machine("m1")])
    stranger = unit("stranger.service")
    schedule = {"a.service": "m1", "stranger.service": "m1"}
    after = cluster(before.machines.values(), [*before.units.values(), stranger], schedule)
    after = replace(after, unplaceable={"a.service": ("made up",)})
    assert plan_engine_delta(after, state, changes) is None


def test_a_changed_global_unit_sends_it_to_the_full_planner() -> None:
    before, state = settled([unit("g.service", "Global=true")], [machine("m1")])
    changed = unit("g.service", "Global=true", body="v2")
    after = replace(before, units={"g.service": changed})
    assert plan_engine_delta(after, state, Changes(units=frozenset({"g.service"}))) is None
