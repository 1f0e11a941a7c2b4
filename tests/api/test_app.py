"""The v1 API end to end, in-process: every route and error path of reference section 3.5, the
recorded exchanges of 3.6, headers, limits and auth. Bodies and statuses are asserted exactly."""

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
from fleetd.api.app import MAX_BODY_BYTES, PREFIXES, _v1_router, create_app
from fleetd.api.errors import OUTCOME_UNKNOWN_MESSAGE
from fleetd.api.service import ApiService
from fleetd.api.view import ApiView
from fleetd.core.model import Machine
from fleetd.core.states import JobState
from fleetd.registry.client import EtcdClient
from fleetd.registry.keys import Keys
from tests.api.helpers import (
    HELLO_HASH,
    M1,
    M2,
    VIEW_WAIT,
    dump,
    options,
    options_json,
    place,
    publish_state,
    simple_options,
    store_machine,
    store_reasons,
    store_unit,
)
from tests.registry.hooks import Txn, hook_txn

SERVER = f"fleetd/{__version__}"
JSON = {"Content-Type": "application/json"}

# Reference section 3.6, byte for byte.
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


def error(code: int, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}, separators=(",", ":")).encode()


def unit_body(*lines: tuple[str, str, str], **fields: Any) -> dict[str, Any]:
    return {**fields, "options": options_json(options(*lines) if lines else simple_options())}


async def put(api: httpx.AsyncClient, name: str, body: Any, **kwargs: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = kwargs.pop("headers", JSON)
    return await api.put(f"/fleet/v1/units/{name}", content=content, headers=headers, **kwargs)


def assert_error(response: httpx.Response, code: int, message: str) -> None:
    assert (response.status_code, response.content) == (code, error(code, message))
    assert response.headers["content-type"] == "application/json"


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


# ---- PUT, in fleet's order, and nothing written when refused


LONG = "x" * 2048

REFUSED_CREATES = [
    ({}, b"{}", 415, "expected 1 Content-Type, got 0"),
    (
        {"Content-Type": "text/plain"},
        b"{}",
        415,
        "only acceptable Content-Type is application/json",
    ),
    (
        {"Content-Type": "application/JSON"},
        b"{}",
        415,
        "only acceptable Content-Type is application/json",
    ),
    (JSON, b"", 400, "unable to decode body: EOF"),
    (JSON, b"{", 400, "unable to decode body: unexpected EOF"),
    (
        JSON,
        b"hello",
        400,
        "unable to decode body: invalid character 'h' looking for beginning of value",
    ),
    (
        JSON,
        b'{"name":"b.service"}',
        400,
        'name in URL "a.service" differs from unit name in request body "b.service"',
    ),
    (JSON, b'{"desiredState":"launched"}', 409, "unit does not exist and options field empty"),
    (JSON, b'{"options":[]}', 409, "unit does not exist and options field empty"),
    (
        JSON,
        json.dumps(unit_body(desiredState="bogus")).encode(),
        400,
        'invalid desiredState "bogus": must be inactive, loaded or launched',
    ),
    (
        JSON,
        json.dumps(
            unit_body(("X-Fleet", "MachineID", M1), ("X-Fleet", "Conflicts", "b*"))
        ).encode(),
        400,
        "unit a.service: MachineID cannot be used with Conflicts",
    ),
    (
        JSON,
        json.dumps(unit_body(("Service", "ExecStart", LONG))).encode(),
        400,
        "unit a.service: malformed unit file: line 2: line too long (max 2048 bytes)",
    ),
]


@pytest.mark.parametrize(("headers", "body", "code", "message"), REFUSED_CREATES)
async def test_refused_creates_write_nothing(
    api: httpx.AsyncClient,
    etcd: EtcdClient,
    keys: Keys,
    *,
    headers: dict[str, str],
    body: bytes,
    code: int,
    message: str,
) -> None:
    before = await dump(etcd, keys.prefix)
    assert_error(await put(api, "a.service", body, headers=headers), code, message)
    assert await dump(etcd, keys.prefix) == before


async def test_two_content_types_are_refused(api: httpx.AsyncClient) -> None:
    headers = [("Content-Type", "application/json"), ("Content-Type", "application/json")]
    response = await api.put("/fleet/v1/units/a.service", content=b"{}", headers=headers)
    assert_error(response, 415, "expected 1 Content-Type, got 2")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("a", 'unit name must contain "."'),
        ("a.", 'unit name cannot end in "."'),
        ("a.foo", 'invalid unit type: "foo"'),
        ("a@b.swap", 'invalid unit type for template: "swap"'),
        ("a%20b.service", "invalid character ' ' in unit name"),
        ("@a.service", 'unit name cannot start in "@"'),
        ("a" * 250 + ".service", "unit name exceeds maximum length (256)"),
    ],
)
async def test_bad_names(
    api: httpx.AsyncClient, etcd: EtcdClient, keys: Keys, name: str, message: str
) -> None:
    assert_error(await put(api, name, unit_body()), 400, message)
    assert await dump(etcd, keys.prefix) == {}


