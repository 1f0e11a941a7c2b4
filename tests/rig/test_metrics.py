"""`GET /metrics` on real systemd: node1's API counts the cluster's units, and the fleetd of the
machine that runs a unit counts its agent's start through systemd. Parsed with the Prometheus
client's own parser."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.rig.cluster import Cluster, service
from tests.rig.nodes import TEST_TIMEOUT, api_get

pytestmark = pytest.mark.timeout(TEST_TIMEOUT)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_of_a_started_unit(cluster: Cluster) -> None:
    node2 = cluster.machines["node2"]
    cluster.write_unit("counted.service", service("Counted", MachineID=node2))
    before = parse(api_get(cluster.nodes["node2"], "/metrics")[1])
    cluster.fleetctl("start", "counted.service")
    cluster.wait_active_on("counted.service", 1)

    status, text = cluster.api("GET", "/metrics")
    assert status == 200
    cluster_view = parse(text)
    assert value(cluster_view, "fleet_machines") == 3
    assert value(cluster_view, "fleet_units", desired_state="launched") == 1
    assert value(cluster_view, "fleet_engine_leader") == 1  # node1 leads
    assert value(cluster_view, "fleet_engine_placements_total") >= 1

    def counted() -> tuple[bool, str]:
        status, text = api_get(cluster.nodes["node2"], "/metrics")
        samples = parse(text) if status == 200 else {}
        starts = value(samples, "fleet_agent_unit_operations_total", operation="start")
        launched = value(samples, "fleet_units_current", current_state="launched")
        return starts > value(
            before, "fleet_agent_unit_operations_total", operation="start"
        ) and launched == 1, f"{status}: starts {starts}, launched {launched}"

    cluster.wait(counted, "node2's fleetd counting the start")
    node2_view = parse(api_get(cluster.nodes["node2"], "/metrics")[1])
    assert value(node2_view, "fleet_engine_leader") == 0
    assert value(node2_view, "fleet_agent_unit_operation_failures_total", operation="start") == 0
