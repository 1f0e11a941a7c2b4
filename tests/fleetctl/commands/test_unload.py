"""`fleetctl unload`: set `inactive` and wait; inactive units skipped; fleet's messages."""

from __future__ import annotations

from tests.fleetctl.conftest import GLOBAL, HELLO, Result, Run
from tests.fleetctl.fake_api import FakeFleet


def test_unload_a_launched_unit(run: Run, fleet: FakeFleet) -> None:
    fleet.add_unit("hello.service", HELLO, desired="launched")
    fleet.lag = 3
    result = run("unload", "hello")
    assert result == Result(
        0, "Unit hello.service inactive\n", "Successfully unloaded units [hello.service].\n"
    )
    assert fleet.states == {}


def test_an_inactive_unit_is_skipped(run: Run, fleet: FakeFleet) -> None:
    fleet.add_unit("hello.service", HELLO)
    assert run("unload", "hello") == Result(0, "", "Successfully unloaded units [].\n")
    assert fleet.writes() == []


def test_global_units_are_triggered(run: Run, fleet: FakeFleet) -> None:
    fleet.add_unit("g.service", GLOBAL, desired="launched")
    result = run("unload", "g")
    assert result == Result(
        0, "Triggered global unit g.service unload\n", "Successfully unloaded units [].\n"
    )


def test_no_block(run: Run, fleet: FakeFleet) -> None:
    fleet.add_unit("hello.service", HELLO, desired="loaded")
    result = run("unload", "--no-block", "hello")
    assert result.out == "Triggered unit hello.service unload\n"


def test_units_not_in_the_registry(run: Run) -> None:
    assert run("unload", "nope") == Result(0, "", "Units not found in registry\n")


def test_no_units_given(run: Run) -> None:
    assert run("unload") == Result(0, "", "No units given\n")
