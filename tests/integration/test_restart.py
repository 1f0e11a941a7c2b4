"""`restart` against the real engine and agents (on the fake systemd): pyfleet's fleetctl, and
the sequence fleet's own Go client sends (fleetctl/restart.go), which works thanks to fleetd's
stop grace (`fleetd.api.stop_grace`). The Go client is not available to the tests, so its wire
behaviour is re-enacted: PUT `loaded`, poll GET until `launched`, PUT `launched`, poll again."""

from __future__ import annotations

import httpx
import pytest

from fleetd.api import stop_grace
from tests.engine.cluster import wait_until
from tests.integration.cluster import WEB, Cluster, legend
from tests.integration.scenario import GLOBAL, HELLO

WITHIN = 10.0


def systemd_calls(cluster: Cluster, name: str, machine: str = WEB) -> list[str]:
    calls = cluster.hosts[machine].manager.systemd.calls
    return [method for method, unit in calls if unit == name and method in ("start", "stop")]


async def test_pyfleet_restart_stops_and_starts_the_unit(fleet_cluster: Cluster) -> None:
    fleet_cluster.write_unit("hello.service", HELLO)
    assert (await fleet_cluster.fleetctl("start", "hello.service")).code == 0
    assert systemd_calls(fleet_cluster, "hello.service") == ["start"]
    restart = await fleet_cluster.fleetctl("restart", "hello.service")
    assert (restart.code, restart.err) == (0, "")
    assert restart.out == (
        f"Unit hello.service loaded on {legend(WEB)}\n"
        f"Unit hello.service launched on {legend(WEB)}\n"
    )
    assert systemd_calls(fleet_cluster, "hello.service") == ["start", "stop", "start"]


async def test_fleets_go_client_restart_completes(
    fleet_cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a grace no slow test machine outlasts; its length is fleetd's (tests/api/test_stop_grace.py)
    monkeypatch.setattr(stop_grace, "GRACE", 60.0)
    fleet_cluster.write_unit("hello.service", HELLO)
    assert (await fleet_cluster.fleetctl("start", "hello.service")).code == 0
    transport = httpx.AsyncHTTPTransport(uds=fleet_cluster.socket_path)
    async with httpx.AsyncClient(transport=transport, base_url="http://domain-sock") as go:
        path = "/fleet/v1/units/hello.service"

        async def current_state(headers: dict[str, str] | None = None) -> str:
            unit = (await go.get(path, headers=headers)).json()
            return str(unit["currentState"])

        put = await go.put(path, json={"name": "hello.service", "desiredState": "loaded"})
        assert put.status_code == 204
        # the worst case for fleet's client: the unit is already stopped when it first polls
        await wait_until(lambda: _stopped(fleet_cluster), "the unit to stop", within=WITHIN)
        assert await current_state({"X-Pyfleet-Exact-State": "1"}) == "loaded"
        assert await current_state() == "launched"  # what fleet's client waits for
        put = await go.put(path, json={"name": "hello.service", "desiredState": "launched"})
        assert put.status_code == 204

        async def launched() -> bool:
            return (
                await current_state() == "launched"
                and await current_state({"X-Pyfleet-Exact-State": "1"}) == "launched"
            )

        await wait_until(launched, "the unit to run again", within=WITHIN)
    assert systemd_calls(fleet_cluster, "hello.service") == ["start", "stop", "start"]


async def _stopped(cluster: Cluster) -> bool:
    return systemd_calls(cluster, "hello.service")[-1:] == ["stop"] and any(
        state.active_state == "inactive"
        for (unit, _machine), (state, _lease) in (await cluster.states()).items()
        if unit == "hello.service"
    )


async def test_a_global_unit_is_stopped_everywhere_then_started_again(
    fleet_cluster: Cluster,
) -> None:
    fleet_cluster.write_unit("global.service", GLOBAL)
    assert (await fleet_cluster.fleetctl("start", "global.service")).code == 0

    async def running_everywhere() -> bool:
        states = await fleet_cluster.states()
        active = {m for (u, m), (s, _) in states.items() if u == "global.service"}
        return active == set(fleet_cluster.hosts) and all(
            s.active_state == "active" for (u, _), (s, _) in states.items() if u == "global.service"
        )

    await wait_until(running_everywhere, "the global unit running everywhere", within=WITHIN)
    restart = await fleet_cluster.fleetctl("restart", "global.service")
    assert (restart.code, restart.out, restart.err) == (
        0,
        "Triggered global unit global.service restart\n",
        "",
    )
    await wait_until(running_everywhere, "the global unit running again", within=WITHIN)
    for machine in fleet_cluster.hosts:
        assert systemd_calls(fleet_cluster, "global.service", machine) == [
            "start",
            "stop",
            "start",
        ]
