"""`fleetctl start`: create, launch, wait for launched and for systemd; unplaceable units fail
with the engine's reasons instead of hanging."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx
import pytest

from fleetctl import output
from fleetctl.app import main
from fleetctl.client import MAX_IN_FLIGHT
from tests.fleetctl.conftest import HELLO, MACHINE_A, ON_A, FakeClock, Result, Run
from tests.fleetctl.fake_api import FakeFleet, options_of
from tests.fleetctl.gate import Gate, by_position, is_write, scrambled, unit_of

STARTED = f"Unit hello.service inactive\nUnit hello.service launched on {ON_A}\n"


def test_start_creates_launches_and_checks_systemd(
    run: Run, fleet: FakeFleet, unit_files: Path
) -> None:
    fleet.lag = 4
    assert run("start", "hello") == Result(0, STARTED, "")
    # a new unit is created launched, in one request (fleet's fleetctl sent two)
    assert [json.loads(r.content).get("desiredState") for r in fleet.writes()] == ["launched"]
    last = fleet.requests[-1]
    assert last.url.path == "/fleet/v1/state"
    assert dict(last.url.params) == {"unitName": "hello.service", "machineID": MACHINE_A}


def test_an_existing_launched_unit_is_skipped(run: Run, fleet: FakeFleet) -> None:
    fleet.add_unit("hello.service", HELLO, desired="launched")
    assert run("start", "hello") == Result(0, "", "")


def test_no_block(run: Run, fleet: FakeFleet, unit_files: Path) -> None:
    result = run("start", "--no-block", "hello")
    assert result == Result(
        0, "Unit hello.service inactive\nTriggered unit hello.service start\n", ""
    )
    assert not any(r.url.path.startswith("/fleet/v1/state") for r in fleet.requests)


def test_global_units(run: Run, fleet: FakeFleet, unit_files: Path) -> None:
    result = run("start", "g", "hello")
    assert result.code == 0
    assert result.out == (
        "Unit g.service inactive\nUnit hello.service inactive\n"
        "Triggered global unit g.service start\n"
        f"Unit hello.service launched on {ON_A}\n"
    )


def test_the_issue_1348_case_fails_with_the_reason(
    run: Run, fleet: FakeFleet, unit_files: Path, wait_clock: FakeClock
) -> None:
    fleet.unplaceable["db.service"] = ["no machine has metadata role=db"]
    result = run("start", "hello", "db")
    assert result.code == 1
    assert result.out == (
        "Unit hello.service inactive\nUnit db.service inactive\n"
        f"Unit hello.service launched on {ON_A}\n"
    )
    assert result.err == (
        "Error waiting for units: unit db.service cannot be placed: "
        "no machine has metadata role=db\n"
    )
    assert wait_clock.now == 2.0


def test_a_failed_unit_fails_at_once(run: Run, fleet: FakeFleet, unit_files: Path) -> None:
    fleet.systemd["hello.service"] = ("loaded", "failed", "failed")
    result = run("start", "hello")
    assert result == Result(
        1,
        STARTED,
        "Error waiting for systemd unit states, err: "
        "Unit hello.service failed: systemd reports loaded/failed/failed\n",
    )


def test_a_unit_that_never_becomes_active(
    run: Run, fleet: FakeFleet, unit_files: Path, wait_clock: FakeClock
) -> None:
    fleet.systemd["hello.service"] = ("loaded", "inactive", "dead")
    result = run("start", "hello")
    assert result.code == 1
    assert result.err == (
        "Error waiting for systemd unit states, err: Failed to find an active unit "
        "hello.service within 2s (systemd reports loaded/inactive/dead)\n"
    )
    assert wait_clock.now == 2.0


def test_a_slow_starter_is_waited_for_when_blocking_forever(
    fleet: FakeFleet, unit_files: Path, capsys: pytest.CaptureFixture[str], wait_clock: FakeClock
) -> None:
    fleet.systemd["hello.service"] = ("loaded", "activating", "start")
    polls = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/fleet/v1/state":
            polls.append(request)
            if wait_clock.now >= 7.0:  # after 7s of "activating", systemd is done
                fleet.states[("hello.service", MACHINE_A)]["systemdActiveState"] = "active"
        return fleet.handle(request)

    assert main(["start", "hello"], transport=httpx.MockTransport(handler)) == 0
    assert capsys.readouterr().out == STARTED
    assert wait_clock.now >= 7.0
    assert len(polls) > 28  # every 250 ms, and more often at first


def test_template_units_cannot_be_started(run: Run, fleet: FakeFleet, workdir: Path) -> None:
    (workdir / "worker@.service").write_text("[Service]\nExecStart=/bin/work %i\n")
    result = run("start", "worker@.service")
    assert result == Result(
        1, "", 'Error creating units: cannot activate template "worker@.service"\n'
    )
    assert fleet.requests == []


def test_an_instance_from_the_registrys_template(run: Run, fleet: FakeFleet, workdir: Path) -> None:
    fleet.add_unit("worker@.service", "[Service]\nExecStart=/bin/work %i\n")
    result = run("start", "worker@7")
    assert (
        result.out == f"Unit worker@7.service inactive\nUnit worker@7.service launched on {ON_A}\n"
    )
    assert fleet.units["worker@7.service"].options == options_of(
        "[Service]\nExecStart=/bin/work %i\n"
    )


def test_replace_restarts_a_changed_running_unit(
    run: Run, fleet: FakeFleet, unit_files: Path
) -> None:
    fleet.add_unit("hello.service", HELLO.replace("Hello World", "old"), desired="launched")
    fleet.lag = 2
    result = run("start", "--replace", "hello")
    assert result == Result(0, STARTED, "")
    bodies = [json.loads(r.content) for r in fleet.writes()]
    assert bodies == [
        {"name": "hello.service", "options": options_of(HELLO)},
        {"desiredState": "launched", "name": "hello.service"},
    ]


def test_json_output_of_an_unplaceable_unit(run: Run, fleet: FakeFleet, unit_files: Path) -> None:
    fleet.unplaceable["db.service"] = ["no machine has metadata role=db"]
    result = run("--output", "json", "start", "db")
    assert result.code == 1
    message = "unit db.service cannot be placed: no machine has metadata role=db"
    assert json.loads(result.out) == {
        "command": "start",
        "ok": False,
        "units": [
            {
                "name": "db.service",
                "created": True,
                "replaced": False,
                "state": "inactive",
                "error": message,
            }
        ],
        "errors": [f"Error waiting for units: {message}"],
        "warnings": [],
    }
    assert result.err == f"Error waiting for units: {message}\n"


def many_units(workdir: Path, count: int) -> list[str]:
    names = [f"web{index}.service" for index in range(count)]
    for name in names:
        (workdir / name).write_text(HELLO)
    return names


def test_many_units_off_a_terminal_print_plain_lines(
    run: Run, fleet: FakeFleet, workdir: Path
) -> None:
    names = many_units(workdir, 12)
    result = run("start", "--no-block", *names)
    assert result.code == 0
    assert "\x1b" not in result.out + result.err
    assert result.out.count("Triggered unit") == 12


def test_many_units_on_a_terminal_show_a_progress_bar(
    run: Run, fleet: FakeFleet, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(output, "is_terminal", lambda stream: True)
    names = many_units(workdir, 12)
    result = run("start", *names)
    assert result.code == 0
    assert "start: waiting for 12 units" in result.err
    launched = [f"Unit {name} launched on {ON_A}" for name in names]
    assert all(line in result.out + result.err for line in launched)


def lines(template: str, names: list[str]) -> str:
    return "".join(template.format(name) + "\n" for name in names)


def gets(fleet: FakeFleet) -> list[str]:
    return [r.url.path for r in fleet.requests if r.method == "GET"]


def test_no_block_of_many_units_writes_concurrently_and_prints_in_argument_order(
    fleet: FakeFleet, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (workdir / "s@.service").write_text(HELLO)
    names = scrambled(2 * MAX_IN_FLIGHT)
    gate = Gate(fleet.handle, MAX_IN_FLIGHT, is_write, by_position(names))
    assert main(["start", "--no-block", *names], transport=gate.transport()) == 0
    assert capsys.readouterr() == (
        lines("Unit {} inactive", names) + lines("Triggered unit {} start", names),
        "",
    )
    # each new unit is created launched: one write each, 16 at a time
    assert (gate.refusals, gate.batches, gate.widest) == ([], 2, MAX_IN_FLIGHT)
    assert gets(fleet) == ["/fleet/v1/units"]  # the registry; no wait for inactive
    assert {unit.desired for unit in fleet.units.values()} == {"launched"}


def test_many_units_are_waited_for_with_one_list_per_poll(
    fleet: FakeFleet, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (workdir / "s@.service").write_text(HELLO)
    names = scrambled(2 * MAX_IN_FLIGHT)
    gate = Gate(fleet.handle, MAX_IN_FLIGHT, is_write, by_position(names))
    assert main(["start", *names], transport=gate.transport()) == 0
    assert capsys.readouterr() == (
        lines("Unit {} inactive", names) + lines(f"Unit {{}} launched on {ON_A}", names),
        "",
    )
    assert gate.refusals == []
    # the registry, the wait for launched (and the machines for the legend), systemd's states
    assert gets(fleet) == [*["/fleet/v1/units"] * 2, "/fleet/v1/machines", "/fleet/v1/state"]


def test_a_few_units_are_read_and_written_concurrently(
    fleet: FakeFleet, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (workdir / "s@.service").write_text(HELLO)
    names = ["s@2.service", "s@10.service", "s@1.service"]

    def per_unit(request: httpx.Request) -> bool:  # not the one read of the template
        return request.url.path.startswith("/fleet/v1/units/") and unit_of(request) in names

    gate = Gate(fleet.handle, len(names), per_unit, by_position(names))
    assert main(["start", *names], transport=gate.transport()) == 0
    assert capsys.readouterr() == (
        lines("Unit {} inactive", names) + lines(f"Unit {{}} launched on {ON_A}", names),
        "",
    )
    # reads of the registry, the creates (launched at once), the launched poll
    assert (gate.refusals, gate.batches, gate.widest) == ([], 3, len(names))


COMPETING = HELLO + "\n[X-Fleet]\nConflicts=w@*.service\n"


def test_units_that_compete_for_a_machine_are_started_one_after_another_in_argument_order(
    fleet: FakeFleet, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """fleet sets target states in argument order, so of two conflicting instances the first
    named is placed first; concurrent writes would let the engine see either one first."""
    (workdir / "w@.service").write_text(COMPETING)
    names = [f"w@{n}.service" for n in (3, 1, 2)]
    order: list[str] = []
    arrived = threading.Semaphore(0)
    overlapped: list[str] = []

    def is_start(request: httpx.Request) -> bool:
        return request.method == "PUT" and b'"launched"' in request.content

    def handle(request: httpx.Request) -> httpx.Response:
        if is_start(request):
            order.append(unit_of(request))
            arrived.release()
            if len(order) == 1 and arrived.acquire(timeout=1.0) and arrived.acquire(timeout=1.0):
                overlapped.append("a second start arrived before the first was answered")
        return fleet.handle(request)

    assert main(["start", "--no-block", *names], transport=httpx.MockTransport(handle)) == 0
    assert capsys.readouterr().out == (
        lines("Unit {} inactive", names) + lines("Triggered unit {} start", names)
    )
    assert (order, overlapped) == (names, [])
