"""Units on a three-machine cluster, checked in systemd on each machine, not only in the API.

A started unit runs on exactly one machine and `fleetctl list-units` says what systemd says; a
global unit runs everywhere; `MachineOf`, `Conflicts`, `MachineMetadata` and `MachineID` decide
where units run; `stop`, `unload` and `destroy` reach systemd (inactive; unit file and runtime
link gone); a unit at rest (running, loaded, stopped) does not keep the agent and systemd busy.

All tests share one cluster (`cluster` fixture): each starts from an empty registry, and the
fixture destroys what the test started.
"""

from __future__ import annotations

import pytest

from tests.rig.cluster import (
    NODE_NAMES,
    QUIET_CALLS,
    QUIET_WINDOW,
    RUNTIME_UNITS,
    UNITS_DIRECTORY,
    Cluster,
    service,
)
from tests.rig.nodes import TEST_TIMEOUT

pytestmark = pytest.mark.timeout(TEST_TIMEOUT)


def test_a_started_unit_is_active_on_exactly_one_node_and_systemd_agrees(cluster: Cluster) -> None:
    cluster.write_unit("hello.service", service("Hello"))
    cluster.fleetctl("start", "hello.service")

    rows = cluster.wait_rows(
        "hello.service", lambda rows: [r.active for r in rows] == ["active"], "active once"
    )
    (row,) = rows
    node = cluster.node_of(row.machine)
    assert cluster.active_on("hello.service") == {node}
    assert cluster.is_active(node, "hello.service") == "active"
    seen = cluster.systemd(node, "hello.service")
    assert (seen["LoadState"], seen["ActiveState"], seen["SubState"]) == (
        row.load,
        row.active,
        row.sub,
    )
    assert (row.load, row.active, row.sub) == ("loaded", "active", "running")
    assert int(seen["MainPID"]) > 0
    assert cluster.files_of(node, "hello.service") == [
        f"{UNITS_DIRECTORY}/hello.service",
        f"{RUNTIME_UNITS}/hello.service",
    ]
    for other in set(NODE_NAMES) - {node}:
        assert cluster.systemd(other, "hello.service")["LoadState"] == "not-found"
        assert cluster.files_of(other, "hello.service") == []


def test_a_global_unit_runs_on_all_three_nodes(cluster: Cluster) -> None:
    cluster.write_unit("monitor.service", service("Monitor", Global="true"))
    cluster.fleetctl("start", "monitor.service")

    assert cluster.wait_active_on("monitor.service", 3) == set(NODE_NAMES)
    rows = cluster.wait_rows(
        "monitor.service",
        lambda rows: len(rows) == 3 and {r.active for r in rows} == {"active"},
        "active on three machines",
    )
    assert {row.machine for row in rows} == set(cluster.machines.values())


def test_machine_of_runs_the_follower_beside_its_target(cluster: Cluster) -> None:
    cluster.write_unit("app.service", service("App"))
    cluster.write_unit("app-announce.service", service("Announces app", MachineOf="app.service"))
    cluster.fleetctl("start", "app.service", "app-announce.service")

    (target,) = cluster.wait_active_on("app.service", 1)
    assert cluster.wait_active_on("app-announce.service", 1) == {target}


def test_conflicting_units_run_on_different_nodes(cluster: Cluster) -> None:
    cluster.write_unit("solo@.service", service("Solo %i", Conflicts="solo@*.service"))
    instances = [f"solo@{i}.service" for i in (1, 2, 3)]
    cluster.fleetctl("start", *instances)

    nodes = [cluster.wait_active_on(unit, 1) for unit in instances]
    assert set.union(*nodes) == set(NODE_NAMES)  # three units, three different machines
    for node in NODE_NAMES:
        running = [unit for unit in instances if cluster.is_active(node, unit) == "active"]
        assert len(running) == 1, f"{node} runs {running}"


