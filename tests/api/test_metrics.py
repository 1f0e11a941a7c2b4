"""`fleetd.api.metrics` on the real app and view: `/metrics`, requests counted by route
template (never the raw path), and the cluster's gauges computed from the view."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fleetd.api.app import create_app
from fleetd.api.metrics import ClusterCollector
from fleetd.api.service import ApiService
from fleetd.api.view import ApiView
from fleetd.core.model import Machine
from fleetd.core.states import JobState
from fleetd.registry.client import EtcdClient
from fleetd.registry.keys import Keys
from fleetd.runtime.metrics import Metrics
from tests.api.helpers import (
    M1,
    M2,
    place,
    publish_state,
    store_machine,
    store_reasons,
    store_unit,
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.fixture
def metrics(view: ApiView) -> Metrics:
    metrics = Metrics()
    metrics.add_collector(ClusterCollector(view))
    return metrics


@pytest.fixture
async def api_with_metrics(
    service: ApiService, metrics: Metrics
) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(service, metrics=metrics, token="t0k"))
    headers = {"Authorization": "Bearer t0k"}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://fleet", headers=headers
    ) as client:
        yield client


async def scrape(api: httpx.AsyncClient) -> Samples:
    response = await api.get("/metrics")
    assert response.status_code == 200
    return parse(response.text)


def requests(samples: Samples, method: str, route: str, code: str) -> float:
    labels = frozenset({"method": method, "route": route, "code": code}.items())
    return samples.get(("fleet_api_requests_total", labels), 0.0)


async def test_requests_are_counted_by_route_template_and_code(
    api_with_metrics: httpx.AsyncClient,
) -> None:
    api = api_with_metrics
    for name in ("a.service", "b.service", "c.service"):
        assert (await api.get(f"/fleet/v1/units/{name}")).status_code == 404
    assert (await api.get("/v1-alpha/units/a.service")).status_code == 404
    assert (await api.get("/fleet/v1/units")).status_code == 200
    assert (await api.get("/no/such/path/x1")).status_code == 404
    assert (await api.get("/no/such/path/x2")).status_code == 404
    assert (await api.get("/fleet/v1/units", headers={"Authorization": "no"})).status_code == 401
    samples = await scrape(api)
    assert requests(samples, "GET", "/fleet/v1/units/{name}", "404") == 3
    assert requests(samples, "GET", "/v1-alpha/units/{name}", "404") == 1
    assert requests(samples, "GET", "/fleet/v1/units", "200") == 1
    assert requests(samples, "GET", "unrouted", "404") == 2
    assert requests(samples, "GET", "unrouted", "401") == 1
    routes = {dict(labels).get("route") for name, labels in samples if "api_request" in name}
    assert not any(route and ("a.service" in route or "x1" in route) for route in routes)
    count = frozenset({"method": "GET", "route": "/fleet/v1/units/{name}"}.items())
    assert samples[("fleet_api_request_duration_seconds_count", count)] == 3


async def test_metrics_need_the_token_like_every_route(api_with_metrics: httpx.AsyncClient) -> None:
    refused = await api_with_metrics.get("/metrics", headers={"Authorization": "Bearer wrong"})
    assert refused.status_code == 401
    assert refused.json()["error"]["message"] == "missing or wrong bearer token"


async def test_without_metrics_there_is_no_metrics_route(service: ApiService) -> None:
    transport = httpx.ASGITransport(app=create_app(service))
    async with httpx.AsyncClient(transport=transport, base_url="http://fleet") as client:
        assert (await client.get("/metrics")).status_code == 404


async def test_the_cluster_gauges_come_from_the_view(
    etcd: EtcdClient, keys: Keys, view: ApiView, metrics: Metrics
) -> None:
    await store_machine(etcd, keys, view, Machine(M1, {}, "10.0.0.1"))
    await store_machine(etcd, keys, view, Machine(M2, {}, "10.0.0.2"))
    up = await store_unit(etcd, keys, view, "up.service")
    idle = await store_unit(etcd, keys, view, "idle.service", desired=JobState.LOADED)
    await store_unit(etcd, keys, view, "new.service")
    await store_unit(etcd, keys, view, "off.service", desired=JobState.INACTIVE)
    await place(etcd, keys, view, up, M1)
    await place(etcd, keys, view, idle, M2)
    await publish_state(etcd, keys, view, "up.service", M1, unit_hash=up.hash)
    await publish_state(etcd, keys, view, "idle.service", M2, active="inactive")
    await store_reasons(etcd, keys, view, "new.service", ("no machine has metadata role=db",))
    samples = parse(metrics.exposition().decode())

    def gauge(name: str, **labels: str) -> float:
        return samples[(name, frozenset(labels.items()))]

    assert gauge("fleet_units", desired_state="launched") == 2
    assert gauge("fleet_units", desired_state="loaded") == 1
    assert gauge("fleet_units", desired_state="inactive") == 1
    assert gauge("fleet_units_current", current_state="launched") == 1
    assert gauge("fleet_units_current", current_state="loaded") == 1
    assert gauge("fleet_units_current", current_state="inactive") == 2
    assert gauge("fleet_unit_states", active_state="active") == 1
    assert gauge("fleet_unit_states", active_state="inactive") == 1
    assert gauge("fleet_machines") == 2
    assert gauge("fleet_units_unplaceable") == 1
