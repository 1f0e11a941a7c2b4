"""Table tests for the engine planner, after fleet's `engine/reconciler_test.go` and its
functional scheduling scenarios (`functional/scheduling_test.go`), plus pyfleet's own rules."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fleetd.core.engine_plan import placement_order, plan_engine
from fleetd.core.engine_tasks import ClearUnplaceable, MarkUnplaceable, Schedule, Unschedule
from fleetd.core.states import JobState
from tests.core.harness import cluster, converge, machine, placements, unit, where

M1, M2, M3 = machine("m1"), machine("m2"), machine("m3")


def test_nothing_to_do_in_an_empty_cluster() -> None:
    assert plan_engine(cluster()) == []
    assert plan_engine(cluster([M1, M2])) == []


def test_a_new_unit_goes_to_the_only_machine() -> None:
    hello = unit("hello.service")
    tasks = plan_engine(cluster([M1], [hello]))
    assert tasks == [
        Schedule(
            "hello.service",
            "m1",
            hello.hash,
            JobState.LAUNCHED,
            "placed on the least-loaded machine that can run it",
        )
    ]


def test_least_loaded_then_machine_id() -> None:
    units = [unit(f"u{i}.service") for i in range(5)]
    after, _ = converge(cluster([M3, M1, M2], units))
    assert {n: where(after, n) for n in ("u0.service", "u1.service", "u2.service")} == {
        "u0.service": "m1",
        "u1.service": "m2",
        "u2.service": "m3",
    }
    assert [len(after.schedule[m]) for m in ("m1", "m2", "m3")] == [2, 2, 1]


def test_existing_placements_are_kept_not_rebalanced() -> None:
    units = [unit(f"u{i}.service") for i in range(4)]
    snapshot = cluster([M1, M2], units, schedule={u.name: "m1" for u in units})
    assert plan_engine(snapshot) == []


def test_a_loaded_unit_is_placed_with_its_desired_state() -> None:
    u = unit("a.service", desired="loaded")
    after, _ = converge(cluster([M1], [u]))
    assert after.schedule["m1"]["a.service"].desired is JobState.LOADED


@pytest.mark.parametrize(
    ("desired", "reason"),
    [("inactive", "desired state is inactive")],
)
def test_inactive_unit_is_unscheduled(desired: str, reason: str) -> None:
    u = unit("a.service", desired=desired)
    assert plan_engine(cluster([M1], [u], schedule={"a.service": "m1"})) == [
        Unschedule("a.service", "m1", reason)
    ]


def test_unit_on_a_machine_that_went_away_is_moved() -> None:
    u = unit("a.service")
    tasks = plan_engine(cluster([M2], [u], schedule={"a.service": "m1"}))
    assert tasks == [
        Unschedule("a.service", "m1", "machine m1 went away"),
        Schedule(
            "a.service",
            "m2",
            u.hash,
            JobState.LAUNCHED,
            "placed on the least-loaded machine that can run it",
        ),
    ]


def test_destroyed_unit_is_unscheduled() -> None:
    snapshot = cluster([M1], [], schedule={"gone.service": "m1"})
    assert plan_engine(snapshot) == [Unschedule("gone.service", "m1", "unit destroyed")]


def test_changed_unit_file_and_desired_state_update_the_placement() -> None:
    old = unit("a.service")
    new = unit("a.service", body="v2", desired="loaded")
    snapshot = replace(cluster([M1], [old], schedule={"a.service": "m1"}), units={"a.service": new})
    assert plan_engine(snapshot) == [
        Schedule("a.service", "m1", new.hash, JobState.LOADED, "unit file changed")
    ]


def test_machine_id_full_and_short() -> None:
    long_a, long_b = "a" * 8 + "1" * 24, "b" * 8 + "2" * 24
    units = [
        unit("full.service", f"MachineID={long_b}"),
        unit("short.service", "MachineID=bbbbbbbb"),
    ]
    after, _ = converge(cluster([machine(long_a), machine(long_b)], units))
    assert where(after, "full.service") == long_b
    assert where(after, "short.service") == long_b


def test_machine_id_of_no_machine_is_unplaceable_with_a_reason() -> None:
    after, tasks = converge(cluster([M1], [unit("pin.service", "MachineID=nowhere")]))
    assert where(after, "pin.service") is None
    assert tasks == [MarkUnplaceable("pin.service", ("no machine has id nowhere",))]


def test_metadata_or_within_a_key_and_across_keys() -> None:
    machines = [
        machine("m1", role="web", region="east"),
        machine("m2", role="db", region="west"),
        machine("m3", role="db", region="east"),
    ]
    units = [
        unit("db.service", "MachineMetadata=role=db\nMachineMetadata=region=east"),
        unit("any.service", 'MachineMetadata="role=web" "role=cache"'),
        unit("either.service", "MachineMetadata=region=west\nMachineMetadata=region=north"),
    ]
    after, _ = converge(cluster(machines, units))
    assert where(after, "db.service") == "m3"
    assert where(after, "any.service") == "m1"
    assert where(after, "either.service") == "m2"


def test_unmatched_metadata_names_the_missing_metadata() -> None:
    after, tasks = converge(
        cluster([machine("m1", role="web")], [unit("db.service", "MachineMetadata=role=db")])
    )
    assert tasks == [MarkUnplaceable("db.service", ("no machine has metadata role=db",))]
    assert after.unplaceable["db.service"] == ("no machine has metadata role=db",)


def test_metadata_change_moves_the_unit() -> None:
    u = unit("db.service", "MachineMetadata=role=db")
    snapshot = cluster(
        [machine("m1", role="web"), machine("m2", role="db")], [u], schedule={"db.service": "m1"}
    )
    after, tasks = converge(snapshot)
    assert where(after, "db.service") == "m2"
    assert tasks[0] == Unschedule("db.service", "m1", "no longer fits: metadata role=db")


def test_conflicting_units_spread_over_machines() -> None:
    # TestScheduleConflicts: five mutually conflicting units on three machines
    units = [unit(f"conflict.{i}.service", "Conflicts=conflict.*.service") for i in range(5)]
    after, _ = converge(cluster([M1, M2, M3], units))
    placed = placements(after)
    assert sorted(placed) == ["conflict.0.service", "conflict.1.service", "conflict.2.service"]
    assert {m for ms in placed.values() for m in ms} == {"m1", "m2", "m3"}
    assert after.unplaceable["conflict.3.service"] == (
        "conflicts with conflict.0.service on m1",
        "conflicts with conflict.1.service on m2",
        "conflicts with conflict.2.service on m3",
    )


def test_conflicts_are_checked_both_ways() -> None:
    # TestScheduleOneWayConflict: only one side names the other
    units = [unit("a.service", "Conflicts=hello.service"), unit("hello.service")]
    after, _ = converge(cluster([M1], units))
    assert where(after, "a.service") == "m1"
    assert where(after, "hello.service") is None
    assert after.unplaceable["hello.service"] == ("conflicts with a.service on every machine",)


def test_destroying_the_conflicting_unit_lets_the_other_run() -> None:
    units = [unit("a.service", "Conflicts=hello.service"), unit("hello.service")]
    after, _ = converge(cluster([M1], units))
    without = replace(after, units={"hello.service": units[1]})
    later, tasks = converge(without)
    assert where(later, "hello.service") == "m1"
    assert ClearUnplaceable("hello.service", "placed or no longer wanted") in tasks


def test_space_separated_conflicts() -> None:
    names = ["a.service", "b.service", "c.service"]
    units = [unit(n, "Conflicts=a.service b.service c.service") for n in names]
    after, _ = converge(cluster([M1, M2, M3], units))
    assert {where(after, n) for n in names} == {"m1", "m2", "m3"}


def test_machine_of_pairs_land_together_in_one_pass() -> None:
    units = []
    for i in range(3):
        units += [
            unit(f"ping.{i}.service"),
            unit(f"pong.{i}.service", f"MachineOf=ping.{i}.service"),
        ]
    after, _ = converge(cluster([M1, M2, M3], units))
    for i in range(3):
        assert where(after, f"pong.{i}.service") == where(after, f"ping.{i}.service")


def test_machine_of_pair_moves_together_when_the_machine_goes() -> None:
    ping, pong = unit("ping.service"), unit("pong.service", "MachineOf=ping.service")
    snapshot = cluster(
        [M2, M3], [ping, pong], schedule={"ping.service": "m1", "pong.service": "m1"}
    )
    after, _ = converge(snapshot)
    assert where(after, "ping.service") == where(after, "pong.service") == "m2"


def test_machine_of_a_missing_unit_is_unplaceable() -> None:
    after, _ = converge(cluster([M1], [unit("f.service", "MachineOf=nothere.service")]))
    assert after.unplaceable["f.service"] == (
        "MachineOf peer nothere.service is not placed on any machine",
    )


def test_machine_of_cycle_is_reported_not_hung() -> None:
    units = [unit("a.service", "MachineOf=b.service"), unit("b.service", "MachineOf=a.service")]
    after, _ = converge(cluster([M1], units))
    assert placements(after) == {}
    assert after.unplaceable["a.service"] == (
        "MachineOf cycle: a.service -> b.service -> a.service",
    )


def test_placement_order_puts_targets_and_replacers_first() -> None:
    units = {
        u.name: u
        for u in [
            unit("c.service", "MachineOf=b.service"),
            unit("b.service", "MachineOf=a.service"),
            unit("a.service"),
            unit("x.service", "MachineOf=c.service\nMachineOf=a.service"),
            unit("new.service", "Replaces=a.service"),
        ]
    }
    depths, cycles = placement_order(units)
    assert depths == {
        "new.service": 0,
        "a.service": 1,
        "b.service": 2,
        "c.service": 3,
        "x.service": 4,
    }
    assert cycles == {}


def test_global_units_run_on_every_matching_machine() -> None:
    machines = [machine("m1", role="web"), machine("m2", role="db"), machine("m3", role="db")]
    units = [
        unit("g.service", "Global=true"),
        unit("gdb.service", "Global=yes\nMachineMetadata=role=db"),
    ]
    after, _ = converge(cluster(machines, units))
    assert placements(after) == {"g.service": {"m1", "m2", "m3"}, "gdb.service": {"m2", "m3"}}


def test_global_unit_reaches_a_new_machine_and_leaves_a_dead_one() -> None:
    g = unit("g.service", "Global=true")
    snapshot = cluster([M2, M3], [g], schedule={"g.service": ["m1", "m2"]})
    after, tasks = converge(snapshot)
    assert placements(after) == {"g.service": {"m2", "m3"}}
    assert Unschedule("g.service", "m1", "machine m1 went away") in tasks


def test_global_conflicts_first_name_wins() -> None:
    # TestScheduleGlobalConflicts: a second conflicting global unit runs nowhere
    units = [
        unit("conflict-global.1.service", "Global=true\nConflicts=conflict-global.*"),
        unit("conflict-global.2.service", "Global=true\nConflicts=conflict-global.*"),
    ]
    after, _ = converge(cluster([M1, M2, M3], units))
    assert placements(after) == {"conflict-global.1.service": {"m1", "m2", "m3"}}
    assert after.unplaceable["conflict-global.2.service"] == (
        "conflicts with conflict-global.1.service on every machine",
    )


def test_non_global_unit_avoids_a_conflicting_global_unit() -> None:
    machines = [machine("m1", role="web"), M2]
    units = [
        unit("g.service", "Global=true\nMachineMetadata=role=web\nConflicts=app.service"),
        unit("app.service"),
    ]
    after, _ = converge(cluster(machines, units, schedule={"app.service": "m1"}))
    assert where(after, "app.service") == "m2"
    assert placements(after)["g.service"] == {"m1"}


def test_replaces_moves_the_replaced_unit() -> None:
    # TestScheduleReplace
    units = [
        unit("replace.0.service"),
        unit("replace.1.service"),
        unit("replace.2.service", "MachineOf=replace.1.service"),
        unit("replace-kick0.service", "Replaces=replace.0.service"),
    ]
    snapshot = cluster(
        [M1, M2],
        units,
        schedule={"replace.0.service": "m1", "replace.1.service": "m2", "replace.2.service": "m2"},
    )
    after, tasks = converge(snapshot)
    assert where(after, "replace-kick0.service") == "m1"
    assert where(after, "replace.0.service") == "m2"
    assert Unschedule("replace.0.service", "m1", "replaced by replace-kick0.service") in tasks


def test_replaced_unit_with_nowhere_to_go_stays_unplaced() -> None:
    units = [unit("old.service"), unit("new.service", "Replaces=old.service")]
    after, _ = converge(cluster([M1], units, schedule={"old.service": "m1", "new.service": "m1"}))
    assert where(after, "new.service") == "m1"
    assert where(after, "old.service") is None
    assert after.unplaceable["old.service"] == ("replaced by new.service on m1",)


def test_mutual_replacement_is_ignored() -> None:
    # TestScheduleCircularReplace: nothing moves when both replace each other
    units = [unit("a.service", "Replaces=b.service"), unit("b.service", "Replaces=a.service")]
    after, _ = converge(cluster([M1], units))
    assert placements(after) == {"a.service": {"m1"}, "b.service": {"m1"}}


def test_a_unit_placed_twice_keeps_one_placement() -> None:
    u = unit("a.service")
    tasks = plan_engine(cluster([M1, M2], [u], schedule={"a.service": ["m1", "m2"]}))
    assert tasks == [Unschedule("a.service", "m2", "placed on more than one machine")]


def test_template_instances_with_specifiers() -> None:
    # TestTemplatesWithSpecifiersInMetadata
    machines = [machine(f"m{i}", hostname=f"smoke{i}") for i in (1, 2, 3)]
    units = [unit(f"metadata@smoke{i}.service", "MachineMetadata=hostname=%i") for i in (1, 2, 3)]
    units.append(unit("metadata@invalid.service", "MachineMetadata=hostname=%i"))
    after, _ = converge(cluster(machines, units))
    for i in (1, 2, 3):
        assert where(after, f"metadata@smoke{i}.service") == f"m{i}"
    assert after.unplaceable["metadata@invalid.service"] == (
        "no machine has metadata hostname=invalid",
    )


def test_no_machines_at_all() -> None:
    after, _ = converge(cluster([], [unit("a.service")]))
    assert after.unplaceable == {"a.service": ("no machines are available",)}


def test_stored_reasons_are_not_rewritten_when_unchanged() -> None:
    snapshot = cluster(
        [M1],
        [unit("db.service", "MachineMetadata=role=db")],
        unplaceable={"db.service": ("no machine has metadata role=db",)},
    )
    assert plan_engine(snapshot) == []


def test_reasons_of_a_destroyed_unit_are_cleared() -> None:
    snapshot = cluster([M1], [], unplaceable={"gone.service": ("x",)})
    assert plan_engine(snapshot) == [ClearUnplaceable("gone.service", "unit destroyed")]


def test_replacing_a_target_moves_its_followers_too() -> None:
    # found by hypothesis: the follower is displaced with its target, not looked at twice
    units = [
        unit("u3.service"),
        unit("u4.service", "Replaces=u3.service"),
        unit("u6.service", "MachineOf=u3.service"),
        unit("f1.service"),
        unit("f2.service"),
    ]
    placed = {"u3.service": "m1", "u6.service": "m1", "f1.service": "m2", "f2.service": "m2"}
    snapshot = cluster([M1, M2], units, schedule=placed)
    after, _ = converge(snapshot)
    assert where(after, "u4.service") == "m1"
    assert where(after, "u3.service") == where(after, "u6.service") == "m2"


def test_replaced_target_with_nowhere_to_go_takes_its_followers_along() -> None:
    units = [
        unit("u3.service"),
        unit("u4.service", "Replaces=u3.service"),
        unit("u6.service", "MachineOf=u3.service"),
    ]
    after, _ = converge(cluster([M1], units, schedule={"u3.service": "m1", "u6.service": "m1"}))
    assert placements(after) == {"u4.service": {"m1"}}
    assert after.unplaceable["u6.service"] == (
        "MachineOf peer u3.service is not placed on any machine",
    )


def test_placements_on_departed_machines_are_held_when_asked() -> None:
    # right after an engine comes to lead: machines that vanished in an etcd outage re-register
    units = [unit("a.service"), unit("g.service", "Global=true"), unit("new.service")]
    snapshot = cluster([M2], units, schedule={"a.service": "m1", "g.service": ["m1", "m2"]})
    held = plan_engine(snapshot, hold_departed=True)
    assert held == [
        Schedule(
            "new.service",
            "m2",
            units[2].hash,
            JobState.LAUNCHED,
            "placed on the least-loaded machine that can run it",
        )
    ]
    moved = plan_engine(snapshot)
    assert Unschedule("a.service", "m1", "machine m1 went away") in moved
    assert Unschedule("g.service", "m1", "machine m1 went away") in moved