def test_machine_metadata_and_machine_id_choose_the_nodes(cluster: Cluster) -> None:
    cluster.write_unit("frontend.service", service("Frontend", MachineMetadata="role=web"))
    cluster.write_unit(
        "db@.service",
        service("Database %i", MachineMetadata="role=db", Conflicts="db@*.service"),
    )
    node3 = cluster.machines["node3"]
    cluster.write_unit("pinned.service", service("Pinned", MachineID=node3))
    cluster.fleetctl("start", "frontend.service", "db@1.service", "db@2.service", "pinned.service")

    assert cluster.wait_active_on("frontend.service", 1) == {"node1"}  # the one role=web
    db_nodes = cluster.wait_active_on("db@1.service", 1) | cluster.wait_active_on("db@2.service", 1)
    assert db_nodes == {"node2", "node3"}  # both role=db machines, one instance each
    assert cluster.wait_active_on("pinned.service", 1) == {"node3"}
    for node in ("node1", "node2"):
        assert cluster.systemd(node, "pinned.service")["LoadState"] == "not-found"


def test_stop_unload_and_destroy_are_reflected_in_systemd(cluster: Cluster) -> None:
    cluster.write_unit("lifecycle.service", service("Lifecycle", Global="true"))
    cluster.fleetctl("start", "lifecycle.service")
    cluster.wait_active_on("lifecycle.service", 3)

    # stop: inactive everywhere, the unit file and its link stay (the unit is still loaded).
    cluster.fleetctl("stop", "lifecycle.service")
    cluster.wait_active_on("lifecycle.service", 0)
    for node in NODE_NAMES:
        seen = cluster.systemd(node, "lifecycle.service")
        assert (seen["LoadState"], seen["ActiveState"]) == ("loaded", "inactive"), node
        assert len(cluster.files_of(node, "lifecycle.service")) == 2, node
    cluster.wait_rows(
        "lifecycle.service",
        lambda rows: (
            len(rows) == 3 and {(r.load, r.active) for r in rows} == {("loaded", "inactive")}
        ),
        "loaded and inactive on three machines",
    )

    # unload: the file and the runtime link are gone, systemd no longer knows the unit.
    cluster.fleetctl("unload", "lifecycle.service")
    cluster.wait_rows("lifecycle.service", lambda rows: not rows, "unloaded everywhere")
    for node in NODE_NAMES:
        assert cluster.files_of(node, "lifecycle.service") == [], node
        assert cluster.systemd(node, "lifecycle.service")["LoadState"] == "not-found", node

    # destroy a running unit: stopped, files gone, and out of the registry.
    cluster.fleetctl("start", "lifecycle.service")
    cluster.wait_active_on("lifecycle.service", 3)
    cluster.fleetctl("destroy", "lifecycle.service")
    assert cluster.active_on("lifecycle.service") == set()
    for node in NODE_NAMES:
        assert cluster.files_of(node, "lifecycle.service") == [], node
        seen = cluster.systemd(node, "lifecycle.service")
        assert (seen["LoadState"], seen["ActiveState"]) == ("not-found", "inactive"), node
    assert "lifecycle.service" not in cluster.unit_names()
    assert cluster.rows_of("lifecycle.service") == []


@pytest.mark.parametrize(
    ("commands", "active"),
    [
        pytest.param(["start"], "active", id="running"),
        pytest.param(["load"], "inactive", id="loaded-never-started"),
        pytest.param(["start", "stop"], "inactive", id="stopped"),
    ],
)
def test_a_unit_at_rest_leaves_the_agent_and_systemd_idle(
    cluster: Cluster, commands: list[str], active: str
) -> None:
    node2 = cluster.machines["node2"]
    cluster.write_unit("idle.service", service("Idle", MachineID=node2))
    for command in commands:
        cluster.fleetctl(command, "idle.service")
    cluster.wait_rows(
        "idle.service",
        lambda rows: [(r.load, r.active) for r in rows] == [("loaded", active)],
        f"loaded and {active}",
    )

    calls = cluster.bus_calls("node2", "ListUnitsByNames", QUIET_WINDOW)
    assert calls <= QUIET_CALLS, (
        f"{calls} ListUnitsByNames calls to systemd in {QUIET_WINDOW} s while nothing changed"
    )
