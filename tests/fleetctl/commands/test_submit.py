"""`fleetctl submit`: create units from local files and templates, --replace, validation."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from fleetctl.app import main
from fleetctl.client import MAX_IN_FLIGHT
from tests.fleetctl.conftest import HELLO, Result, Run
from tests.fleetctl.fake_api import FakeFleet, options_of
from tests.fleetctl.gate import Gate, by_position, is_write, scrambled

CHANGED = HELLO.replace("Hello World", "Hello again")


def bodies(fleet: FakeFleet) -> list[dict[str, object]]:
    return [json.loads(request.content) for request in fleet.writes()]


def test_submit_creates_the_unit_without_a_desired_state(
    run: Run, fleet: FakeFleet, unit_files: Path
) -> None:
    result = run("submit", "hello")
    assert (result.code, result.out, result.err) == (0, "Unit hello.service inactive\n", "")
    assert bodies(fleet) == [{"name": "hello.service", "options": options_of(HELLO)}]
    assert fleet.units["hello.service"].desired == "inactive"


def test_an_unknown_x_fleet_key_is_submitted_with_fleets_warning(
    run: Run, fleet: FakeFleet, unit_files: Path
) -> None:
    text = "[Service]\nExecStart=/bin/true\n[X-Fleet]\nMachineMetdata=role=db\n"
    (unit_files / "typo.service").write_text(text)
    result = run("submit", "typo")
    assert (result.code, result.out) == (0, "Unit typo.service inactive\n")
    assert result.err == (
        "WARN fleetctl.go:674: Unit typo.service: "
        'unrecognized requirement in [X-Fleet] section: "MachineMetdata"\n'
    )
    assert bodies(fleet) == [{"name": "typo.service", "options": options_of(text)}]


def test_submit_several_units_in_order(run: Run, fleet: FakeFleet, unit_files: Path) -> None:
    result = run("submit", "hello.service", "g")
    assert result.out == "Unit hello.service inactive\nUnit g.service inactive\n"
    assert sorted(fleet.units) == ["g.service", "hello.service"]


def test_no_units_given(run: Run, fleet: FakeFleet) -> None:
    assert run("submit") == Result(0, "", "No units given\n")
    assert fleet.requests == []


def test_an_existing_unit_is_left_alone(run: Run, fleet: FakeFleet, unit_files: Path) -> None:
    fleet.add_unit("hello.service", HELLO, desired="launched")
    result = run("submit", "hello")
    assert (result.code, result.out, result.err) == (0, "", "")
    assert fleet.writes() == []


def test_a_changed_file_needs_replace(run: Run, fleet: FakeFleet, unit_files: Path) -> None:
    fleet.add_unit("hello.service", CHANGED)
    result = run("submit", "hello")
    assert result.code == 0
    assert result.err == (
        "WARNING: Unit hello.service in registry differs from local unit file hello.service. "
        "Add --replace to override.\n"
    )
    assert fleet.writes() == []


def test_replace_recreates_an_inactive_unit(run: Run, fleet: FakeFleet, unit_files: Path) -> None:
    fleet.add_unit("hello.service", CHANGED)
    result = run("submit", "--replace", "hello")
    assert (result.code, result.out) == (0, "Unit hello.service inactive\n")
    assert bodies(fleet) == [{"name": "hello.service", "options": options_of(HELLO)}]


def test_replace_refuses_a_launched_unit(run: Run, fleet: FakeFleet, unit_files: Path) -> None:
    fleet.add_unit("hello.service", CHANGED, desired="launched")
    result = run("submit", "--replace", "hello")
    assert result.code == 0
    assert result.err == (
        "Warning: can not replace Unit(hello.service) in state 'launched', "
        "use the appropriate command\n"
    )
    assert fleet.writes() == []


def test_replace_with_the_same_file(run: Run, fleet: FakeFleet, unit_files: Path) -> None:
    fleet.add_unit("hello.service", HELLO)
    result = run("submit", "--replace", "hello")
    assert result.out == "Found same Unit(hello.service) in Registry, nothing to do\n"
    assert fleet.writes() == []


def test_an_instance_from_a_local_template(run: Run, fleet: FakeFleet, workdir: Path) -> None:
    (workdir / "worker@.service").write_text("[Service]\nExecStart=/bin/work %i\n")
    result = run("submit", "worker@1", "worker@2.service")
    assert result.out == "Unit worker@1.service inactive\nUnit worker@2.service inactive\n"
    assert fleet.units["worker@2.service"].options == options_of(
        "[Service]\nExecStart=/bin/work %i\n"
    )


def test_a_template_itself_may_be_submitted(run: Run, fleet: FakeFleet, workdir: Path) -> None:
    (workdir / "worker@.service").write_text("[Service]\nExecStart=/bin/work %i\n")
    assert run("submit", "worker@.service").out == "Unit worker@.service inactive\n"


def test_a_missing_unit(run: Run, fleet: FakeFleet, workdir: Path) -> None:
    result = run("submit", "nope")
    assert result.code == 1
    assert result.err == (
        "Error creating units: unable to find Unit(nope.service) in Registry or on filesystem\n"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "ExecStart=/bin/true\n",
            "failed getting Unit(bad.service) from file: malformed unit file: line 1: "
            "option before any section",
        ),
        ("", "the unit file has no options"),
    ],
)
def test_an_invalid_file_is_refused_before_anything_is_sent(
    text: str, message: str, run: Run, fleet: FakeFleet, unit_files: Path
) -> None:
    (unit_files / "bad.service").write_text(text)
    result = run("submit", "hello", "bad")
    assert (result.code, result.out, result.err) == (1, "", f"Error creating units: {message}\n")
    assert fleet.requests == []


def test_the_servers_refusal_is_shown(run: Run, fleet: FakeFleet, unit_files: Path) -> None:
    fleet.break_route("PUT", "/units/hello.service", 400, "unit options are too large")
    result = run("submit", "hello")
    assert result.code == 1
    assert result.err == (
        "Error creating units: failed creating unit hello.service: "
        "unit options are too large (HTTP 400)\n"
    )


def test_sign_is_deprecated(run: Run, fleet: FakeFleet, unit_files: Path) -> None:
    result = run("submit", "--sign", "hello")
    assert result.code == 0
    assert "WARNING: The signed/verified units feature is DEPRECATED" in result.err


def test_json_output(run: Run, fleet: FakeFleet, unit_files: Path) -> None:
    result = run("--output", "json", "submit", "hello")
    assert json.loads(result.out) == {
        "command": "submit",
        "ok": True,
        "units": [
            {"name": "hello.service", "created": True, "replaced": False, "state": "inactive"}
        ],
        "errors": [],
        "warnings": [],
    }


def test_many_units_are_created_concurrently_and_reported_in_argument_order(
    fleet: FakeFleet, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (workdir / "s@.service").write_text(HELLO)
    names = scrambled(2 * MAX_IN_FLIGHT)
    gate = Gate(fleet.handle, MAX_IN_FLIGHT, is_write, by_position(names))
    assert main(["submit", *names], transport=gate.transport()) == 0
    assert capsys.readouterr() == ("".join(f"Unit {name} inactive\n" for name in names), "")
    assert (gate.refusals, gate.batches, gate.widest) == ([], 2, MAX_IN_FLIGHT)
    # the registry is read once (one list), then one poll sees every unit inactive
    assert [r.url.path for r in fleet.requests if r.method == "GET"] == ["/fleet/v1/units"] * 2


def test_a_failed_create_among_many(run: Run, fleet: FakeFleet, workdir: Path) -> None:
    (workdir / "s@.service").write_text(HELLO)
    names = scrambled(2 * MAX_IN_FLIGHT)
    fleet.break_route("PUT", f"/units/{names[20]}", 500, "etcd is unreachable")
    assert run("submit", *names) == Result(
        1,
        "",
        "Error creating units: failed creating unit s@12.service: etcd is unreachable (HTTP 500)\n",
    )


def test_an_instance_and_its_template_are_read_together(
    fleet: FakeFleet, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (workdir / "s@.service").write_text(HELLO)

    def registry_read(request: httpx.Request) -> bool:  # the reads before the create
        return request.method == "GET" and not fleet.writes()

    gate = Gate(fleet.handle, 2, registry_read)
    assert main(["submit", "s@1.service"], transport=gate.transport()) == 0
    assert capsys.readouterr() == ("Unit s@1.service inactive\n", "")
    assert (gate.refusals, gate.batches) == ([], 1)
