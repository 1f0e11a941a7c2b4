"""`/units` and `/units/{name}` in-process: PUT in fleet's order with nothing written when
refused, GET, DELETE, pages. Bodies and statuses are asserted exactly."""

from __future__ import annotations

import json

import httpx
import pytest

from fleetd.api.view import ApiView
from fleetd.core.states import JobState
from fleetd.registry.client import EtcdClient
from fleetd.registry.keys import Keys
from tests.api.helpers import (
    JSON,
    M1,
    M2,
    assert_error,
    dump,
    options,
    options_json,
    place,
    publish_state,
    put,
    store_reasons,
    store_unit,
    unit_body,
)

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
        "MachineID cannot be used with Conflicts",
    ),
    (
        JSON,
        json.dumps(unit_body(("Service", "ExecStart", LONG))).encode(),
        400,
        "malformed unit file: line 2: line too long (max 2048 bytes)",
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
        "Global cannot be used with Replaces",
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