async def test_templates_cannot_be_activated_on_create_or_update(
    api: httpx.AsyncClient, etcd: EtcdClient, keys: Keys
) -> None:
    refused = await put(api, "t@.service", unit_body(desiredState="launched"))
    assert_error(refused, 400, 'cannot activate template "t@.service"')
    assert await dump(etcd, keys.prefix) == {}
    assert (await put(api, "t@.service", unit_body())).status_code == 201
    before = await dump(etcd, keys.prefix)
    assert_error(
        await put(api, "t@.service", {"desiredState": "loaded"}),
        400,
        'cannot activate template "t@.service"',
    )
    assert await dump(etcd, keys.prefix) == before


async def test_updates_and_replaces(api: httpx.AsyncClient, etcd: EtcdClient, keys: Keys) -> None:
    assert (await put(api, "a.service", unit_body(desiredState="loaded"))).status_code == 201
    before = await dump(etcd, keys.prefix)
    assert_error(
        await put(api, "a.service", unit_body()),
        409,
        "must provide DesiredState to update existing unit",
    )
    assert_error(
        await put(api, "a.service", {}), 409, "must provide DesiredState to update existing unit"
    )
    bogus = await put(api, "a.service", {"desiredState": "bogus"})
    assert_error(bogus, 400, 'invalid desiredState "bogus": must be inactive, loaded or launched')
    bad_replace = unit_body(("X-Fleet", "Global", "true"), ("X-Fleet", "Replaces", "b.service"))
    assert_error(
        await put(api, "a.service", bad_replace),
        400,
        "unit a.service: Global cannot be used with Replaces",
    )
    assert await dump(etcd, keys.prefix) == before

    # fleetctl's "set state" form, with fields the server ignores and any key case
    update = {
        "DesiredState": "launched",
        "name": "a.service",
        "currentState": "x",
        "machineID": "y",
    }
    assert (await put(api, "a.service", update)).status_code == 204
    assert (await api.get("/fleet/v1/units/a.service")).json()["desiredState"] == "launched"
    assert (await put(api, "a.service", {"desiredState": "launched"})).status_code == 204

    replaced = unit_body(("Service", "ExecStart", "/bin/other"))
    assert (await put(api, "a.service", replaced)).status_code == 201
    got = (await api.get("/fleet/v1/units/a.service")).json()
    assert got == {
        "currentState": "inactive",
        "desiredState": "inactive",  # a replace without desiredState sets inactive, as in fleet
        "name": "a.service",
        "options": [{"name": "ExecStart", "section": "Service", "value": "/bin/other"}],
    }


async def test_unknown_x_fleet_keys_are_stored_and_named_in_a_header(
    api: httpx.AsyncClient,
) -> None:
    lines = [
        ("Service", "ExecStart", "/x"),
        ("X-Fleet", "MachineMetdata", "a=b"),
        ("X-Fleet", "Weight", "1"),
        ("X-Fleet", "MachineMetdata", "c=d"),
        ("X-Fleet", "Global", "false"),
    ]
    created = await put(api, "a.service", unit_body(*lines))
    assert created.status_code == 201
    assert json.loads(created.headers["x-pyfleet-ignored-keys"]) == ["MachineMetdata", "Weight"]
    got = (await api.get("/fleet/v1/units/a.service")).json()
    assert got["options"] == options_json(options(*lines))
    # a known key only, or a state change: no header
    plain = await put(api, "b.service", unit_body(("X-Fleet", "Global", "false")))
    assert plain.status_code == 201
    assert "x-pyfleet-ignored-keys" not in plain.headers
    update = await put(api, "a.service", {"desiredState": "loaded"})
    assert update.status_code == 204
    assert "x-pyfleet-ignored-keys" not in update.headers


async def test_get_and_delete(api: httpx.AsyncClient) -> None:
    assert_error(await api.get("/fleet/v1/units/a.service"), 404, "unit does not exist")
    assert (await put(api, "a.service", unit_body(desiredState="launched"))).status_code == 201
    assert (await api.get("/fleet/v1/units/a.service")).status_code == 200
    deleted = await api.delete("/fleet/v1/units/a.service")
    assert (deleted.status_code, deleted.content) == (204, b"")
    assert "content-type" not in deleted.headers
    assert_error(await api.get("/fleet/v1/units/a.service"), 404, "unit does not exist")
    assert_error(await api.delete("/fleet/v1/units/a.service"), 404, "unit does not exist")


