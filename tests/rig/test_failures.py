"""Failures on a three-machine cluster, each test on a cluster of its own (`fresh_cluster`).

* A node killed: its units run on another node within `agent_ttl` + 2 s, measured from the kill
  to systemd reporting them active there; once for a node that is not the engine leader, once
  for the leader itself.
* fleetd restarted on a node: its units keep running (same main PID, same invocation id), and
  the machine keeps its lease.
* etcd paused for 30 s: no unit anywhere stops or restarts, and afterwards the cluster converges
  (all machines back, a unit started after the resume runs).

`agent_ttl` is `AGENT_TTL` (3 s) on every node, so the tests are quick.
"""

from __future__ import annotations

import time

import pytest

from tests.rig.cluster import AGENT_TTL, NODE_NAMES, Cluster, service, start_cluster
from tests.rig.nodes import TEST_TIMEOUT, run_in

pytestmark = pytest.mark.timeout(TEST_TIMEOUT)

FAILOVER_WITHIN = AGENT_TTL + 2.0
"""A killed machine's units run elsewhere within this many seconds of the kill."""
PAUSE = 30.0
"""How long etcd is paused: ten machine leases."""
SAME_RUN = ("MainPID", "InvocationID", "ActiveState")
"""A unit that kept running keeps these; a stop or a restart changes them."""


def wait_failover(cluster: Cluster, killed_at: float, units: dict[str, set[str]]) -> float:
    """Wait until each unit is active on exactly one node of its set, by `FAILOVER_WITHIN`
    after `killed_at`; returns how long it took."""

    def moved() -> tuple[bool, str]:
        where = {unit: cluster.active_on(unit) for unit in units}
        held = all(len(where[unit]) == 1 and where[unit] <= nodes for unit, nodes in units.items())
        return held, f"after {time.monotonic() - killed_at:.1f} s: {where}"

    remaining = FAILOVER_WITHIN - (time.monotonic() - killed_at)
    cluster.wait(moved, f"units moved within {FAILOVER_WITHIN:.0f} s of the kill", remaining)
    took = time.monotonic() - killed_at
    assert took <= FAILOVER_WITHIN, f"the units moved after {took:.1f} s"
    print(f"failover: {took:.2f} s")  # shown with `pytest -rP`
    return took


