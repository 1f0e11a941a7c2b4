"""`fleetctl list-machines`: fleet's columns, metadata legend, and its error message."""

from __future__ import annotations

import json

import httpx
import pytest

from fleetctl.app import main
from tests.fleetctl.conftest import MACHINE_A, MACHINE_B, Result, Run
from tests.fleetctl.fake_api import FakeFleet


def test_default_columns(run: Run) -> None:
    assert run("list-machines") == Result(
        0,
        "MACHINE\t\tIP\t\tMETADATA\n"
        "113f16a7...\t172.17.8.103\taz=us-west-1b,role=web\n"
        "2c7a0a25...\t172.17.8.104\t-\n",
        "",
    )


def test_full_and_fields(run: Run) -> None:
    assert run("list-machines", "-l", "--no-legend", "--fields", "machine,ip").out == (
        f"{MACHINE_A}\t172.17.8.103\n{MACHINE_B}\t172.17.8.104\n"
    )


def test_a_machine_without_an_ip(run: Run, fleet: FakeFleet) -> None:
    fleet.add_machine("0" * 32)
    assert (
        run("list-machines", "--no-legend").out.splitlines()[0] == "00000000...\t-\t\t-"
    )  # aligned with the IPs below


def test_bad_field(run: Run) -> None:
    assert run("list-machines", "--fields", "machine,unit").code == 1


def test_an_api_error_names_the_possible_causes(run: Run, fleet: FakeFleet) -> None:
    fleet.break_route("GET", "/machines", 503, "fleet server unable to communicate with etcd")
    result = run("list-machines")
    assert result.code == 1
    assert result.err.splitlines() == [
        "Error retrieving list of active machines from fleet API "
        "(fleet server unable to communicate with etcd (HTTP 503))",
        "Possible issues: etcd is unhealthy, fleetd is not running, or fleetd does not serve "
        "its API at unix:///var/run/fleet.sock",
    ]


def test_an_unreachable_api(capsys: pytest.CaptureFixture[str]) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    code = main(
        ["--endpoint", "http://10.0.0.9:49153", "list-machines"],
        transport=httpx.MockTransport(refuse),
    )
    assert code == 1
    assert capsys.readouterr().err.splitlines()[0] == (
        "Error retrieving list of active machines from fleet API "
        "(cannot reach http://10.0.0.9:49153: [Errno 111] Connection refused)"
    )


def test_json(run: Run) -> None:
    document = json.loads(run("--output", "json", "list-machines").out)
    assert document["machines"] == [
        {
            "machine": MACHINE_A,
            "ip": "172.17.8.103",
            "metadata": {"az": "us-west-1b", "role": "web"},
        },
        {"machine": MACHINE_B, "ip": "172.17.8.104", "metadata": None},
    ]
