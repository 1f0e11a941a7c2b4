"""`fleetctl cat`: the registry's unit file in fleet's serialization, no newline added."""

from __future__ import annotations

import json

from fleetd.core.unitfile import parse_unit
from tests.fleetctl.conftest import HELLO, Result, Run
from tests.fleetctl.fake_api import FakeFleet

MESSY = "# comment\n[Unit]\nDescription = Hello World\n\n\n[Service]\nExecStart=/bin/true\n"


def test_cat_prints_the_serialized_unit(run: Run, fleet: FakeFleet) -> None:
    fleet.add_unit("hello.service", MESSY)
    expected = "[Unit]\nDescription=Hello World\n\n[Service]\nExecStart=/bin/true\n"
    assert run("cat", "hello") == Result(0, expected, "")


def test_a_missing_unit(run: Run) -> None:
    assert run("cat", "nope.service") == Result(1, "", "Unit nope.service not found\n")


def test_exactly_one_unit(run: Run, fleet: FakeFleet) -> None:
    assert run("cat") == Result(1, "", "One unit file must be provided\n")
    assert run("cat", "a", "b") == Result(1, "", "One unit file must be provided\n")
    assert fleet.requests == []


def test_an_api_error(run: Run, fleet: FakeFleet) -> None:
    fleet.break_route("GET", "/units/hello.service", 500, "")
    assert run("cat", "hello") == Result(1, "", "Error retrieving Unit hello.service: HTTP 500\n")


def test_json(run: Run, fleet: FakeFleet) -> None:
    fleet.add_unit("hello.service", HELLO)
    document = json.loads(run("--output", "json", "cat", "hello").out)
    assert document["unitFile"] == parse_unit(HELLO).serialize()
    assert document["unit"]["name"] == "hello.service"
