"""etcd from the node image, and a node's fleetd on it serving the v1 API."""

from __future__ import annotations

import json

import pytest
from testcontainers.core.container import DockerContainer

from tests.rig.nodes import NODE1_ID, TEST_TIMEOUT, api_get, fleetd_journal, run_in, wait_for

pytestmark = pytest.mark.timeout(TEST_TIMEOUT)

HEALTH = (
    "import urllib.request as r; print(r.urlopen('http://127.0.0.1:2379/health').read().decode())"
)


def test_the_etcd_container_serves_etcd(rig_etcd: DockerContainer) -> None:
    code, health = run_in(rig_etcd, ["python3", "-c", HEALTH])
    assert code == 0, health
    assert json.loads(health)["health"] == "true"
    assert run_in(rig_etcd, ["cat", "/proc/1/comm"]) == (0, "etcd")


def test_fleetd_on_a_node_connects_to_etcd_and_serves_the_api(node1: DockerContainer) -> None:
    # fleetd serves its API only once it has connected to etcd (named in fleet.conf).
    def answers() -> tuple[bool, str]:
        status, body = api_get(node1, "/fleet/v1/machines")
        return status == 200, f"{status} {body}\n{fleetd_journal(node1)}"

    wait_for(answers, "GET /fleet/v1/machines on node1 answering 200")
    status, body = api_get(node1, "/fleet/v1/machines")
    assert status == 200, body
    page = json.loads(body)
    # Machines register through the agent; when it runs, node1 is there with its metadata.
    for machine in page.get("machines", []):
        if machine["id"] == NODE1_ID:
            assert machine["metadata"] == {"role": "web"}
