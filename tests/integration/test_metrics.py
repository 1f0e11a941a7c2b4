"""`GET /metrics` of a fleetd made of the real parts on a real etcd: the API as `serve_api`
serves it, a real engine, and the real agent on the fake systemd, all counting into one
`Metrics`, as `fleetd.wiring` wires them. The scrape is parsed with prometheus_client's own
parser, and its counters must move when a unit starts and stops."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devtools.etcd_server import EtcdServer, free_port
from devtools.fakehost import FakeHost
from fleetd.api.listeners import serve_api
from fleetd.config import Config
from fleetd.engine.engine import Engine
from fleetd.registry.client import EtcdClient
from fleetd.registry.keys import Keys
from fleetd.runtime.metrics import Metrics
from tests.engine.cluster import running, wait_until

MACHINE = "1a2b3c4d5e6f40718293a4b5c6d7e8f9"
TOKEN = "metrics-token-5b7c"
WITHIN = 15.0
UNIT = {
    "desiredState": "launched",
    "options": [{"section": "Service", "name": "ExecStart", "value": "/bin/sleep infinity"}],
}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass
class Node:
    socket_path: str
    port: int
    metrics: Metrics


def parse(text: str) -> Samples:
    """Every sample of a scrape, by name and labels, through Prometheus' own parser."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every sample of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


@pytest.fixture
async def node(etcd_server: EtcdServer, key_prefix: str, tmp_path: Path) -> AsyncIterator[Node]:
    metrics = Metrics()
    client = await EtcdClient.connect([etcd_server.endpoint], metrics=metrics)
    keys = Keys(key_prefix)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    socket_path = str(tmp_path / "fleet.sock")
    if len(socket_path) > 100:
        socket_path = f"/tmp/pyfleet-metrics-{os.getpid()}-{free_port()}.sock"
    port = free_port()
    config = Config(
        etcd_key_prefix=key_prefix,
        listen=(socket_path, f"127.0.0.1:{port}"),
        api_token_file=str(token_file),
    )
    host = FakeHost(client, keys, MACHINE, tmp_path / "units", metrics=metrics)
    engine = Engine(client, keys, MACHINE, reconcile_interval=0.5, metrics=metrics)
    api = asyncio.create_task(
        serve_api(config, client, keys, shutdown_timeout=1.0, metrics=metrics)
    )
    host.start()
    try:
        async with running(engine):
            async with asyncio.timeout(WITHIN):
                await engine.leading.wait()
                await host.ready()

            async def ready() -> bool:
                if api.done():
                    api.result()
                try:
                    health = (await get(socket_path, "/healthz")).json()
                except httpx.TransportError:
                    return False
                return bool(health["viewReady"])

            await wait_until(ready, "the API", within=WITHIN)
            yield Node(socket_path, port, metrics)
    finally:
        api.cancel()
        await asyncio.gather(api, return_exceptions=True)
        await host.leave()
        await client.close()


async def get(socket_path: str, path: str) -> httpx.Response:
    transport = httpx.AsyncHTTPTransport(uds=socket_path)
    async with httpx.AsyncClient(transport=transport, base_url="http://fleet") as http:
        return await http.get(path)


async def put(socket_path: str, path: str, body: object) -> httpx.Response:
    transport = httpx.AsyncHTTPTransport(uds=socket_path)
    async with httpx.AsyncClient(transport=transport, base_url="http://fleet") as http:
        return await http.put(path, json=body)


async def scrape(node: Node) -> Samples:
    response = await get(node.socket_path, "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return parse(response.text)


async def wait_for_state(node: Node, name: str, state: str) -> None:
    async def reached() -> bool:
        unit = (await get(node.socket_path, f"/fleet/v1/units/{name}")).json()
        return bool(unit.get("currentState") == state)

    await wait_until(reached, f"{name} {state}", within=WITHIN)


async def test_counters_move_when_a_unit_starts_and_stops(node: Node) -> None:
    before = await scrape(node)
    assert value(before, "fleet_machines") == 1
    assert value(before, "fleet_engine_leader") == 1
    assert value(before, "fleet_units", desired_state="launched") == 0

    created = await put(node.socket_path, "/fleet/v1/units/hello.service", UNIT)
    assert created.status_code == 201
    await wait_for_state(node, "hello.service", "launched")

    async def agent_started() -> bool:
        samples = await scrape(node)
        return value(samples, "fleet_agent_unit_operations_total", operation="start") >= 1

    await wait_until(agent_started, "the agent's start counted", within=WITHIN)
    started = await scrape(node)
    assert value(started, "fleet_units", desired_state="launched") == 1
    assert value(started, "fleet_units_current", current_state="launched") == 1
    assert value(started, "fleet_unit_states", active_state="active") == 1
    assert value(started, "fleet_engine_placements_total") >= 1
    assert value(started, "fleet_engine_tasks_total", task="schedule") >= 1
    assert total(started, "fleet_engine_passes_total") > total(before, "fleet_engine_passes_total")
    assert value(started, "fleet_engine_pass_duration_seconds_count") >= 1
    assert value(started, "fleet_agent_unit_operation_failures_total", operation="start") == 0
    # etcd: every unary call is timed, by method
    assert value(started, "fleet_etcd_request_duration_seconds_count", method="Txn") > value(
        before, "fleet_etcd_request_duration_seconds_count", method="Txn"
    )
    # the API: by route template (never the raw path) and code
    put_labels = {"method": "PUT", "route": "/fleet/v1/units/{name}", "code": "201"}
    assert value(started, "fleet_api_requests_total", **put_labels) == 1
    assert not any("hello.service" in str(labels) for _, labels in started)

    stopped = await put(
        node.socket_path, "/fleet/v1/units/hello.service", {"desiredState": "loaded"}
    )
    assert stopped.status_code == 204
    await wait_for_state(node, "hello.service", "loaded")

    async def agent_stopped() -> bool:
        samples = await scrape(node)
        return value(samples, "fleet_agent_unit_operations_total", operation="stop") >= 1

    await wait_until(agent_stopped, "the agent's stop counted", within=WITHIN)
    after = await scrape(node)
    assert value(after, "fleet_units", desired_state="launched") == 0
    assert value(after, "fleet_units", desired_state="loaded") == 1
    assert value(after, "fleet_units_current", current_state="loaded") == 1
    assert value(after, "fleet_engine_tasks_total", task="schedule") > value(
        started, "fleet_engine_tasks_total", task="schedule"
    )
    assert (
        value(
            after, "fleet_api_requests_total", method="PUT", route=put_labels["route"], code="204"
        )
        == 1
    )


async def test_metrics_over_tcp_need_the_token(node: Node) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{node.port}") as http:
        refused = await http.get("/metrics")
        assert refused.status_code == 401
        allowed = await http.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert allowed.status_code == 200
    samples = parse(allowed.text)
    # the refusal came before routing: counted with its code, as unrouted
    refusal = {"method": "GET", "route": "unrouted", "code": "401"}
    assert value(samples, "fleet_api_requests_total", **refusal) == 1
