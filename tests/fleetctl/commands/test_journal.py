"""`fleetctl journal`: fleet's flags and messages, journalctl's output modes, over the API."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest

from fleetctl.app import hoist_global_flags
from fleetctl.commands.journal import format_entry
from tests.fleetctl.conftest import GLOBAL, HELLO, Result, Run
from tests.fleetctl.fake_api import FakeFleet

STAMP = 1764763201_250000  # microseconds


def entry(message: Any, n: int = 0) -> dict[str, Any]:
    return {
        "__CURSOR": f"s=1;i={n}",
        "__REALTIME_TIMESTAMP": str(STAMP + n),
        "_HOSTNAME": "node2",
        "SYSLOG_IDENTIFIER": "sh",
        "_PID": "71",
        "MESSAGE": message,
    }


def local(pattern: str) -> str:
    return datetime.fromtimestamp(STAMP / 1e6).astimezone().strftime(pattern)


@pytest.fixture
def running(fleet: FakeFleet) -> FakeFleet:
    fleet.add_unit("hello.service", HELLO, desired="launched")
    fleet.journals["hello.service"] = [entry(f"line {n}", n) for n in range(20)]
    return fleet


def test_the_last_ten_lines_in_short_format(run: Run, running: FakeFleet) -> None:
    result = run("journal", "hello")
    assert (result.code, result.err) == (0, "")
    lines = result.out.splitlines()
    assert len(lines) == 10
    assert lines[0] == f"{local('%b %d %H:%M:%S')} node2 sh[71]: line 10"
    assert lines[-1].endswith("sh[71]: line 19")
    query = running.requests[-1].url.params
    assert (query["lines"], query["follow"]) == ("10", "false")


def test_lines_and_modes(run: Run, running: FakeFleet) -> None:
    assert run("journal", "--lines", "3", "--output", "cat", "hello.service").out == (
        "line 17\nline 18\nline 19\n"
    )
    as_json = run("journal", "--lines=2", "--output=json", "hello")
    assert [json.loads(line)["MESSAGE"] for line in as_json.out.splitlines()] == [
        "line 18",
        "line 19",
    ]
    # the global --output json before the command: the same lines, and no other document
    assert run("--output", "json", "journal", "--lines=2", "hello").out == as_json.out
    assert run("journal", "--lines", "0", "hello").out == ""


def test_output_after_the_command_is_the_journal_mode_not_the_global_format() -> None:
    assert hoist_global_flags(["journal", "--output", "cat", "x"]) == [
        "journal",
        "--output",
        "cat",
        "x",
    ]
    assert hoist_global_flags(["status", "--output", "json", "x"]) == [
        "--output",
        "json",
        "status",
        "x",
    ]


def test_entry_formats() -> None:
    record = entry("héllo")
    assert format_entry(record, "short-iso").startswith(local("%Y-%m-%dT%H:%M:%S%z") + " node2")
    assert format_entry(record, "short-precise").startswith(local("%b %d %H:%M:%S") + ".250000")
    assert format_entry(entry([104, 105, 255]), "cat") == "hi\ufffd"  # bytes that are not UTF-8
    assert format_entry(entry(None), "cat") == "[blob data]"  # journalctl's null for > 4 KiB
    no_pid = {"__REALTIME_TIMESTAMP": str(STAMP), "_COMM": "bash", "MESSAGE": "x"}
    assert format_entry(no_pid, "short").endswith(" localhost bash: x")
    assert json.loads(format_entry(record, "json-pretty")) == record


def test_follow_prints_until_the_stream_ends_and_says_why(run: Run, running: FakeFleet) -> None:
    running.journal_end["hello.service"] = f"unit hello.service moved to machine {'b' * 32}"
    result = run("journal", "-f", "--lines", "1", "--output", "cat", "hello")
    assert result == Result(0, "line 19\n", f"unit hello.service moved to machine {'b' * 32}\n")
    assert running.requests[-1].url.params["follow"] == "true"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "One unit file must be provided.\n"),
        (("a", "b"), "One unit file must be provided.\n"),
        (("nope",), "Unit nope.service does not exist.\n"),
        (("g",), "Unable to retrieve journal of global unit g.service.\n"),
        (("idle",), "Unit idle.service does not appear to be running.\n"),
        (
            ("--output", "verbose", "hello"),
            "Invalid --output 'verbose': use one of short, "
            "short-iso, short-precise, cat, json, json-pretty.\n",
        ),
        (("--lines", "-1", "hello"), "Invalid --lines -1: use a number from 0 to 10000.\n"),
    ],
)
def test_fleet_messages(run: Run, running: FakeFleet, args: tuple[str, ...], message: str) -> None:
    running.add_unit("g.service", GLOBAL, desired="launched")
    running.add_unit("idle.service", HELLO)
    assert run("journal", *args) == Result(1, "", message)


def test_a_unit_that_stopped_since_it_was_checked(run: Run, running: FakeFleet) -> None:
    running.break_route("GET", "/units/hello.service/journal", 409, "unit is not running")
    assert run("journal", "hello") == Result(
        1, "", "Unit hello.service does not appear to be running.\n"
    )


def test_an_unreachable_machine_is_reported(run: Run, running: FakeFleet) -> None:
    message = "cannot reach the fleetd of machine x at 10.0.0.2:49154: connection refused"
    running.break_route("GET", "/units/hello.service/journal", 502, message)
    result = run("journal", "hello")
    assert result == Result(
        1, "", f"Error retrieving journal of unit hello.service: {message} (HTTP 502)\n"
    )
