"""`fleetctl list-unit-files`: fleet's columns (target, global, dstate, state, desc, tmachine)."""

from __future__ import annotations

import json

import pytest

from fleetd.core.unitfile import parse_unit
from tests.fleetctl.conftest import DB, GLOBAL, HELLO, MACHINE_A, Result, Run
from tests.fleetctl.fake_api import FakeFleet


@pytest.fixture
def cluster(fleet: FakeFleet) -> FakeFleet:
    fleet.add_unit("hello.service", HELLO, desired="launched")
    fleet.add_unit("g.service", GLOBAL, desired="launched")
    fleet.unplaceable["db.service"] = ["no machine has metadata role=db"]
    fleet.add_unit("db.service", DB, desired="launched")
    fleet.add_unit("idle.service", "[Service]\nExecStart=/bin/true\n")
    return fleet


def short(text: str) -> str:
    return parse_unit(text).hash[:7]


def test_default_columns(run: Run, cluster: FakeFleet) -> None:
    idle = short("[Service]\nExecStart=/bin/true\n")
    assert run("list-unit-files") == Result(
        0,
        "UNIT\t\tHASH\tDSTATE\t\tSTATE\t\tTARGET\n"
        f"db.service\t{short(DB)}\tlaunched\tinactive\t-\n"
        f"g.service\t{short(GLOBAL)}\tlaunched\t-\t\tglobal\n"
        f"hello.service\t{short(HELLO)}\tlaunched\tlaunched\t113f16a7.../172.17.8.103\n"
        f"idle.service\t{idle}\tinactive\tinactive\t-\n",
        "",
    )


def test_desc_and_global(run: Run, cluster: FakeFleet) -> None:
    result = run("list-unit-files", "--no-legend", "--fields", "unit,global,desc")
    assert result.out == (
        "db.service\tfalse\tDatabase\n"
        "g.service\ttrue\tEverywhere\n"
        "hello.service\tfalse\tHello World\n"
        "idle.service\tfalse\t-\n"
    )


def test_full(run: Run, cluster: FakeFleet) -> None:
    result = run("list-unit-files", "--full", "--no-legend", "--fields", "unit,hash,target")
    assert f"hello.service\t{parse_unit(HELLO).hash}\t{MACHINE_A}/172.17.8.103\n" in result.out


def test_tmachine_is_a_deprecated_alias(run: Run, cluster: FakeFleet) -> None:
    result = run("list-unit-files", "--no-legend", "--fields", "unit,tmachine")
    assert result.err == 'WARNING: The "tmachine" field is deprecated. Use "target" instead\n'
    assert "hello.service\t113f16a7.../172.17.8.103\n" in result.out


def test_bad_field(run: Run) -> None:
    assert run("list-unit-files", "--fields", "unit,machine") == Result(
        1, "", 'Invalid key in output format: "machine"\n'
    )


def test_pages_are_followed(run: Run, fleet: FakeFleet) -> None:
    fleet.page_limit = 2
    for index in range(5):
        fleet.add_unit(f"u{index}.service", HELLO)
    result = run("list-unit-files", "--no-legend", "--fields", "unit")
    assert result.out == "".join(f"u{index}.service\n" for index in range(5))


def test_an_api_error(run: Run, fleet: FakeFleet) -> None:
    fleet.break_route("GET", "/units", 500, "")
    assert run("list-unit-files") == Result(
        1, "", "Error retrieving list of units from fleet API (HTTP 500)\n"
    )


def test_json(run: Run, cluster: FakeFleet) -> None:
    document = json.loads(
        run("--output", "json", "list-unit-files", "--fields", "unit,state,target,global").out
    )
    assert document["unitFiles"] == [
        {"unit": "db.service", "state": "inactive", "target": None, "global": "false"},
        {"unit": "g.service", "state": None, "target": "global", "global": "true"},
        {"unit": "hello.service", "state": "launched", "target": MACHINE_A, "global": "false"},
        {"unit": "idle.service", "state": "inactive", "target": None, "global": "false"},
    ]
