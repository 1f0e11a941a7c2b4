"""`fleetctl stop`: only registry units; inactive refused; loaded skipped; fleet's messages."""

from __future__ import annotations

import json

import pytest

from fleetctl.app import main
from fleetctl.client import MAX_IN_FLIGHT
from tests.fleetctl.conftest import GLOBAL, HELLO, ON_A, Result, Run
from tests.fleetctl.fake_api import FakeFleet
from tests.fleetctl.gate import Gate, by_position, is_write, scrambled


def test_stop_a_launched_unit(run: Run, fleet: FakeFleet) -> None:
    fleet.add_unit("hello.service", HELLO, desired="launched")
    fleet.lag = 2
    result = run("stop", "hello")
    assert result == Result(
        0,
        f"Unit hello.service loaded on {ON_A}\n",
        "Successfully stopped units [hello.service].\n",
    )
    assert [json.loads(r.content) for r in fleet.writes()] == [
        {"desiredState": "loaded", "name": "hello.service"}
    ]


def test_units_are_handled_in_name_order(run: Run, fleet: FakeFleet) -> None:
    for name in ("b.service", "a.service"):
        fleet.add_unit(name, HELLO, desired="launched")
    result = run("stop", "b", "a", "nope")
    assert result.out == f"Unit a.service loaded on {ON_A}\nUnit b.service loaded on {ON_A}\n"
    assert result.err == "Successfully stopped units [a.service b.service].\n"


def test_units_not_in_the_registry(run: Run, fleet: FakeFleet) -> None:
    assert run("stop", "nope") == Result(0, "", "Units not found in registry\n")
    assert fleet.writes() == []


def test_an_inactive_unit_cannot_be_stopped(run: Run, fleet: FakeFleet) -> None:
    fleet.add_unit("a.service", HELLO, desired="launched")
    fleet.add_unit("hello.service", HELLO)
    result = run("stop", "a", "hello")
    assert result == Result(1, "", "Unable to stop unit hello.service in state inactive\n")
    assert fleet.writes() == []  # checked before anything changes


def test_a_loaded_unit_is_skipped(run: Run, fleet: FakeFleet) -> None:
    fleet.add_unit("hello.service", HELLO, desired="loaded")
    assert run("stop", "hello") == Result(0, "", "Successfully stopped units [].\n")
    assert fleet.writes() == []


def test_global_and_no_block(run: Run, fleet: FakeFleet) -> None:
    fleet.add_unit("g.service", GLOBAL, desired="launched")
    fleet.add_unit("hello.service", HELLO, desired="launched")
    result = run("stop", "--no-block", "g", "hello")
    assert result == Result(
        0,
        "Triggered global unit g.service stop\nTriggered unit hello.service stop\n",
        "Successfully stopped units [hello.service].\n",
    )


def test_a_timeout(run: Run, fleet: FakeFleet) -> None:
    fleet.add_unit("hello.service", HELLO, desired="launched")
    fleet.lag = 1000
    result = run("stop", "--block-attempts=1", "hello")
    assert result == Result(
        1,
        "",
        "Error waiting for units: timed out waiting for unit hello.service to report state loaded\n"
        "Failed to stop units [hello.service].\n",
    )


def test_no_units_given(run: Run) -> None:
    assert run("stop") == Result(0, "", "No units given\n")


def test_many_units_are_stopped_concurrently_and_reported_in_name_order(
    fleet: FakeFleet, capsys: pytest.CaptureFixture[str]
) -> None:
    names = scrambled(2 * MAX_IN_FLIGHT)
    for name in names:
        fleet.add_unit(name, HELLO, desired="launched")
    gate = Gate(fleet.handle, MAX_IN_FLIGHT, is_write, by_position(names))
    assert main(["stop", *names], transport=gate.transport()) == 0
    in_order = sorted(names)
    assert capsys.readouterr() == (
        "".join(f"Unit {name} loaded on {ON_A}\n" for name in in_order),
        f"Successfully stopped units [{' '.join(in_order)}].\n",
    )
    assert (gate.refusals, gate.batches, gate.widest) == ([], 2, MAX_IN_FLIGHT)
    reads = [r.url.path for r in fleet.requests if r.method == "GET"]
    assert reads == ["/fleet/v1/units", "/fleet/v1/units", "/fleet/v1/machines"]
