"""The engine's tasks and their pure application to a snapshot (what the executor writes)."""

from __future__ import annotations

import copy
import dataclasses

import pytest

from fleetd.core.engine_tasks import (
    ClearUnplaceable,
    EngineTask,
    MarkUnplaceable,
    Schedule,
    Unschedule,
    apply_engine_tasks,
)
from fleetd.core.model import ClusterSnapshot, Placement
from fleetd.core.states import JobState
from tests.core.harness import cluster, machine, unit

H1, H2 = "1" * 40, "2" * 40
A, B = unit("a.service"), unit("b.service", desired="loaded")


def base() -> ClusterSnapshot:
    return cluster(
        [machine("m1"), machine("m2")],
        [A, B],
        schedule={"a.service": "m1", "b.service": "m2"},
        unplaceable={"c.service": ("no machines are available",)},
    )


def test_no_tasks_gives_an_equal_snapshot() -> None:
    snapshot = base()
    assert apply_engine_tasks(snapshot, []) == snapshot


def test_schedule_puts_a_new_placement() -> None:
    after = apply_engine_tasks(
        base(), [Schedule("c.service", "m1", H1, JobState.LAUNCHED, "placed")]
    )
    assert dict(after.schedule["m1"]) == {
        "a.service": Placement("a.service", "m1", A.hash, JobState.LAUNCHED),
        "c.service": Placement("c.service", "m1", H1, JobState.LAUNCHED),
    }
    assert dict(after.schedule["m2"]) == {
        "b.service": Placement("b.service", "m2", B.hash, JobState.LOADED)
    }


def test_schedule_on_a_machine_without_placements_creates_its_entry() -> None:
    after = apply_engine_tasks(base(), [Schedule("c.service", "m3", H2, JobState.LOADED, "r")])
    assert set(after.schedule) == {"m1", "m2", "m3"}
    assert dict(after.schedule["m3"]) == {
        "c.service": Placement("c.service", "m3", H2, JobState.LOADED)
    }


def test_schedule_overwrites_hash_and_desired_state() -> None:
    after = apply_engine_tasks(
        base(), [Schedule("a.service", "m1", H2, JobState.LOADED, "hash changed")]
    )
    assert after.schedule["m1"]["a.service"] == Placement("a.service", "m1", H2, JobState.LOADED)
    assert len(after.schedule["m1"]) == 1


def test_later_tasks_win() -> None:
    after = apply_engine_tasks(
        base(),
        [
            Schedule("c.service", "m1", H1, JobState.LOADED, "first"),
            Schedule("c.service", "m1", H2, JobState.LAUNCHED, "second"),
        ],
    )
    assert after.schedule["m1"]["c.service"] == Placement("c.service", "m1", H2, JobState.LAUNCHED)


def test_unschedule_removes_the_placement() -> None:
    snapshot = cluster(
        [machine("m1")],
        [A, B],
        schedule={"a.service": "m1", "b.service": "m1"},
    )
    after = apply_engine_tasks(snapshot, [Unschedule("a.service", "m1", "gone")])
    assert dict(after.schedule) == {
        "m1": {"b.service": Placement("b.service", "m1", B.hash, JobState.LOADED)}
    }


@pytest.mark.parametrize(
    "task",
    [
        Unschedule("a.service", "m2", "not there"),  # machine exists, unit elsewhere
        Unschedule("z.service", "m1", "never placed"),
        Unschedule("a.service", "m9", "unknown machine"),
    ],
)
def test_unscheduling_a_missing_placement_changes_nothing(task: Unschedule) -> None:
    snapshot = base()
    after = apply_engine_tasks(snapshot, [task])
    assert after == snapshot
    assert "m9" not in after.schedule


def test_a_machine_left_without_placements_is_dropped() -> None:
    after = apply_engine_tasks(base(), [Unschedule("a.service", "m1", "moved")])
    assert set(after.schedule) == {"m2"}


def test_empty_machines_in_the_input_are_dropped_too() -> None:
    snapshot = ClusterSnapshot(schedule={"m1": {}, "m2": {"a.service": _placed("a", "m2")}})
    after = apply_engine_tasks(snapshot, [])
    assert dict(after.schedule) == {"m2": {"a.service": _placed("a", "m2")}}


