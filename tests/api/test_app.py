"""The v1 app end to end, in-process: fleet's recorded exchanges, page tokens, paths and methods
under both prefixes, limits, readiness, auth and the OpenAPI document. Each resource's own routes
are tested beside it (`test_units`, `test_state`, `test_machines`). Bodies and statuses are
asserted exactly."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from devtools.etcd_server import EtcdServer
from fleetd import __version__
from fleetd.api.app import MAX_BODY_BYTES, create_app, v1_routers
from fleetd.api.errors import OUTCOME_UNKNOWN_MESSAGE
from fleetd.api.service import ApiService
from fleetd.api.view import ApiView
from fleetd.core.model import Machine
from fleetd.registry.client import EtcdClient
from fleetd.registry.keys import Keys
from tests.api.helpers import (
    HELLO_HASH,
    JSON,
    M1,
    VIEW_WAIT,
    assert_error,
    dump,
    error,
    place,
    publish_state,
    put,
    store_machine,
    unit_body,
)
from tests.registry.hooks import Txn, hook_txn

SERVER = f"fleetd/{__version__}"

# fleet's documented exchanges, byte for byte.
HELLO_PUT = (
    b'{"desiredState":"launched","options":[\n'
    b' {"section":"Unit","name":"Description","value":"Hello World"},\n'
    b' {"section":"Service","name":"ExecStart","value":"/bin/bash -c \\"while true; do echo '
    b'\\\\\\"Hello, world\\\\\\"; sleep 1; done\\""}]}'
)
HELLO_UNIT = (
    b'{"currentState":"launched","desiredState":"launched","machineID":"' + M1.encode() + b'",'
    b'"name":"hello.service","options":[{"name":"Description","section":"Unit",'
    b'"value":"Hello World"},'
    b'{"name":"ExecStart","section":"Service","value":"/bin/bash -c \\"while true; do echo '
    b'\\\\\\"Hello, world\\\\\\"; sleep 1; done\\""}]}'
)


# ---- the recorded exchanges


async def test_the_recorded_hello_exchange(
    api: httpx.AsyncClient, etcd: EtcdClient, keys: Keys, view: ApiView
) -> None:
    created = await put(api, "hello.service", HELLO_PUT)
    assert (created.status_code, created.content) == (201, b"")
    assert created.headers["server"] == SERVER
    assert "content-type" not in created.headers
    assert view.units["hello.service"].hash == HELLO_HASH
    await place(etcd, keys, view, view.units["hello.service"], M1)
    await publish_state(etcd, keys, view, "hello.service", M1)
    listed = await api.get("/fleet/v1/units?alt=json")
    assert (listed.status_code, listed.content) == (200, b'{"units":[' + HELLO_UNIT + b"]}")
    assert listed.headers["content-type"] == "application/json"
    states = await api.get(f"/fleet/v1/state?machineID={M1}")
    assert states.content == (
        b'{"states":[{"hash":"e55c0aeb44ba0b68004ceb8a200e685194448b45","machineID":"'
        + M1.encode()
        + b'","name":"hello.service","systemdActiveState":"active","systemdLoadState":"loaded",'
        b'"systemdSubState":"running"}]}'
    )
    stopped = await put(api, "hello.service", {"desiredState": "inactive"})
    assert (stopped.status_code, stopped.content) == (204, b"")
    assert "content-type" not in stopped.headers


async def test_the_recorded_machine_exchange(
    api: httpx.AsyncClient, etcd: EtcdClient, keys: Keys, view: ApiView
) -> None:
    await store_machine(etcd, keys, view, Machine(M1, {"az": "us-west-1b"}, "172.17.8.103"))
    listed = await api.get("/fleet/v1/machines")
    assert listed.content == (
        b'{"machines":[{"id":"' + M1.encode() + b'","metadata":{"az":"us-west-1b"},'
        b'"primaryIP":"172.17.8.103"}]}'
    )
    patch = (
        f'[{{"op":"add","path":"/{M1}/metadata/role","value":{{"value":"web"}}}},\n'
        f' {{"op":"remove","path":"/{M1}/metadata/az"}}]'
    )
    patched = await api.patch("/fleet/v1/machines", content=patch)
    assert (patched.status_code, patched.content) == (204, b"")
    assert patched.headers["content-type"] == "application/json"
    after = await api.get("/fleet/v1/machines")
    assert after.json() == {
        "machines": [{"id": M1, "metadata": {"role": "web"}, "primaryIP": "172.17.8.103"}]
    }


@pytest.mark.parametrize(
    ("method", "path", "body", "code", "message"),
    [
        (
            "PUT",
            "/fleet/v1/units/nope.service",
            {"desiredState": "launched"},
            409,
            "unit does not exist and options field empty",
        ),
        ("PUT", "/fleet/v1/units/bad", unit_body(), 400, 'unit name must contain "."'),
        ("DELETE", "/fleet/v1/units/nope.service", None, 404, "unit does not exist"),
        ("GET", "/fleet/v1/units?nextPageToken=EwBMLg==", None, 400, "token limit must be 100"),
    ],
)
async def test_the_recorded_errors(
    api: httpx.AsyncClient, *, method: str, path: str, body: Any, code: int, message: str
) -> None:
    content = None if body is None else json.dumps(body).encode()
    headers = JSON if method == "PUT" else {}
    assert_error(await api.request(method, path, content=content, headers=headers), code, message)


# ---- pages


@pytest.mark.parametrize("resource", ["units", "state", "machines"])
@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("nextPageToken=EwBMLg%3D%3D", "token limit must be 100"),
        ("nextPageToken=ZAAAAA%3D%3D", "token page must be greater than zero"),
        ("nextPageToken=ZAACAA", "illegal base64 data at input byte 4"),
        ("nextPageToken=ZA%3D%3D", "unexpected EOF"),
        ("nextPageToken=", "EOF"),
        ("nextPageToken=ZAACAA%3D%3D&nextPageToken=ZAACAA%3D%3D", "too many values for page token"),
    ],
)
async def test_bad_page_tokens(
    api: httpx.AsyncClient, resource: str, query: str, message: str
) -> None:
    assert_error(await api.get(f"/fleet/v1/{resource}?{query}&alt=json"), 400, message)


# ---- paths and methods


@pytest.mark.parametrize("prefix", ["/fleet/v1", "/v1-alpha"])
@pytest.mark.parametrize(
    ("method", "path", "code", "message"),
    [
        ("POST", "/units", 405, "only GET supported against this resource"),
        ("PUT", "/units", 405, "only GET supported against this resource"),
        ("HEAD", "/units", 405, ""),
        (
            "POST",
            "/units/a.service",
            405,
            "only GET, PUT and DELETE supported against this resource",
        ),
        (
            "PATCH",
            "/units/a.service",
            405,
            "only GET, PUT and DELETE supported against this resource",
        ),
        ("DELETE", "/state", 405, "only GET supported against this resource"),
        ("POST", "/state/a.service", 405, "only GET supported against this resource"),
        ("DELETE", "/machines", 405, "only GET and PATCH supported against this resource"),
        ("BREW", "/machines", 405, "only GET and PATCH supported against this resource"),
        ("POST", "/discovery", 400, "only HTTP GET supported against this resource"),
        ("PUT", "/discovery", 400, "only HTTP GET supported against this resource"),
        ("GET", "", 405, ""),
        ("POST", "", 405, ""),
        ("GET", "/", 404, ""),
        ("GET", "/units/", 404, ""),
        ("GET", "/units/a/b", 404, ""),
        ("PUT", "/units/", 404, ""),
        ("GET", "/state/", 404, ""),
        ("GET", "/machines/x", 404, ""),
        ("GET", "/metrics-not-here", 404, ""),
    ],
)
async def test_methods_and_paths(
    api: httpx.AsyncClient, *, prefix: str, method: str, path: str, code: int, message: str
) -> None:
    response = await api.request(method, prefix + path)
    assert response.status_code == code
    if method != "HEAD":
        assert response.content == error(code, message)
    assert response.headers["server"] == SERVER


@pytest.mark.parametrize(
    ("method", "path", "code"), [("GET", "/", 405), ("DELETE", "/", 405), ("GET", "/nowhere", 404)]
)
async def test_outside_the_prefixes(
    api: httpx.AsyncClient, method: str, path: str, code: int
) -> None:
    assert_error(await api.request(method, path), code, "")


@pytest.mark.parametrize("prefix", ["/fleet/v1", "/v1-alpha"])
async def test_both_prefixes_serve_the_same_data(
    api: httpx.AsyncClient, etcd: EtcdClient, keys: Keys, view: ApiView, prefix: str
) -> None:
    await store_machine(etcd, keys, view, Machine(M1))
    assert (await put(api, "a.service", unit_body(desiredState="loaded"))).status_code == 201
    units = (await api.get(f"{prefix}/units", params={"alt": "json", "whatever": "1"})).json()
    assert [u["name"] for u in units["units"]] == ["a.service"]
    assert (await api.get(f"{prefix}/units/a.service")).json()["desiredState"] == "loaded"
    assert (await api.get(f"{prefix}/machines?alt=json")).json() == {"machines": [{"id": M1}]}
    assert (await api.delete(f"{prefix}/units/a.service")).status_code == 204


# ---- limits, readiness, auth


async def test_bodies_over_the_limit(api: httpx.AsyncClient, etcd: EtcdClient, keys: Keys) -> None:
    message = f"request body larger than {MAX_BODY_BYTES} bytes"
    big = b"[" + b" " * MAX_BODY_BYTES + b"]"
    assert_error(await put(api, "a.service", big), 413, message)
    assert_error(await api.patch("/fleet/v1/machines", content=big), 413, message)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams
        yield b'{"options":['
        for _ in range(20):
            yield b" " * (64 * 1024)
        yield b"]}"

    streamed = await api.put("/fleet/v1/units/a.service", content=chunks(), headers=JSON)
    assert_error(streamed, 413, message)
    assert await dump(etcd, keys.prefix) == {}
    just_fits = json.dumps(unit_body()).encode().ljust(MAX_BODY_BYTES)
    assert (await put(api, "a.service", just_fits)).status_code == 201


async def test_a_view_not_ready_is_503_without_the_server_header(
    etcd: EtcdClient, keys: Keys
) -> None:
    app = create_app(ApiService(etcd, keys, ApiView(etcd, keys)))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://f"
    ) as api:
        for response in (
            await api.get("/fleet/v1/units"),
            await api.get("/fleet/v1/machines"),
            await api.get("/fleet/v1/state/a.service"),
            await put(api, "a.service", unit_body()),
        ):
            assert_error(response, 503, "fleet server unable to communicate with etcd")
            assert "server" not in response.headers
        health = await api.get("/healthz")
        assert (health.status_code, health.json()) == (200, {"status": "ok", "viewReady": False})
        assert (await api.get("/fleet/v1/discovery")).status_code == 200
        assert_error(
            await api.get("/fleet/v1/units?nextPageToken=x"),
            400,
            "illegal base64 data at input byte 0",
        )
    assert await dump(etcd, keys.prefix) == {}


async def test_writes_etcd_answered_late_or_lost_are_answered_truly(
    private_etcd: EtcdServer, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over HTTP: a PUT and a DELETE sent to an etcd paused as they leave, resumed once their
    calls have timed out, answer 201 and 204 (what happened), not 503; with etcd silent
    throughout, a PUT answers 504 with fleet's envelope and a refusal answers 503."""
    client = await EtcdClient.connect([private_etcd.endpoint], timeout=0.5)
    keys = Keys(key_prefix)
    view = ApiView(client, keys)
    task = asyncio.create_task(view.run())

    async def paused(real: Txn, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        private_etcd.pause()
        try:
            return await real(*args, **kwargs)
        finally:
            private_etcd.resume()

    try:
        await asyncio.wait_for(view.wait_ready(), VIEW_WAIT)
        app = create_app(ApiService(client, keys, view, request_timeout=0.5))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://f") as api:
            with monkeypatch.context() as hooked:
                hook_txn(hooked, client, paused, writes_only=True)
                assert (await put(api, "a.service", unit_body())).status_code == 201
            with monkeypatch.context() as hooked:
                hook_txn(hooked, client, paused, writes_only=True)
                assert (await api.delete("/fleet/v1/units/a.service")).status_code == 204
            assert await dump(client, keys.prefix) == {}
            private_etcd.pause()
            lost = await put(api, "b.service", unit_body())
            assert_error(lost, 504, OUTCOME_UNKNOWN_MESSAGE)
            assert lost.headers["server"] == SERVER
            unsent = await api.delete("/fleet/v1/units/a.service")
            assert_error(unsent, 503, "fleet server unable to communicate with etcd")
    finally:
        private_etcd.resume()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()


async def test_healthz_when_ready(api: httpx.AsyncClient) -> None:
    health = await api.get("/healthz")
    assert (health.status_code, health.content) == (200, b'{"status":"ok","viewReady":true}')


async def test_a_token_guards_everything_but_healthz(service: ApiService) -> None:
    app = create_app(service, token="s3cret")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://f"
    ) as api:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            for path in ("/fleet/v1/machines", "/openapi.json", "/fleet/v1/discovery", "/nowhere"):
                refused = await api.get(path, headers=headers)
                assert_error(refused, 401, "missing or wrong bearer token")
                assert refused.headers["www-authenticate"] == "Bearer"
                assert refused.headers["server"] == SERVER
        right = {"Authorization": "Bearer s3cret"}
        assert (await api.get("/fleet/v1/machines", headers=right)).content == b"{}"
        assert (await api.get("/openapi.json", headers=right)).status_code == 200
        assert (await api.get("/healthz")).status_code == 200