async def test_current_state_machine_id_and_reasons(
    api: httpx.AsyncClient, etcd: EtcdClient, keys: Keys, view: ApiView
) -> None:
    a = await store_unit(etcd, keys, view, "a.service")
    glob = options(("Service", "ExecStart", "/x"), ("X-Fleet", "Global", "on"))
    g = await store_unit(etcd, keys, view, "g.service", glob)
    await store_unit(etcd, keys, view, "db.service", desired=JobState.LOADED)
    await store_reasons(etcd, keys, view, "db.service", ("no machine has metadata role=db",))
    await place(etcd, keys, view, a, M1)
    await publish_state(etcd, keys, view, "a.service", M1, active="inactive")
    await place(etcd, keys, view, g, M2)
    await publish_state(etcd, keys, view, "g.service", M2)
    units = {u["name"]: u for u in (await api.get("/fleet/v1/units")).json()["units"]}
    assert units["a.service"]["currentState"] == "loaded"
    assert units["a.service"]["machineID"] == M1
    assert (units["g.service"]["currentState"], "machineID" in units["g.service"]) == (
        "inactive",
        False,
    )
    assert units["db.service"]["unplaceableReasons"] == ["no machine has metadata role=db"]
    assert "unplaceableReasons" not in units["a.service"]
    single = (await api.get("/fleet/v1/units/g.service")).json()
    assert "currentState" not in single
    assert "machineID" not in single
    db = (await api.get("/fleet/v1/units/db.service")).json()
    assert db["unplaceableReasons"] == ["no machine has metadata role=db"]
    assert db["currentState"] == "inactive"


# ---- pages


async def test_unit_pages(
    api: httpx.AsyncClient, etcd: EtcdClient, keys: Keys, view: ApiView
) -> None:
    assert (await api.get("/fleet/v1/units")).content == b"{}"
    for number in range(200):
        await store_unit(etcd, keys, view, f"u{number:03}.service")
    first = (await api.get("/fleet/v1/units")).json()
    assert first["nextPageToken"] == "ZAACAA=="
    assert [u["name"] for u in first["units"]] == [f"u{n:03}.service" for n in range(100)]
    second = (await api.get("/fleet/v1/units?nextPageToken=ZAACAA%3D%3D")).json()
    assert [u["name"] for u in second["units"]] == [f"u{n:03}.service" for n in range(100, 200)]
    assert second["nextPageToken"] == "ZAADAA=="  # 200 is a multiple of 100: one more page
    assert (await api.get("/fleet/v1/units", params={"nextPageToken": "ZAADAA=="})).content == b"{}"


async def test_machine_pages(
    api: httpx.AsyncClient, etcd: EtcdClient, keys: Keys, view: ApiView
) -> None:
    assert (await api.get("/fleet/v1/machines")).content == b"{}"
    ids = [f"{n:032x}" for n in range(101)]
    for machine_id in reversed(ids):
        await store_machine(etcd, keys, view, Machine(machine_id))
    first = (await api.get("/fleet/v1/machines")).json()
    assert list(first) == ["machines", "nextPageToken"]
    assert first["nextPageToken"] == "ZAACAA=="
    assert [m["id"] for m in first["machines"]] == ids[:100]
    second = await api.get("/fleet/v1/machines?nextPageToken=ZAACAA%3D%3D")
    assert second.content == b'{"machines":[{"id":"' + ids[100].encode() + b'"}]}'


async def test_state_pages_and_filters(
    api: httpx.AsyncClient, etcd: EtcdClient, keys: Keys, view: ApiView
) -> None:
    assert (await api.get("/fleet/v1/state")).content == b"{}"
    for number in range(100):
        await publish_state(etcd, keys, view, f"s{number:03}.service", M2)
    await publish_state(etcd, keys, view, "s000.service", M1, active="failed")
    first = (await api.get("/fleet/v1/state")).json()
    assert [(s["name"], s["machineID"]) for s in first["states"][:3]] == [
        ("s000.service", M1),
        ("s000.service", M2),
        ("s001.service", M2),
    ]
    assert first["nextPageToken"] == "ZAACAA=="
    second = (await api.get("/fleet/v1/state?nextPageToken=ZAACAA%3D%3D")).json()
    assert [s["name"] for s in second["states"]] == ["s099.service"]
    only_m1 = (await api.get(f"/fleet/v1/state?machineID={M1}&machineID={M2}")).json()
    assert [(s["name"], s["systemdActiveState"]) for s in only_m1["states"]] == [
        ("s000.service", "failed")
    ]
    one_unit = (
        await api.get("/v1-alpha/state", params={"unitName": "s000.service", "machineID": M2})
    ).json()
    assert [(s["name"], s["machineID"]) for s in one_unit["states"]] == [("s000.service", M2)]
    assert (await api.get("/fleet/v1/state?unitName=nope.service")).content == b"{}"


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


