"""`fleetctl load`: create if needed, set `loaded`, wait with fleet's messages or fail with why."""

from __future__ import annotations

import json
from pathlib import Path

from tests.fleetctl.conftest import HELLO, ON_A, FakeClock, Result, Run
from tests.fleetctl.fake_api import FakeFleet


def desired_puts(fleet: FakeFleet) -> list[object]:
    return [json.loads(r.content).get("desiredState") for r in fleet.writes()]


def test_load_creates_loaded_then_waits(run: Run, fleet: FakeFleet, unit_files: Path) -> None:
    fleet.lag = 3
    result = run("load", "hello")
    assert result == Result(
        0, f"Unit hello.service inactive\nUnit hello.service loaded on {ON_A}\n", ""
    )
    assert desired_puts(fleet) == ["loaded"]  # a new unit is created loaded: one request


def test_no_block_triggers(run: Run, fleet: FakeFleet, unit_files: Path) -> None:
    result = run("load", "--no-block", "hello")
    assert result.out == "Unit hello.service inactive\nTriggered unit hello.service load\n"


def test_global_units_are_triggered_not_waited_for(
    run: Run, fleet: FakeFleet, unit_files: Path
) -> None:
    result = run("load", "g")
    assert result.out == "Unit g.service inactive\nTriggered global unit g.service load\n"


def test_a_unit_already_loaded_is_skipped_silently(
    run: Run, fleet: FakeFleet, unit_files: Path
) -> None:
    fleet.add_unit("hello.service", HELLO, desired="loaded")
    assert run("load", "hello") == Result(0, "", "")
    assert fleet.writes() == []


def test_load_stops_a_launched_unit(run: Run, fleet: FakeFleet) -> None:
    fleet.add_unit("hello.service", HELLO, desired="launched")
    assert run("load", "hello").out == f"Unit hello.service loaded on {ON_A}\n"


def test_an_unplaceable_unit_fails_after_one_window_with_the_reasons(
    run: Run, fleet: FakeFleet, unit_files: Path, wait_clock: FakeClock
) -> None:
    fleet.unplaceable["db.service"] = ["no machine has metadata role=db"]
    result = run("load", "db")
    assert result == Result(
        1,
        "Unit db.service inactive\n",
        "Error waiting for units: unit db.service cannot be placed: "
        "no machine has metadata role=db\n",
    )
    assert wait_clock.now == 2.0


def test_with_block_attempts_the_reasons_come_after_the_last_attempt(
    run: Run, fleet: FakeFleet, unit_files: Path, wait_clock: FakeClock
) -> None:
    fleet.unplaceable["db.service"] = ["no machine has metadata role=db", "conflicts with x"]
    result = run("load", "--block-attempts=3", "db")
    assert result.code == 1
    assert result.err == (
        "Error waiting for units: unit db.service cannot be placed: "
        "no machine has metadata role=db; conflicts with x\n"
    )
    assert wait_clock.now == 6.0


def test_a_timeout_without_reasons(run: Run, fleet: FakeFleet, unit_files: Path) -> None:
    fleet.add_unit("hello.service", HELLO)
    fleet.lag = 1000
    result = run("load", "--block-attempts", "2", "hello")
    assert result == Result(
        1,
        "",
        "Error waiting for units: "
        "timed out waiting for unit hello.service to report state loaded\n",
    )


def test_an_error_setting_the_state(run: Run, fleet: FakeFleet) -> None:
    fleet.add_unit("hello.service", HELLO)
    fleet.break_route("PUT", "/units/hello.service", 500, "")
    assert run("load", "hello") == Result(1, "", "Error loading units: HTTP 500\n")


def test_no_units_given(run: Run) -> None:
    assert run("load") == Result(0, "", "No units given\n")
