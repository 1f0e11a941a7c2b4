"""fleetctl over TCP with a bearer token (`FLEETCTL_API_TOKEN`), against the API as `serve_api`
serves it on 127.0.0.1: the token's happy path, and clear refusals without it."""

from __future__ import annotations

import pytest

from tests.integration.cluster import DB1, DB2, TOKEN, WEB, Cluster, legend
from tests.integration.scenario import HELLO, fleet_hash, short_hash, start_the_set

UNAUTHORIZED = "missing or wrong bearer token (HTTP 401)"


async def test_start_list_destroy_over_tcp(
    fleet_cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEETCTL_API_TOKEN", TOKEN)
    fleet_cluster.write_unit("hello.service", HELLO)

    start = await fleet_cluster.fleetctl_tcp("start", "hello.service")
    assert (start.code, start.err) == (0, "")
    assert start.out == (
        f"Unit hello.service inactive\nUnit hello.service launched on {legend(WEB)}\n"
    )
    files = await fleet_cluster.fleetctl_tcp("list-unit-files")
    assert (files.code, files.err) == (0, "")
    assert files.out == (
        "UNIT\t\tHASH\tDSTATE\t\tSTATE\t\tTARGET\n"
        f"hello.service\t{fleet_hash(HELLO)[:7]}\tlaunched\tlaunched\t{legend(WEB)}\n"
    )
    machines = await fleet_cluster.fleetctl_tcp("list-machines")
    assert (machines.code, machines.err) == (0, "")
    assert machines.out == (
        "MACHINE\t\tIP\t\tMETADATA\n"
        "1a2b3c4d...\t127.0.0.1\trole=web\n"
        "5e6f7a8b...\t127.0.0.1\trole=db\n"
        "9c0d1e2f...\t127.0.0.1\trole=db\n"
    )

    destroy = await fleet_cluster.fleetctl_tcp("destroy", "hello.service")
    assert (destroy.code, destroy.out, destroy.err) == (0, "Destroyed hello.service\n", "")
    files = await fleet_cluster.fleetctl_tcp("list-unit-files")
    assert (files.code, files.out, files.err) == (0, "UNIT\tHASH\tDSTATE\tSTATE\tTARGET\n", "")
    assert await fleet_cluster.states() == {}


async def test_the_whole_set_over_tcp_with_the_endpoint_from_the_environment(
    fleet_cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEETCTL_API_TOKEN", TOKEN)
    await start_the_set(fleet_cluster, over_tcp=True)

    monkeypatch.setenv("FLEETCTL_ENDPOINT", fleet_cluster.tcp_endpoint)
    files = await fleet_cluster.run("list-unit-files", "--fields", "unit,hash,target")
    assert (files.code, files.err) == (0, "")
    assert files.out == (
        "UNIT\t\tHASH\tTARGET\n"
        f"db.service\t{short_hash('db.service')}\t{legend(DB1)}\n"
        f"global.service\t{short_hash('global.service')}\tglobal\n"
        f"hello.service\t{short_hash('hello.service')}\t{legend(WEB)}\n"
        f"pair-a.service\t{short_hash('pair-a.service')}\t{legend(DB2)}\n"
        f"pair-b.service\t{short_hash('pair-b.service')}\t{legend(DB2)}\n"
        f"web@1.service\t{short_hash('web@1.service')}\t{legend(WEB)}\n"
        f"web@2.service\t{short_hash('web@2.service')}\t-\n"
    )

    # a list of endpoints: the first is used, with fleetctl's warning
    endpoints = f"{fleet_cluster.tcp_endpoint},{fleet_cluster.unix_endpoint}"
    monkeypatch.setenv("FLEETCTL_ENDPOINT", endpoints)
    machines = await fleet_cluster.run("list-machines", "--no-legend", "--fields", "machine")
    assert (machines.code, machines.out) == (0, "1a2b3c4d...\n5e6f7a8b...\n9c0d1e2f...\n")
    assert machines.err == (
        "WARNING: --endpoint lists 2 endpoints; fleetctl uses only the first, "
        f"{fleet_cluster.tcp_endpoint}\n"
    )


@pytest.mark.parametrize("token", ["wrong-token", None], ids=["wrong", "missing"])
async def test_tcp_refuses_a_wrong_or_missing_token(
    fleet_cluster: Cluster, monkeypatch: pytest.MonkeyPatch, token: str | None
) -> None:
    if token is not None:
        monkeypatch.setenv("FLEETCTL_API_TOKEN", token)
    fleet_cluster.write_unit("hello.service", HELLO)

    machines = await fleet_cluster.fleetctl_tcp("list-machines")
    assert (machines.code, machines.out) == (1, "")
    assert machines.err == (
        f"Error retrieving list of active machines from fleet API ({UNAUTHORIZED})\n"
        "Possible issues: etcd is unhealthy, fleetd is not running, or fleetd does not serve "
        f"its API at {fleet_cluster.tcp_endpoint}\n"
    )
    files = await fleet_cluster.fleetctl_tcp("list-unit-files")
    assert (files.code, files.out) == (1, "")
    assert files.err == f"Error retrieving list of units from fleet API ({UNAUTHORIZED})\n"
    start = await fleet_cluster.fleetctl_tcp("start", "hello.service")
    assert (start.code, start.out, start.err) == (1, "", f"Error creating units: {UNAUTHORIZED}\n")
    destroy = await fleet_cluster.fleetctl_tcp("destroy", "hello.service")
    assert (destroy.code, destroy.out) == (1, "")
    assert destroy.err == f"Error destroying units: {UNAUTHORIZED}\n"
    stop = await fleet_cluster.fleetctl_tcp("stop", "hello.service")
    assert (stop.code, stop.out, stop.err) == (1, "", f"Error: {UNAUTHORIZED}\n")
    assert await fleet_cluster.unit_names() == []

    # the unix socket's file mode is its access control: no token is asked there
    unix = await fleet_cluster.fleetctl("list-machines", "--no-legend", "--fields", "machine")
    assert (unix.code, unix.out, unix.err) == (0, "1a2b3c4d...\n5e6f7a8b...\n9c0d1e2f...\n", "")
