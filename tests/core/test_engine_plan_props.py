"""Property tests for the engine planner: the invariants hold for any cluster hypothesis builds."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import replace
from typing import TypeVar

from hypothesis import given, settings
from hypothesis import strategies as st

from fleetd.core.engine_plan import plan_engine
from fleetd.core.model import ClusterSnapshot, Unit
from fleetd.core.states import JobState
from tests.core.harness import cluster, converge, machine, placements, unit

ROLES = ("web", "db")
V = TypeVar("V")


@st.composite
def clusters(draw: st.DrawFn) -> ClusterSnapshot:
    n_machines = draw(st.integers(0, 5))
    machines = [machine(f"m{i}", role=draw(st.sampled_from(ROLES))) for i in range(n_machines)]
    n_units = draw(st.integers(0, 10))
    names = [f"u{i}.service" for i in range(n_units)]
    units = []
    for i, name in enumerate(names):
        lines: list[str] = []
        kind = draw(st.sampled_from(["plain", "conflicts", "machine_of", "global", "replaces"]))
        if kind == "conflicts":
            lines.append("Conflicts=" + draw(st.sampled_from(["u*.service", *names])))
        elif kind == "machine_of" and i > 0:
            lines.append("MachineOf=" + draw(st.sampled_from(names)))
        elif kind == "global":
            lines.append("Global=true")
            if draw(st.booleans()):
                lines.append("Conflicts=" + draw(st.sampled_from(["u*.service", *names])))
        elif kind == "replaces":
            lines.append("Replaces=" + draw(st.sampled_from(names)))
        if draw(st.booleans()):
            lines.append("MachineMetadata=role=" + draw(st.sampled_from(ROLES)))
        desired = draw(st.sampled_from(["inactive", "loaded", "launched", "launched"]))
        units.append(unit(name, "\n".join(lines), desired=desired))
    schedule: dict[str, list[str]] = {}
    for name in names:
        if draw(st.booleans()):
            schedule[name] = draw(st.lists(st.sampled_from(["m0", "m1", "m2", "gone"]), max_size=2))
    return cluster(machines, units, schedule=schedule)


def _conflict(a: Unit, b: Unit) -> bool:
    return a.requirements.conflicts_with(a.name, b.name, b.requirements)


@settings(deadline=None)
@given(clusters())
def test_planning_again_after_applying_gives_nothing_to_do(snapshot: ClusterSnapshot) -> None:
    converge(snapshot)  # asserts the second plan is empty


@settings(deadline=None)
@given(clusters())
def test_no_machine_gets_two_conflicting_units(snapshot: ClusterSnapshot) -> None:
    after, _ = converge(snapshot)
    for placed in after.schedule.values():
        units = [after.units[name] for name in placed]
        for a in units:
            for b in units:
                assert a.name == b.name or not _conflict(a, b), (a.name, b.name)


@settings(deadline=None)
@given(clusters())
def test_every_placement_honours_its_requirements(snapshot: ClusterSnapshot) -> None:
    after, _ = converge(snapshot)
    where = placements(after)
    for name, machines in where.items():
        u = after.units[name]
        assert u.desired is not JobState.INACTIVE
        assert machines <= after.machines.keys()
        assert u.requirements.is_global or len(machines) == 1
        for m in machines:
            assert u.requirements.metadata_matches(after.machines[m].metadata)
            for peer in u.requirements.machine_of:
                assert m in where.get(peer, set())


@settings(deadline=None)
@given(clusters())
def test_global_units_land_on_exactly_the_matching_machines(snapshot: ClusterSnapshot) -> None:
    after, _ = converge(snapshot)
    where = placements(after)
    for u in after.units.values():
        if not u.requirements.is_global or u.desired is JobState.INACTIVE:
            continue
        matching = {
            m.id for m in after.machines.values() if u.requirements.metadata_matches(m.metadata)
        }
        blocked = {
            m
            for m in matching
            for g in after.units.values()
            if g.requirements.is_global
            and g.name < u.name
            and m in where.get(g.name, set())
            and _conflict(u, g)
        }
        assert where.get(u.name, set()) == matching - blocked


@settings(deadline=None)
@given(clusters())
def test_every_wanted_unit_is_placed_or_says_why(snapshot: ClusterSnapshot) -> None:
    after, _ = converge(snapshot)
    where = placements(after)
    for u in after.units.values():
        if u.desired is JobState.INACTIVE:
            assert u.name not in where
            assert u.name not in after.unplaceable
        elif u.name not in where:
            assert after.unplaceable.get(u.name), u.name
        elif not u.requirements.is_global:
            assert u.name not in after.unplaceable


@settings(deadline=None)
@given(clusters(), st.randoms(use_true_random=False))
def test_the_plan_does_not_depend_on_input_order(
    snapshot: ClusterSnapshot, rnd: random.Random
) -> None:
    def shuffled(mapping: Mapping[str, V]) -> dict[str, V]:
        keys = list(mapping)
        rnd.shuffle(keys)
        return {k: mapping[k] for k in keys}

    other = replace(snapshot, units=shuffled(snapshot.units), machines=shuffled(snapshot.machines))
    assert plan_engine(other) == plan_engine(snapshot)
