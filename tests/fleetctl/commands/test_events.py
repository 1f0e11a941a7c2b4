"""`fleetctl events` against the fake API: lines, JSON Lines, filters, resuming, errors."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.fleetctl.conftest import MACHINE_A, Result, Run
from tests.fleetctl.fake_api import FakeFleet

EVENTS: list[tuple[str, str, dict[str, Any]]] = [
    ("10", "unit", {"revision": 10, "unit": "hello.service", "action": "submitted",
                    "desiredState": "launched", "hash": "h"}),
    ("11", "placement", {"revision": 11, "unit": "hello.service", "machineID": MACHINE_A,
                         "action": "scheduled", "desiredState": "launched", "hash": "h"}),
    ("12", "unit-state", {"revision": 12, "unit": "hello.service", "machineID": MACHINE_A,
                          "action": "published", "loadState": "loaded",
                          "activeState": "active", "subState": "running", "hash": "h"}),
    ("13", "desired-state", {"revision": 13, "unit": "db.service", "desiredState": "loaded",
                             "previous": "launched"}),
    ("14", "unplaceable", {"revision": 14, "unit": "db.service",
                           "reasons": ["no machine has metadata role=db"]}),
    ("15", "machine", {"revision": 15, "machineID": MACHINE_A, "action": "metadata",
                       "key": "az", "value": "b"}),
    ("16", "relist", {"revision": 16, "reason": "revision 3 was compacted"}),
]  # fmt: skip


@pytest.fixture(autouse=True)
def events(fleet: FakeFleet) -> None:
    fleet.events = list(EVENTS)


def test_one_line_per_event(run: Run) -> None:
    result = run("events", "--count", "7")
    assert result.code == 0
    assert result.out.splitlines() == [
        "10         unit          hello.service            -           submitted (launched)",
        "11         placement     hello.service            113f16a7... scheduled (launched)",
        "12         unit-state    hello.service            113f16a7... loaded/active/running",
        "13         desired-state db.service               -           launched -> loaded",
        "14         unplaceable   db.service               -           no machine has metadata "
        "role=db",
        "15         machine       -                        113f16a7... metadata az=b",
        "16         relist        -                        -           events lost (revision 3 was "
        "compacted): list the cluster again",
    ]  # fmt: skip


def test_json_lines(run: Run) -> None:
    result = run("--output", "json", "events", "--count", "2")
    records = [json.loads(line) for line in result.out.splitlines()]
    assert records[0] == {"id": "10", "event": "unit", **EVENTS[0][2]}
    assert [r["event"] for r in records] == ["unit", "placement"]


def test_filters_and_since_go_to_the_api(run: Run, fleet: FakeFleet) -> None:
    result = run(
        "events", "--unit", "db*", "--kind", "unplaceable", "--since", "10", "--count", "1"
    )
    assert result.out.split()[:3] == ["14", "unplaceable", "db.service"]
    request = fleet.requests[-1]
    assert request.headers["last-event-id"] == "10"
    assert request.url.params.get_list("unit") == ["db*"]
    assert request.url.params.get_list("kind") == ["unplaceable"]


def test_reconnects_after_the_last_id_it_printed(run: Run, fleet: FakeFleet) -> None:
    fleet.stream_limit = 2  # each response ends after two events
    result = run("events", "--count", "5")
    assert [line.split()[0] for line in result.out.splitlines()] == ["10", "11", "12", "13", "14"]
    streams = [r for r in fleet.requests if r.url.path.endswith("/events")]
    assert [r.headers.get("last-event-id") for r in streams] == [None, "11", "13"]


def test_a_dropped_reader_resumes_without_gaps(run: Run, fleet: FakeFleet) -> None:
    fleet.drop_after = 1
    result = run("events", "--count", "3")
    assert [line.split()[0] for line in result.out.splitlines()] == ["10", "11", "12"]
    assert "the server dropped this reader: too slow" in result.err


def test_a_refused_request_is_an_error(run: Run, fleet: FakeFleet) -> None:
    result = run("events", "--since", "999")
    assert result == Result(1, "", "Error: bad event id '999'\n")


def test_an_unreachable_api_is_an_error(run: Run, fleet: FakeFleet) -> None:
    fleet.break_route("GET", "/events", 401, "missing or wrong bearer token")
    result = run("events")
    assert result.code == 1
    assert "missing or wrong bearer token" in result.err
