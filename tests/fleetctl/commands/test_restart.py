"""`fleetctl restart`: fleet's rolling stop-then-start, each unit in argument order."""

from __future__ import annotations

import json

from tests.fleetctl.conftest import GLOBAL, HELLO, ON_A, Result, Run
from tests.fleetctl.fake_api import FakeFleet


def written(fleet: FakeFleet) -> list[tuple[str, str]]:
    return [
        (body["name"], body["desiredState"])
        for body in (json.loads(r.content) for r in fleet.writes())
    ]


def test_a_launched_unit_is_stopped_then_started(run: Run, fleet: FakeFleet) -> None:
    fleet.add_unit("hello.service", HELLO, desired="launched")
    fleet.lag = 2
    result = run("restart", "hello")
    assert result == Result(
        0, f"Unit hello.service loaded on {ON_A}\nUnit hello.service launched on {ON_A}\n", ""
    )
    assert written(fleet) == [("hello.service", "loaded"), ("hello.service", "launched")]


def test_units_go_one_after_another_in_argument_order(run: Run, fleet: FakeFleet) -> None:
    for name in ("a.service", "b.service"):
        fleet.add_unit(name, HELLO, desired="launched")
    result = run("restart", "b", "a")
    assert result.code == 0, result
    assert written(fleet) == [
        ("b.service", "loaded"),
        ("b.service", "launched"),
        ("a.service", "loaded"),
        ("a.service", "launched"),
    ]


def test_a_loaded_unit_is_started(run: Run, fleet: FakeFleet) -> None:
    fleet.add_unit("hello.service", HELLO, desired="loaded")
    assert run("restart", "hello") == Result(0, f"Unit hello.service launched on {ON_A}\n", "")
    assert written(fleet) == [("hello.service", "launched")]


def test_an_inactive_unit_is_reported_and_skipped(run: Run, fleet: FakeFleet) -> None:
    fleet.add_unit("idle.service", HELLO)
    fleet.add_unit("hello.service", HELLO, desired="loaded")
    result = run("restart", "idle", "hello")
    assert result == Result(
        0,
        f"Unit hello.service launched on {ON_A}\n",
        "Unable to restart unit idle.service in state inactive\n",
    )
    assert written(fleet) == [("hello.service", "launched")]


def test_a_timeout_ends_the_command(run: Run, fleet: FakeFleet) -> None:
    for name in ("a.service", "b.service"):
        fleet.add_unit(name, HELLO, desired="launched")
    fleet.lag = 1000
    result = run("restart", "--block-attempts=1", "a", "b")
    assert result == Result(
        1,
        "",
        "Error waiting for units: timed out waiting for unit a.service to report state loaded\n",
    )
    assert written(fleet) == [("a.service", "loaded")]


def test_global_units_are_stopped_then_triggered(run: Run, fleet: FakeFleet) -> None:
    fleet.add_unit("g.service", GLOBAL, desired="launched")
    result = run("restart", "g")
    assert result == Result(0, "Triggered global unit g.service restart\n", "")
    assert written(fleet) == [("g.service", "loaded"), ("g.service", "launched")]


def test_no_units_given(run: Run, fleet: FakeFleet) -> None:
    assert run("restart") == Result(0, "", "No units given\n")
    assert fleet.writes() == []
