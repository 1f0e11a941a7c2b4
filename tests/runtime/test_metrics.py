"""`fleetd.runtime.metrics`: each `Metrics` is a registry of its own, in Prometheus' format."""

from __future__ import annotations

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from fleetd.runtime.metrics import CONTENT_TYPE, Metrics


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.exposition().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_two_fleetds_in_one_process_count_apart() -> None:
    first, second = Metrics(), Metrics()
    first.engine_passes.labels("full").inc()
    first.etcd_request_errors.labels("Range", "EtcdUnavailable").inc(2)
    assert samples(first)[("fleet_engine_passes_total", (("plan", "full"),))] == 1
    assert ("fleet_engine_passes_total", (("plan", "full"),)) not in samples(second)
    errors = (
        "fleet_etcd_request_errors_total",
        (("error", "EtcdUnavailable"), ("method", "Range")),
    )
    assert samples(first)[errors] == 2


def test_nothing_lands_in_the_global_registry() -> None:
    Metrics().engine_placements.inc()
    assert REGISTRY.get_sample_value("fleet_engine_placements_total") is None


def test_the_exposition_parses_with_every_family_named_and_typed() -> None:
    metrics = Metrics()
    metrics.api_request_seconds.labels("GET", "/fleet/v1/units").observe(0.002)
    metrics.engine_pass_seconds.observe(0.3)
    families = {
        f.name: f.type for f in text_string_to_metric_families(metrics.exposition().decode())
    }
    assert families["fleet_api_request_duration_seconds"] == "histogram"
    assert families["fleet_engine_pass_duration_seconds"] == "histogram"
    assert families["fleet_api_requests"] == "counter"
    assert families["fleet_engine_leader"] == "gauge"
    assert CONTENT_TYPE.startswith("text/plain")
    got = samples(metrics)
    bucket = ("fleet_api_request_duration_seconds_bucket", (("le", "0.0025"), ("method", "GET")))
    assert got[(bucket[0], (*bucket[1], ("route", "/fleet/v1/units")))] == 1


def test_parts_without_a_fleetds_metrics_share_one_unserved_instance() -> None:
    from fleetd.runtime.metrics import unserved

    assert unserved() is unserved()
    assert unserved() is not Metrics()