async def test_the_openapi_document(api: httpx.AsyncClient) -> None:
    document = (await api.get("/openapi.json")).json()
    assert sorted(document["paths"]) == [
        "/fleet/v1/discovery",
        "/fleet/v1/machines",
        "/fleet/v1/network/config",
        "/fleet/v1/network/subnets",
        "/fleet/v1/state",
        "/fleet/v1/state/{name}",
        "/fleet/v1/units",
        "/fleet/v1/units/{name}",
        "/healthz",
    ]
    put_doc = document["paths"]["/fleet/v1/units/{name}"]["put"]
    assert put_doc["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Unit"
    }
    assert {"Unit", "UnitOption", "MachineMetadataOp", "MetadataValue", "Error"} <= set(
        document["components"]["schemas"]
    )
    assert all(
        "422" not in op["responses"] for ops in document["paths"].values() for op in ops.values()
    )


def test_every_route_runs_on_the_event_loop(service: ApiService) -> None:
    """A sync route would run in a worker thread, reading the view while the loop changes it."""
    routes = [r for r in create_app(service).routes if isinstance(r, APIRoute)]
    # the v1 routers' routes serve both prefixes
    routes += [
        r for router in v1_routers(service) for r in router.routes if isinstance(r, APIRoute)
    ]
    assert len(routes) == 13
    assert all(inspect.iscoroutinefunction(route.endpoint) for route in routes)