# ---- state items


async def test_state_of_one_unit(
    api: httpx.AsyncClient, etcd: EtcdClient, keys: Keys, view: ApiView
) -> None:
    assert_error(await api.get("/fleet/v1/state/hello.service"), 404, "unit state does not exist")
    await publish_state(etcd, keys, view, "hello.service", M1)
    response = await api.get("/v1-alpha/state/hello.service")
    assert response.json() == {
        "hash": HELLO_HASH,
        "machineID": M1,
        "name": "hello.service",
        "systemdActiveState": "active",
        "systemdLoadState": "loaded",
        "systemdSubState": "running",
    }


# ---- PATCH /machines


async def test_patch_both_value_forms(
    api: httpx.AsyncClient, etcd: EtcdClient, keys: Keys, view: ApiView
) -> None:
    await store_machine(etcd, keys, view, Machine(M1, {"az": "a", "disk": "hdd"}))
    ops = [
        {"op": "add", "path": f"/{M1}/metadata/role", "value": {"value": "web"}},
        {"op": "replace", "path": f"/{M1}/metadata/disk", "Value": {"Value": "ssd"}},
        {"op": "add", "path": f"/{M1}/metadata/rack", "value": "r1"},
        {"op": "remove", "path": f"/{M1}/metadata/az"},
        {"op": "add", "path": "/0000/metadata/x.y-z_1", "value": "unknown machines are fine"},
    ]
    response = await api.patch("/fleet/v1/machines", content=json.dumps(ops))  # no Content-Type
    assert (response.status_code, response.content) == (204, b"")
    machines = (await api.get("/fleet/v1/machines")).json()["machines"]
    assert machines == [{"id": M1, "metadata": {"disk": "ssd", "rack": "r1", "role": "web"}}]
    assert keys.metadata_key("0000", "x.y-z_1") in await dump(etcd, keys.prefix)


@pytest.mark.parametrize(
    ("ops", "message"),
    [
        (b"", "EOF"),
        (b"{}", "json: cannot unmarshal object into Go value of type []api.machineMetadataOp"),
        (
            [{"op": "test", "path": f"/{M1}/metadata/a", "value": "1"}],
            "invalid op: expect add, remove, or replace",
        ),
        (
            [{"path": f"/{M1}/metadata/a", "value": "1"}],
            "invalid op: expect add, remove, or replace",
        ),
        (
            [{"op": "add", "path": f"/{M1}/metadata/a\n", "value": "1"}],
            "machine metadata path invalid",
        ),
        (
            [{"op": "add", "path": f"{M1}/metadata/a", "value": "1"}],
            "machine metadata path invalid",
        ),
        (
            [{"op": "add", "path": f"/{M1}/metadata/a b", "value": "1"}],
            "machine metadata path invalid",
        ),
        ([{"op": "add", "path": f"/{M1}/labels/a", "value": "1"}], "machine metadata path invalid"),
        (
            [{"op": "add", "path": f"/{M1}/metadata/a"}],
            "invalid value: add and replace require a value",
        ),
        (
            [{"op": "replace", "path": f"/{M1}/metadata/a", "value": {"value": ""}}],
            "invalid value: add and replace require a value",
        ),
        (
            [{"op": "add", "path": f"/{M1}/metadata/a", "value": "1"}, {"op": "add", "path": "/x"}],
            "machine metadata path invalid",
        ),
    ],
)
async def test_patch_refusals_write_nothing(
    api: httpx.AsyncClient, etcd: EtcdClient, keys: Keys, ops: Any, message: str
) -> None:
    content = ops if isinstance(ops, bytes) else json.dumps(ops).encode()
    assert_error(await api.patch("/fleet/v1/machines", content=content), 400, message)
    assert await dump(etcd, keys.prefix) == {}


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
    for prefix in PREFIXES:
        routes += [r for r in _v1_router(service, prefix).routes if isinstance(r, APIRoute)]
    assert len(routes) == 22
    assert all(inspect.iscoroutinefunction(route.endpoint) for route in routes)
