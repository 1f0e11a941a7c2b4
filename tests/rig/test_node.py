"""The node image: systemd as PID 1, fleet.service enabled with fleetd running, the container's
FLEET_* options reaching fleetd, and a machine id of each node's own."""

from __future__ import annotations

import re

import pytest
from testcontainers.core.container import DockerContainer
from testcontainers.core.network import Network

from fleetd import __version__
from tests.rig.nodes import NODE1_ID, TEST_TIMEOUT, fleetd_journal, node_container, run_in, wait_for

pytestmark = pytest.mark.timeout(TEST_TIMEOUT)


def test_systemd_is_pid_1_and_the_system_is_running(node1: DockerContainer) -> None:
    assert run_in(node1, ["cat", "/proc/1/comm"]) == (0, "systemd")

    def booted() -> tuple[bool, str]:
        _, state = run_in(node1, ["systemctl", "is-system-running"])
        _, failed = run_in(node1, ["systemctl", "--failed", "--no-legend", "--plain"])
        return state in ("running", "degraded"), f"{state}\nfailed units:\n{failed}"

    wait_for(booted, "systemd in node1 has booted")


def test_fleet_service_is_enabled_and_fleetd_is_active(node1: DockerContainer) -> None:
    assert run_in(node1, ["systemctl", "is-enabled", "fleet.service"]) == (0, "enabled")

    def active() -> tuple[bool, str]:
        _, state = run_in(node1, ["systemctl", "is-active", "fleet.service"])
        return state == "active", f"{state}\n{fleetd_journal(node1)}"

    wait_for(active, "fleet.service active in node1")
    _, command = run_in(node1, ["systemctl", "show", "-p", "ExecStart", "--value", "fleet"])
    assert "/opt/pyfleet/bin/fleetd" in command
    restarts = run_in(node1, ["systemctl", "show", "-p", "NRestarts", "--value", "fleet"])
    assert restarts == (0, "0"), fleetd_journal(node1)


def open_files(node: DockerContainer, pid: str) -> tuple[int, int]:
    """The soft and hard RLIMIT_NOFILE of process `pid` in `node`."""
    _, limits = run_in(node, ["cat", f"/proc/{pid}/limits"])
    found = re.search(r"^Max open files\s+(\d+)\s+(\d+)\s+files", limits, re.MULTILINE)
    assert found is not None, limits
    return int(found[1]), int(found[2])


def test_fleetd_runs_with_room_for_its_connections(node1: DockerContainer) -> None:
    """fleet.service's LimitNOFILE=65536 reaches fleetd, as far as the container lets systemd
    go (Docker sets the container's hard limit), and fleetd's soft limit is its hard one, not
    systemd's default 1,024: room for the API's 1,024 connections on the node's one listener."""

    def stated() -> tuple[bool, str]:
        journal = fleetd_journal(node1, lines=200)
        return '"connections_per_listener": 1024' in journal, journal

    wait_for(stated, "fleetd to log its API connection limits")
    assert run_in(node1, ["systemctl", "show", "-p", "LimitNOFILE", "--value", "fleet"]) == (
        0,
        "65536",
    )
    _, pid = run_in(node1, ["systemctl", "show", "-p", "MainPID", "--value", "fleet.service"])
    _, systemd_hard = open_files(node1, "1")
    assert open_files(node1, pid) == (min(65536, systemd_hard),) * 2


def test_fleetd_version_runs_inside_the_node(node1: DockerContainer) -> None:
    assert run_in(node1, ["fleetd", "--version"]) == (0, f"fleetd version {__version__}")
    assert run_in(node1, ["/opt/pyfleet/bin/fleetctl", "--version"])[0] == 0


def test_fleetd_gets_the_fleet_variables_the_container_was_given(node1: DockerContainer) -> None:
    _, pid = run_in(node1, ["systemctl", "show", "-p", "MainPID", "--value", "fleet.service"])
    _, environ = run_in(node1, ["sh", "-c", f"tr '\\0' '\\n' < /proc/{pid}/environ"])
    assert "FLEET_METADATA=role=web" in environ.splitlines()
    _, conf = run_in(node1, ["cat", "/etc/fleet/fleet.conf"])
    assert "etcd_servers=http://etcd:2379" in conf.splitlines()


def test_each_node_has_a_machine_id_of_its_own(
    node1: DockerContainer, node_image: str, rig_network: Network
) -> None:
    assert run_in(node1, ["cat", "/etc/machine-id"]) == (0, NODE1_ID)
    with node_container(node_image, rig_network, "node-random-id") as other:
        _, other_id = run_in(other, ["cat", "/etc/machine-id"])
        assert re.fullmatch(r"[0-9a-f]{32}", other_id)
        assert other_id != NODE1_ID
        # D-Bus reads the same id: its copy is a link, never a file baked into the image.
        assert run_in(other, ["cat", "/var/lib/dbus/machine-id"]) == (0, other_id)


def test_fleet_pods_gc_runs_on_a_timer(node1: DockerContainer) -> None:
    assert run_in(node1, ["systemctl", "is-enabled", "fleet-pod-gc.timer"]) == (0, "enabled")
    assert run_in(node1, ["systemctl", "is-active", "fleet-pod-gc.timer"]) == (0, "active")
    code, output = run_in(node1, ["systemctl", "start", "fleet-pod-gc.service"])  # oneshot: waits
    assert code == 0, output
    result = run_in(node1, ["systemctl", "show", "-p", "Result", "--value", "fleet-pod-gc"])
    assert result == (0, "success")
