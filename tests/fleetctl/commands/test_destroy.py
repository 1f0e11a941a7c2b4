"""`fleetctl destroy`: delete, then (unlike fleet's inverted test) wait until the unit is gone."""

from __future__ import annotations

import pytest

from fleetctl.app import main
from fleetctl.client import MAX_IN_FLIGHT
from tests.fleetctl.conftest import HELLO, Result, Run
from tests.fleetctl.fake_api import FakeFleet
from tests.fleetctl.gate import Gate, by_position, is_write, scrambled


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


def test_no_unit_in_the_registry_is_fleets_message(run: Run, fleet: FakeFleet) -> None:
    assert run("destroy", "nope", "other") == Result(0, "", "Units not found in registry\n")
    assert run("destroy", "--no-block", "nope") == Result(0, "", "Units not found in registry\n")


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


@pytest.mark.parametrize("no_block", [True, False])
def test_many_units_are_deleted_concurrently_and_reported_in_name_order(
    fleet: FakeFleet, capsys: pytest.CaptureFixture[str], no_block: bool
) -> None:
    names = scrambled(2 * MAX_IN_FLIGHT)
    for name in names:
        fleet.add_unit(name, HELLO, desired="launched")
    gate = Gate(fleet.handle, MAX_IN_FLIGHT, is_write, by_position(names))
    argv = ["destroy", *(["--no-block"] if no_block else []), *names]
    assert main(argv, transport=gate.transport()) == 0
    assert capsys.readouterr() == ("".join(f"Destroyed {n}\n" for n in sorted(names)), "")
    assert (gate.refusals, gate.batches, gate.widest) == ([], 2, MAX_IN_FLIGHT)
    assert fleet.units == {}
    polls = [r.url.path for r in fleet.requests if r.method == "GET"]
    assert polls == ([] if no_block else ["/fleet/v1/units", "/fleet/v1/state"])


def test_failed_deletes_among_many_are_reported_in_name_order(run: Run, fleet: FakeFleet) -> None:
    names = scrambled(2 * MAX_IN_FLIGHT)
    for name in names:
        fleet.add_unit(name, HELLO)
    broken = sorted(names)[3], sorted(names)[30]
    for name in broken:
        fleet.break_route("DELETE", f"/units/{name}", 500, f"cannot delete {name}")
    result = run("destroy", *names)
    assert result.code == 1
    assert result.out == "".join(f"Destroyed {n}\n" for n in sorted(names) if n not in broken)
    assert result.err == "".join(
        f"Error destroying units: cannot delete {name} (HTTP 500)\n" for name in broken
    )
