"""Fixtures of the rig tests: one image, one network and one etcd for the session, one node.

* `node_image` (session): the tag `scripts/rig-build` made or reused.
* `rig_network` (session): a labelled bridge network; the containers find each other by name.
* `rig_etcd` (session): etcd run from the node image, known as `etcd` (fleet.conf's default).
* `node1` (session): a systemd node with a fixed machine id and `role=web`, its fleetd on
  `rig_etcd`. Tests only look at it; one that changes a node starts its own.
* `shared_cluster` (session, used through `cluster`): etcd and three nodes (`tests/rig/cluster.py`)
  on a network of their own. `cluster` hands it to one test and destroys every unit afterwards,
  so each test starts from an empty registry and idle machines.
* `fresh_cluster`: a cluster of the test's own, for tests that kill, restart or pause things.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from testcontainers.core.container import DockerContainer
from testcontainers.core.network import Network

from tests.rig.cluster import Cluster, start_cluster
from tests.rig.nodes import NODE1_ID, build_image, etcd_container, make_network, node_container


@pytest.fixture(scope="session")
def node_image() -> str:
    return build_image()


@pytest.fixture(scope="session")
def rig_network() -> Iterator[Network]:
    network = make_network()
    try:
        yield network
    finally:
        network.remove()


@pytest.fixture(scope="session")
def rig_etcd(node_image: str, rig_network: Network) -> Iterator[DockerContainer]:
    with etcd_container(node_image, rig_network) as etcd:
        yield etcd


@pytest.fixture(scope="session")
def node1(
    node_image: str, rig_network: Network, rig_etcd: DockerContainer
) -> Iterator[DockerContainer]:
    environment = {"FLEET_METADATA": "role=web"}
    with node_container(
        node_image, rig_network, "node1", machine_id=NODE1_ID, environment=environment
    ) as node:
        yield node


@pytest.fixture(scope="session")
def shared_cluster(node_image: str) -> Iterator[Cluster]:
    with start_cluster(node_image) as cluster:
        yield cluster


@pytest.fixture
def cluster(shared_cluster: Cluster) -> Iterator[Cluster]:
    yield shared_cluster
    shared_cluster.destroy_all()


@pytest.fixture
def fresh_cluster(node_image: str) -> Iterator[Cluster]:
    with start_cluster(node_image) as cluster:
        yield cluster