def running(cluster: Cluster, units: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """For each (unit, node): what shows whether systemd kept running it, as one line."""
    found = {}
    for unit, node in units:
        seen = cluster.systemd(node, unit)
        found[unit, node] = " ".join(f"{key}={seen[key]}" for key in SAME_RUN)
    return found


def differences(before: dict[tuple[str, str], str], after: dict[tuple[str, str], str]) -> str:
    """The units whose run changed, one line each."""
    return "\n".join(
        f"{unit} on {node}: {before[unit, node]} -> {after[unit, node]}"
        for unit, node in before
        if after[unit, node] != before[unit, node]
    )


def stop_lines(cluster: Cluster, cursors: dict[str, str], units: list[str]) -> dict[str, list[str]]:
    """systemd's `Stopping`/`Stopped` messages about `units` on each node since its cursor."""
    return {
        node: [
            line
            for line in cluster.journal_after(node, cursor, "_PID=1")
            if line.startswith(("Stopping ", "Stopped ")) and any(u in line for u in units)
        ]
        for node, cursor in cursors.items()
    }


def test_a_killed_nodes_units_run_on_another_node_within_agent_ttl(
    fresh_cluster: Cluster,
) -> None:
    cluster = fresh_cluster
    cluster.write_unit("db.service", service("Database", MachineMetadata="role=db"))
    cluster.write_unit("db-sidecar.service", service("Sidecar", MachineOf="db.service"))
    cluster.write_unit("everywhere.service", service("Everywhere", Global="true"))
    cluster.fleetctl("start", "db.service", "db-sidecar.service", "everywhere.service")
    (victim,) = cluster.wait_active_on("db.service", 1)
    assert cluster.wait_active_on("db-sidecar.service", 1) == {victim}
    cluster.wait_active_on("everywhere.service", 3)
    assert cluster.leader() == cluster.machines["node1"] != cluster.machines[victim]
    (survivor,) = {"node2", "node3"} - {victim}  # the other role=db machine
    others = [("everywhere.service", node) for node in ("node1", survivor)]
    before = running(cluster, others)

    killed_at = time.monotonic()
    cluster.kill(victim)
    wait_failover(
        cluster, killed_at, {unit: {survivor} for unit in ("db.service", "db-sidecar.service")}
    )

    assert running(cluster, others) == before  # the global unit did not move or restart
    survivor_id = cluster.machines[survivor]
    for unit in ("db.service", "db-sidecar.service"):
        rows = cluster.wait_rows(
            unit,
            lambda rows: [(r.machine, r.active) for r in rows] == [(survivor_id, "active")],
            "active on the survivor only",
        )
        assert len(rows) == 1
    cluster.wait_rows(
        "everywhere.service",
        lambda rows: {r.machine for r in rows} == {cluster.machines["node1"], survivor_id},
        "reported by the two live machines only",
    )


def test_a_killed_engine_leaders_units_run_on_another_node_within_agent_ttl(
    node_image: str,
) -> None:
    # The engine's lease is five reconcile intervals (fleet's rule): 0.5 s makes it 3 s, the
    # machine lease, so a new leader is elected within agent_ttl as well.
    with start_cluster(node_image, {"FLEET_ENGINE_RECONCILE_INTERVAL": "0.5s"}) as cluster:
        cluster.write_unit("plain.service", service("Plain"))
        cluster.fleetctl("start", "plain.service")
        # The first unit of an idle cluster goes to the lowest machine id: node1, the leader.
        assert cluster.wait_active_on("plain.service", 1) == {"node1"}
        assert cluster.leader() == cluster.machines["node1"]

        killed_at = time.monotonic()
        cluster.kill("node1")
        wait_failover(cluster, killed_at, {"plain.service": {"node2", "node3"}})

        assert cluster.leader() in (cluster.machines["node2"], cluster.machines["node3"])
        (node,) = cluster.active_on("plain.service")
        states = [s for s in cluster.states(via="node2") if s["name"] == "plain.service"]
        assert [(s["machineID"], s["systemdActiveState"]) for s in states] == [
            (cluster.machines[node], "active")
        ]


def test_restarting_fleetd_keeps_its_units_running(fresh_cluster: Cluster) -> None:
    cluster = fresh_cluster
    node2 = cluster.machines["node2"]
    cluster.write_unit("pinned.service", service("Pinned", MachineID=node2))
    cluster.write_unit("everywhere.service", service("Everywhere", Global="true"))
    cluster.fleetctl("start", "pinned.service", "everywhere.service")
    cluster.wait_active_on("everywhere.service", 3)
    units = [("pinned.service", "node2"), ("everywhere.service", "node2")]
    before = running(cluster, units)
    lease = cluster.machine_lease("node2")
    assert lease != 0
    old_fleetd = cluster.systemd("node2", "fleet.service")["MainPID"]
    cursor = cluster.journal_cursor("node2")

    assert run_in(cluster.nodes["node2"], ["systemctl", "restart", "fleet.service"])[0] == 0

    def fleetd_back() -> tuple[bool, str]:
        seen = cluster.systemd("node2", "fleet.service")
        return seen["ActiveState"] == "active" and seen["MainPID"] != old_fleetd, f"{seen}"

    cluster.wait(fleetd_back, "a new fleetd active on node2")
    # The new agent is at work: a unit scheduled on node2 after the restart runs.
    cluster.write_unit("after-restart.service", service("After the restart", MachineID=node2))
    cluster.fleetctl("start", "after-restart.service")
    assert cluster.is_active("node2", "after-restart.service") == "active"

    assert running(cluster, units) == before
    assert all("ActiveState=active" in seen for seen in before.values()), before
    assert cluster.machine_lease("node2") == lease  # re-attached: the machine never left
    assert stop_lines(cluster, {"node2": cursor}, [u for u, _ in units]) == {"node2": []}
    for unit, _ in units:
        rows = [r for r in cluster.rows_of(unit) if r.machine == node2]
        assert [r.active for r in rows] == ["active"], unit


def test_pausing_etcd_for_30_s_stops_and_restarts_no_unit(fresh_cluster: Cluster) -> None:
    cluster = fresh_cluster
    cluster.write_unit("everywhere.service", service("Everywhere", Global="true"))
    cluster.write_unit("db.service", service("Database", MachineMetadata="role=db"))
    cluster.write_unit("db-sidecar.service", service("Sidecar", MachineOf="db.service"))
    cluster.write_unit("frontend.service", service("Frontend", MachineMetadata="role=web"))
    cluster.write_unit("plain.service", service("Plain"))
    names = [
        "everywhere.service",
        "db.service",
        "db-sidecar.service",
        "frontend.service",
        "plain.service",
    ]
    cluster.fleetctl("start", *names)
    cluster.wait_active_on("everywhere.service", 3)
    placed = [(row.unit, cluster.node_of(row.machine)) for row in cluster.list_units()]
    assert len(placed) == 7, placed  # the global unit three times, the four others once
    before = running(cluster, placed)
    assert all("ActiveState=active" in seen for seen in before.values()), before
    cursors = {node: cluster.journal_cursor(node) for node in NODE_NAMES}

    etcd = cluster.etcd.get_wrapped_container()
    etcd.pause()
    try:
        time.sleep(PAUSE)  # the scenario itself: etcd away for ten machine leases
        during = running(cluster, placed)
    finally:
        etcd.unpause()
    stopped_during = stop_lines(cluster, cursors, names)
    assert during == before, (
        f"while etcd was paused:\n{differences(before, during)}\n{stopped_during}"
    )

    # The cluster converges: every machine is back, and a unit started now runs.
    def machines_back() -> tuple[bool, str]:
        seen = cluster.registered()
        return seen == set(cluster.machines.values()), f"{sorted(seen)}"

    cluster.wait(machines_back, "the three machines registered again")
    cluster.write_unit("after-pause.service", service("After the pause"))
    cluster.fleetctl("start", "after-pause.service")
    cluster.wait_active_on("after-pause.service", 1)

    after = running(cluster, placed)
    stopped = stop_lines(cluster, cursors, names)
    assert after == before, f"stopped or restarted:\n{differences(before, after)}\n{stopped}"
    assert stopped == {node: [] for node in NODE_NAMES}
