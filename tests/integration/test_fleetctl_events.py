"""`fleetctl events` against the real API, engine and agents: a unit started with fleetctl shows
up in the stream as it is submitted, started, placed and run."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from tests.integration.cluster import TOKEN, WEB, Cluster
from tests.integration.scenario import HELLO


async def revision_now(cluster: Cluster) -> int:
    transport = httpx.AsyncHTTPTransport(uds=cluster.socket_path)
    async with httpx.AsyncClient(transport=transport, base_url="http://fleet") as http:
        snapshot = (await http.get("/fleet/v1/snapshot")).json()
    return int(snapshot["revision"])


async def test_a_started_units_events_in_order(
    fleet_cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet_cluster.write_unit("hello.service", HELLO)
    since = str(await revision_now(fleet_cluster))
    start = await fleet_cluster.fleetctl("start", "hello.service")
    assert start.code == 0, start.err
    # fleetctl runs one at a time here (each redirects the process's stdout): read from `since`
    async with asyncio.timeout(20):
        watched = await fleet_cluster.fleetctl(
            "events", "--since", since, "--unit", "hello.service",
            "--kind", "unit,desired-state,placement", "--count", "2",
        )  # fmt: skip
    assert (watched.code, watched.err) == (0, "")
    rows = [line.split(maxsplit=4) for line in watched.out.splitlines()]
    # fleetctl start creates a new unit launched, in one write: no desired-state change follows
    assert [(kind, unit) for _, kind, unit, _, _ in rows] == [
        ("unit", "hello.service"),
        ("placement", "hello.service"),
    ]
    assert rows[0][4] == "submitted (launched)"
    assert rows[1][3] == WEB[:8] + "..."
    ids = [int(row[0]) for row in rows]
    assert ids == sorted(ids)
    assert ids[0] > int(since)

    # over TCP with the token, as JSON Lines: the agent's published state
    monkeypatch.setenv("FLEETCTL_API_TOKEN", TOKEN)
    states = await fleet_cluster.fleetctl_tcp(
        "--output", "json", "events", "--since", since, "--kind", "unit-state", "--count", "1"
    )
    assert (states.code, states.err) == (0, "")
    record = json.loads(states.out)
    assert record["event"] == "unit-state"
    assert (record["unit"], record["machineID"]) == ("hello.service", WEB)


async def test_without_the_token_over_tcp_it_is_refused(
    fleet_cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLEETCTL_API_TOKEN", raising=False)
    refused = await fleet_cluster.fleetctl_tcp("events", "--count", "1")
    assert refused.code == 1
    assert "missing or wrong bearer token" in refused.err
