"""`fleetctl status`: a status block from the API (no SSH), fleet's messages and exit codes."""

from __future__ import annotations

import json

from fleetd.core.unitfile import parse_unit
from tests.fleetctl.conftest import DB, GLOBAL, HELLO, MACHINE_A, MACHINE_B, Result, Run
from tests.fleetctl.fake_api import FakeFleet

HELLO_BLOCK = f"""\
hello.service - Hello World
     Loaded: loaded
     Active: active (running)
    Machine: {MACHINE_A}/172.17.8.103
      State: launched (desired: launched)
       Hash: {parse_unit(HELLO).hash}
"""


def test_a_running_unit(run: Run, fleet: FakeFleet) -> None:
    fleet.add_unit("hello.service", HELLO, desired="launched")
    assert run("status", "hello") == Result(0, HELLO_BLOCK, "")


def test_blocks_are_separated_by_a_blank_line(run: Run, fleet: FakeFleet) -> None:
    fleet.add_unit("hello.service", HELLO, desired="launched")
    fleet.add_unit("hello2.service", HELLO, desired="launched")
    second = HELLO_BLOCK.replace("hello.service", "hello2.service")
    assert run("status", "hello", "hello2.service", "hello").out == HELLO_BLOCK + "\n" + second


def test_a_global_unit_has_a_block_per_machine(run: Run, fleet: FakeFleet) -> None:
    fleet.add_unit("g.service", GLOBAL, desired="launched")
    result = run("status", "g")
    assert result.code == 0
    blocks = result.out.split("\n\n")
    assert [block.splitlines()[3] for block in blocks] == [
        f"    Machine: {MACHINE_A}/172.17.8.103",
        f"    Machine: {MACHINE_B}/172.17.8.104",
    ]
    assert blocks[0].splitlines()[0] == "g.service - Everywhere"


def test_a_loaded_unit_is_not_active(run: Run, fleet: FakeFleet) -> None:
    fleet.add_unit("hello.service", HELLO, desired="loaded")
    result = run("status", "hello")
    assert result.code == 3
    assert "     Active: inactive (dead)\n" in result.out


def test_a_failed_unit(run: Run, fleet: FakeFleet) -> None:
    fleet.systemd["hello.service"] = ("loaded", "failed", "failed")
    fleet.add_unit("hello.service", HELLO, desired="launched")
    result = run("status", "hello")
    assert result.code == 3
    assert "     Active: failed (failed)\n" in result.out


def test_a_unit_systemd_refused_shows_systemds_reason(run: Run, fleet: FakeFleet) -> None:
    fleet.systemd["hello.service"] = ("bad-setting", "inactive", "dead")
    fleet.add_unit("hello.service", HELLO, desired="launched")
    for state in fleet.states.values():
        state["systemdLoadError"] = "Unit hello.service has a bad unit file setting."
    result = run("status", "hello")
    assert result.code == 3
    assert (
        "     Loaded: bad-setting (Unit hello.service has a bad unit file setting.)\n" in result.out
    )


def test_a_missing_unit(run: Run, fleet: FakeFleet) -> None:
    fleet.add_unit("hello.service", HELLO, desired="launched")
    assert run("status", "nope", "hello") == Result(1, "", "Unit nope.service does not exist.\n")


def test_an_inactive_unit(run: Run, fleet: FakeFleet) -> None:
    fleet.add_unit("hello.service", HELLO)
    assert run("status", "hello") == Result(
        1, "", "Unit hello.service does not appear to be loaded.\n"
    )


def test_an_unplaceable_unit_shows_why(run: Run, fleet: FakeFleet) -> None:
    fleet.unplaceable["db.service"] = ["no machine has metadata role=db", "conflicts with x"]
    fleet.add_unit("db.service", DB, desired="launched")
    assert run("status", "db") == Result(
        1,
        "db.service - Database\n"
        "     Loaded: -\n"
        "     Active: -\n"
        "    Machine: -\n"
        "      State: inactive (desired: launched)\n"
        f"       Hash: {parse_unit(DB).hash}\n"
        "Unplaceable: no machine has metadata role=db\n"
        "             conflicts with x\n",
        "Unit db.service does not appear to be loaded.\n",
    )


def test_no_units_given(run: Run) -> None:
    assert run("status") == Result(0, "", "No units given\n")


def test_json(run: Run, fleet: FakeFleet) -> None:
    fleet.add_unit("hello.service", HELLO, desired="launched")
    document = json.loads(run("--output", "json", "status", "hello").out)
    [record] = document["units"]
    assert record["name"] == "hello.service"
    assert record["currentState"] == "launched"
    assert record["description"] == "Hello World"
    assert record["states"][0]["systemdSubState"] == "running"


def test_the_journal_tail_follows_the_block(run: Run, fleet: FakeFleet) -> None:
    fleet.add_unit("hello.service", HELLO, desired="launched")
    fleet.journals["hello.service"] = [
        {"__CURSOR": str(n), "_HOSTNAME": "n", "MESSAGE": f"m{n}"} for n in range(12)
    ]
    result = run("status", "hello")
    assert result.code == 0
    block, tail = result.out.split("\n\n")
    assert block + "\n" == HELLO_BLOCK
    assert tail.splitlines() == [f"- n unknown: m{n}" for n in range(2, 12)]
    (journal,) = [r.url for r in fleet.requests if r.url.path.endswith("/journal")]
    assert (journal.path, journal.params["lines"]) == (
        "/fleet/v1/units/hello.service/journal",
        "10",
    )


def test_a_journal_that_cannot_be_read_is_said_on_stderr(run: Run, fleet: FakeFleet) -> None:
    fleet.add_unit("hello.service", HELLO, desired="launched")
    fleet.journals["hello.service"] = []
    fleet.break_route("GET", "/units/hello.service/journal", 502, "machine x unreachable")
    result = run("status", "hello")
    assert (result.code, result.out) == (0, HELLO_BLOCK)
    assert result.err == (
        "Unable to retrieve the journal of hello.service: machine x unreachable (HTTP 502)\n"
    )


def test_a_cluster_without_journals_shows_the_block_alone(run: Run, fleet: FakeFleet) -> None:
    fleet.add_unit("hello.service", HELLO, desired="launched")
    fleet.journals["hello.service"] = []
    message = "machine x publishes no node-to-node address"
    fleet.break_route("GET", "/units/hello.service/journal", 503, message)
    assert run("status", "hello") == Result(0, HELLO_BLOCK, "")
