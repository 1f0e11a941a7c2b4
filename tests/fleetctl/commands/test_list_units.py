"""`fleetctl list-units`: fleet's columns, legends and tab layout, byte for byte."""

from __future__ import annotations

import json

import pytest

from fleetd.core.unitfile import parse_unit
from tests.fleetctl.conftest import GLOBAL, HELLO, MACHINE_A, MACHINE_B, Result, Run
from tests.fleetctl.fake_api import FakeFleet

HASH = parse_unit(HELLO).hash


@pytest.fixture
def cluster(fleet: FakeFleet) -> FakeFleet:
    fleet.add_unit("hello.service", HELLO, desired="launched")
    fleet.add_unit("g.service", GLOBAL, desired="launched")
    return fleet


def test_default_columns(run: Run, cluster: FakeFleet) -> None:
    assert run("list-units") == Result(
        0,
        "UNIT\t\tMACHINE\t\t\t\tACTIVE\tSUB\n"
        "g.service\t113f16a7.../172.17.8.103\tactive\trunning\n"
        "g.service\t2c7a0a25.../172.17.8.104\tactive\trunning\n"
        "hello.service\t113f16a7.../172.17.8.103\tactive\trunning\n",
        "",
    )


def test_full_shows_whole_ids_and_hashes(run: Run, cluster: FakeFleet) -> None:
    result = run("list-units", "--full", "--fields", "unit,machine,hash")
    assert result.out.splitlines()[0] == "UNIT\t\tMACHINE\t\t\t\t\t\tHASH"
    assert result.out.splitlines()[3] == f"hello.service\t{MACHINE_A}/172.17.8.103\t{HASH}"
    assert run("list-units", "-l").out == run("list-units", "--full").out


def test_fields_and_no_legend(run: Run, cluster: FakeFleet) -> None:
    result = run("list-units", "--no-legend", "--fields=unit,load,hash")
    assert result.out == (
        f"g.service\tloaded\t{parse_unit(GLOBAL).hash[:7]}\n"
        f"g.service\tloaded\t{parse_unit(GLOBAL).hash[:7]}\n"
        f"hello.service\tloaded\t{HASH[:7]}\n"
    )


def test_an_empty_cluster_prints_the_header(run: Run) -> None:
    assert run("list-units") == Result(0, "UNIT\tMACHINE\tACTIVE\tSUB\n", "")
    assert run("list-units", "--no-legend") == Result(0, "", "")


def test_empty_values_and_departed_machines(run: Run, fleet: FakeFleet) -> None:
    fleet.states[("x.service", "deadbeef" * 4)] = {"name": "x.service", "machineID": "deadbeef" * 4}
    fleet.states[("y.service", "")] = {"name": "y.service"}
    assert run("list-units", "--no-legend", "--fields", "unit,machine,active,hash").out == (
        "x.service\tdeadbeef...\t-\t-\ny.service\t-\t\t-\t-\n"
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [("unit,bogus", 'Invalid key in output format: "bogus"'), ("", "Must define output format")],
)
def test_bad_fields(fields: str, message: str, run: Run, fleet: FakeFleet) -> None:
    assert run("list-units", "--fields", fields) == Result(1, "", message + "\n")
    assert fleet.requests == []


def test_an_api_error(run: Run, fleet: FakeFleet) -> None:
    fleet.break_route("GET", "/state", 500, "etcd is unreachable")
    assert run("list-units") == Result(
        1,
        "",
        "Error retrieving list of unit states from fleet API (etcd is unreachable (HTTP 500))\n",
    )


def test_json_rows_have_full_values(run: Run, cluster: FakeFleet) -> None:
    result = run("--output", "json", "list-units", "--fields", "unit,machine,hash,sub")
    document = json.loads(result.out)
    assert document["states"][2] == {
        "unit": "hello.service",
        "machine": MACHINE_A,
        "hash": HASH,
        "sub": "running",
    }
    assert document["states"][1]["machine"] == MACHINE_B
    assert document["ok"] is True


def test_the_address_column_shows_a_pods_address_or_a_dash(run: Run, cluster: FakeFleet) -> None:
    cluster.states[("hello.service", MACHINE_A)]["podAddress"] = "10.244.3.2"
    assert run("list-units", "--fields", "unit,address") == Result(
        0,
        "UNIT\t\tADDRESS\ng.service\t-\ng.service\t-\nhello.service\t10.244.3.2\n",
        "",
    )
    assert run("list-units").out.splitlines()[0] == "UNIT\t\tMACHINE\t\t\t\tACTIVE\tSUB"
    document = json.loads(run("--output", "json", "list-units", "--fields", "unit,address").out)
    assert document["states"][0] == {"unit": "g.service", "address": None}
    assert document["states"][2] == {"unit": "hello.service", "address": "10.244.3.2"}
