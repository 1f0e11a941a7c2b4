"""`fleetctl destroy`: delete, then (unlike fleet's inverted test) wait until the unit is gone."""

from __future__ import annotations

from tests.fleetctl.conftest import HELLO, Result, Run
from tests.fleetctl.fake_api import FakeFleet


def test_destroy_waits_until_the_unit_has_stopped(run: Run, fleet: FakeFleet) -> None:
    fleet.add_unit("hello.service", HELLO, desired="launched")
    fleet.lag = 5
    assert run("destroy", "hello") == Result(0, "Destroyed hello.service\n", "")
    assert fleet.units == {}
    assert fleet.states == {}  # the agent's state was gone before "Destroyed" was printed


def test_no_block_does_not_wait(run: Run, fleet: FakeFleet) -> None:
    fleet.add_unit("hello.service", HELLO, desired="launched")
    fleet.lag = 5
    assert run("destroy", "--no-block", "hello") == Result(0, "Destroyed hello.service\n", "")
    assert fleet.states != {}
    assert [r.method for r in fleet.requests] == ["DELETE"]


def test_missing_units_are_skipped_silently(run: Run, fleet: FakeFleet) -> None:
    fleet.add_unit("b.service", HELLO)
    assert run("destroy", "nope", "b") == Result(0, "Destroyed b.service\n", "")


def test_a_failed_delete_does_not_stop_the_others(run: Run, fleet: FakeFleet) -> None:
    fleet.add_unit("a.service", HELLO)
    fleet.add_unit("b.service", HELLO)
    fleet.break_route("DELETE", "/units/a.service", 500, "etcd is unreachable")
    result = run("destroy", "a", "b")
    assert result == Result(
        1, "Destroyed b.service\n", "Error destroying units: etcd is unreachable (HTTP 500)\n"
    )


def test_a_timeout(run: Run, fleet: FakeFleet) -> None:
    fleet.add_unit("hello.service", HELLO, desired="launched")
    fleet.lag = 1000
    result = run("destroy", "--block-attempts", "1", "hello")
    assert result == Result(
        1, "", "Error waiting for units: timed out waiting for unit hello.service to be destroyed\n"
    )


def test_no_units_given(run: Run) -> None:
    assert run("destroy") == Result(0, "", "No units given\n")