def test_schedule_then_unschedule_leaves_no_machine_entry() -> None:
    after = apply_engine_tasks(
        ClusterSnapshot(),
        [
            Schedule("a.service", "m1", H1, JobState.LAUNCHED, "placed"),
            Unschedule("a.service", "m1", "moved"),
        ],
    )
    assert dict(after.schedule) == {}


def test_mark_and_clear_unplaceable() -> None:
    after = apply_engine_tasks(
        base(),
        [
            MarkUnplaceable("d.service", ("no machine has id abc",)),
            MarkUnplaceable("c.service", ("no machine has metadata role=db", "x")),
        ],
    )
    assert dict(after.unplaceable) == {
        "c.service": ("no machine has metadata role=db", "x"),
        "d.service": ("no machine has id abc",),
    }
    cleared = apply_engine_tasks(
        after,
        [ClearUnplaceable("c.service", "placed"), ClearUnplaceable("nothere.service", "noop")],
    )
    assert dict(cleared.unplaceable) == {"d.service": ("no machine has id abc",)}


def test_unplaceable_tasks_leave_the_schedule_alone_and_vice_versa() -> None:
    snapshot = base()
    after = apply_engine_tasks(snapshot, [MarkUnplaceable("a.service", ("r",))])
    assert after.schedule == snapshot.schedule
    after = apply_engine_tasks(snapshot, [Schedule("c.service", "m1", H1, JobState.LOADED, "r")])
    assert after.unplaceable == snapshot.unplaceable


def test_units_and_machines_are_carried_over() -> None:
    snapshot = base()
    after = apply_engine_tasks(
        snapshot,
        [Unschedule("a.service", "m1", "r"), Unschedule("b.service", "m2", "r")],
    )
    assert after.units == snapshot.units
    assert after.machines == snapshot.machines
    assert dict(after.schedule) == {}


def test_the_input_snapshot_is_not_mutated() -> None:
    snapshot = base()
    schedule_before = copy.deepcopy({m: dict(p) for m, p in snapshot.schedule.items()})
    unplaceable_before = dict(snapshot.unplaceable)
    tasks: list[EngineTask] = [
        Schedule("a.service", "m1", H2, JobState.LOADED, "changed"),
        Schedule("c.service", "m1", H1, JobState.LAUNCHED, "placed"),
        Unschedule("b.service", "m2", "moved"),
        MarkUnplaceable("d.service", ("r",)),
        ClearUnplaceable("c.service", "placed"),
    ]
    after = apply_engine_tasks(snapshot, tasks)
    assert {m: dict(p) for m, p in snapshot.schedule.items()} == schedule_before
    assert dict(snapshot.unplaceable) == unplaceable_before
    assert after is not snapshot
    assert after.schedule is not snapshot.schedule
    assert after.unplaceable is not snapshot.unplaceable
    assert dict(after.unplaceable) == {"d.service": ("r",)}
    assert set(after.schedule) == {"m1"}


def test_tasks_may_be_any_iterable() -> None:
    tasks = (t for t in [Schedule("c.service", "m2", H1, JobState.LOADED, "r")])
    after = apply_engine_tasks(base(), tasks)
    assert set(after.schedule["m2"]) == {"b.service", "c.service"}


@pytest.mark.parametrize(
    ("reasons", "joined"),
    [
        ((), ""),
        (("no machines are available",), "no machines are available"),
        (
            ("no machine has metadata role=db", "conflicts with x.service on every machine"),
            "no machine has metadata role=db; conflicts with x.service on every machine",
        ),
    ],
)
def test_mark_unplaceable_reason_joins_its_reasons(reasons: tuple[str, ...], joined: str) -> None:
    assert MarkUnplaceable("a.service", reasons).reason == joined


def test_tasks_are_frozen_values() -> None:
    task = Schedule("a.service", "m1", H1, JobState.LAUNCHED, "r")
    assert task == Schedule("a.service", "m1", H1, JobState.LAUNCHED, "r")
    assert task != Schedule("a.service", "m1", H1, JobState.LOADED, "r")
    assert len({task, Schedule("a.service", "m1", H1, JobState.LAUNCHED, "r")}) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        task.machine = "m2"  # type: ignore[misc]


def _placed(name: str, machine_id: str) -> Placement:
    return Placement(f"{name}.service", machine_id, H1, JobState.LAUNCHED)
