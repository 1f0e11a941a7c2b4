"""The API's limits on the real app and a real etcd: record sizes counted as stored, control
characters in unit files, numbers too long for Python, and errors that always keep fleet's shape.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from devtools.etcd_server import EtcdServer, free_port
from fleetd.api.app import create_app
from fleetd.api.listeners import open_listeners, serve_on
from fleetd.api.service import ApiService
from fleetd.api.view import ApiView
from fleetd.core.submission import MAX_METADATA_RECORD_BYTES, MAX_UNIT_RECORD_BYTES
from fleetd.registry.client import EtcdClient
from fleetd.registry.keys import Keys
from tests.api.helpers import M1, VIEW_WAIT, dump

JSON = {"Content-Type": "application/json"}
BIG = 960_000  # five records of this size are over gRPC's default receive limit of 4 MiB


def unit_body(options: list[dict[str, str]], desired: str = "launched") -> dict[str, Any]:
    return {"desiredState": desired, "options": options}


def option(value: str, name: str = "Description", section: str = "Unit") -> dict[str, str]:
    return {"section": section, "name": name, "value": value}


def assert_error(response: httpx.Response, status: int, *fragments: str) -> str:
    """fleet's envelope with `status`, its message holding every fragment; returns the message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["error"]["code"] == status
    message: str = body["error"]["message"]
    for fragment in fragments:
        assert fragment in message
    return message


# ---- records already in etcd that are too large for gRPC's default limits


@pytest.fixture
async def big_etcd(private_etcd: EtcdServer) -> AsyncIterator[EtcdClient]:
    """A client on an etcd of the test's own, for the megabytes these tests store."""
    client = await EtcdClient.connect([private_etcd.endpoint])
    try:
        yield client
    finally:
        await client.close()


async def test_large_records_already_stored_do_not_stop_the_api(big_etcd: EtcdClient) -> None:
    """Five 960 KB units and five 900,000-character metadata values, written by another writer
    (before the limits existed, or with etcdctl): the view must fill, and DELETE must work."""
    keys = Keys("/fleet/")
    for i in range(5):
        record = {
            "name": f"big{i}.service",
            "options": [{"section": "Unit", "name": "Description", "value": "x" * BIG}],
            "hash": "0" * 40,
            "desiredState": "inactive",
        }
        await big_etcd.put(keys.unit(f"big{i}.service"), json.dumps(record).encode())
        value = json.dumps({"value": "y" * 900_000}).encode()
        await big_etcd.put(keys.metadata_key(M1, f"k{i}"), value)

    view = ApiView(big_etcd, keys)
    task = asyncio.create_task(view.run(), name="test-api-view")
    try:
        await asyncio.wait_for(view.wait_ready(), VIEW_WAIT)
        app = create_app(ApiService(big_etcd, keys, view, request_timeout=5.0))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://fleet") as api:
            units = (await api.get("/fleet/v1/units")).json()["units"]
            assert [u["name"] for u in units] == [f"big{i}.service" for i in range(5)]
            assert units[0]["options"][0]["value"] == "x" * BIG
            assert (await api.delete("/fleet/v1/units/big0.service")).status_code == 204
            assert await big_etcd.get(keys.unit("big0.service")) is None
            assert (await api.get("/fleet/v1/units/big0.service")).status_code == 404
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


# ---- what the API refuses for size, counted as stored


def many_options(count: int, value: str) -> list[dict[str, str]]:
    return [option(value, name=f"X{i}") for i in range(count)]


@pytest.mark.parametrize(
    ("options", "stored_at_least"),
    [
        # 100,000 empty options: 300 KB of body, 3.6 MB as stored (etcd refuses over 1.5 MiB)
        ([{}] * 100_000, 3_600_000),
        # 150 options of 2,000 characters: 300 KB, under the body limit of 1 MiB
        (many_options(150, "v" * 2000), 300_000),
        # 100 options of 500 emoji: 200 KB in the body, 600 KB as stored (each is \\ud83d\\ude00)
        (many_options(100, "\U0001f600" * 500), 600_000),
    ],
    ids=["empty-options", "long-values", "non-ascii"],
)
async def test_a_unit_over_the_record_limit_is_refused_naming_the_limit(
    api: httpx.AsyncClient,
    etcd: EtcdClient,
    keys: Keys,
    options: list[dict[str, str]],
    stored_at_least: int,
) -> None:
    before = await dump(etcd, keys.prefix)
    body = json.dumps(unit_body(options)).encode()
    assert len(body) < 1 << 20  # under the body limit: the stored size is what is refused
    response = await api.put("/fleet/v1/units/big.service", content=body, headers=JSON)
    message = assert_error(response, 413, "unit big.service", f"{MAX_UNIT_RECORD_BYTES} bytes")
    assert int(message.split(" would take ")[1].split()[0]) >= stored_at_least
    assert await dump(etcd, keys.prefix) == before


async def test_a_unit_just_under_the_record_limit_is_stored(
    api: httpx.AsyncClient, etcd: EtcdClient, keys: Keys
) -> None:
    options = many_options(120, "v" * 2000)  # about 246 KB as stored
    response = await api.put("/fleet/v1/units/large.service", json=unit_body(options))
    assert response.status_code == 201, response.text
    stored = await etcd.get(keys.unit("large.service"))
    assert stored is not None
    assert 240_000 < len(stored.value) <= MAX_UNIT_RECORD_BYTES


@pytest.mark.parametrize(
    "value",
    ["y" * 900_000, "\U0001f600" * 700],  # the second: 2.8 KB in the body, 8.4 KB as stored
    ids=["long", "non-ascii"],
)
async def test_a_metadata_value_over_the_record_limit_is_refused(
    api: httpx.AsyncClient, etcd: EtcdClient, keys: Keys, value: str
) -> None:
    before = await dump(etcd, keys.prefix)
    ops = [
        {"op": "add", "path": f"/{M1}/metadata/small", "value": "ok"},
        {"op": "add", "path": f"/{M1}/metadata/role", "value": value},
    ]
    response = await api.patch("/fleet/v1/machines", json=ops)
    assert_error(response, 413, "metadata value", f"{MAX_METADATA_RECORD_BYTES} bytes")
    assert await dump(etcd, keys.prefix) == before  # not even the small one


async def test_a_metadata_value_under_the_record_limit_is_stored(
    api: httpx.AsyncClient, etcd: EtcdClient, keys: Keys
) -> None:
    ops = [{"op": "add", "path": f"/{M1}/metadata/role", "value": "w" * 8000}]
    assert (await api.patch("/fleet/v1/machines", json=ops)).status_code == 204
    assert await etcd.get(keys.metadata_key(M1, "role")) is not None


# ---- control characters in unit files


@pytest.mark.parametrize(
    ("bad", "fragments"),
    [
        (
            option("x\n[X-Fleet]\nMachineOf=nonexistent.service"),
            ('option "Description" in section "Unit"', "value", "U+000A"),
        ),
        (option("x\r[X-Fleet]"), ('option "Description"', "value", "U+000D")),
        (option("x\x00y"), ('option "Description"', "value", "U+0000")),
        (option("x\x1b[2Jy"), ('option "Description"', "value", "U+001B")),
        (option("x", name="Desc\nription"), ("option name", "U+000A")),
        (option("x", section="Unit\x7f"), ("section name", "U+007F")),
    ],
    ids=["newline", "carriage-return", "nul", "escape", "in-a-name", "in-a-section"],
)
async def test_control_characters_are_refused_naming_the_option(
    api: httpx.AsyncClient,
    etcd: EtcdClient,
    keys: Keys,
    bad: dict[str, str],
    fragments: tuple[str, ...],
) -> None:
    before = await dump(etcd, keys.prefix)
    options = [bad, option("/bin/true", name="ExecStart", section="Service")]
    response = await api.put("/fleet/v1/units/inject.service", json=unit_body(options))
    assert_error(response, 400, "control character", *fragments)
    assert await dump(etcd, keys.prefix) == before


async def test_a_continued_line_and_a_tab_are_not_control_characters(
    api: httpx.AsyncClient,
) -> None:
    options = [
        option("first \\\n  second"),  # what the parser makes of a line ending in a backslash
        option("/bin/echo\ta", name="ExecStart", section="Service"),
    ]
    response = await api.put("/fleet/v1/units/fine.service", json=unit_body(options))
    assert response.status_code == 201, response.text
    unit = (await api.get("/fleet/v1/units/fine.service")).json()
    assert [o["value"] for o in unit["options"]] == ["first \\\n  second", "/bin/echo\ta"]


# ---- numbers too long for Python's int, and the last resort


async def test_an_integer_too_long_for_python_is_a_400_in_fleets_shape(
    api: httpx.AsyncClient, etcd: EtcdClient, keys: Keys
) -> None:
    before = await dump(etcd, keys.prefix)
    huge = "1" + "0" * 5000
    put = await api.put(
        "/fleet/v1/units/a.service", content=f'{{"desiredState": {huge}}}', headers=JSON
    )
    assert_error(put, 400, "cannot unmarshal number into Go struct field Unit.desiredState")
    body = f'[{{"op": "add", "path": "/{M1}/metadata/a", "value": {huge}}}]'
    patch = await api.patch("/fleet/v1/machines", content=body)
    assert_error(patch, 400, "cannot unmarshal number")
    assert await dump(etcd, keys.prefix) == before


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length: (status, lower-cased headers, body)."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in head[1:] if line)
    body = await reader.readexactly(int(headers["content-length"]))
    return int(head[0].split()[1]), headers, body


async def test_over_a_real_socket_the_huge_integer_is_a_400_and_the_connection_lives(
    service: ApiService,
) -> None:
    """uvicorn on TCP: the error is JSON and the same connection serves the next request."""
    body = ('{"desiredState": 1' + "0" * 5000 + "}").encode()
    request = (
        b"PUT /fleet/v1/units/a.service HTTP/1.1\r\nHost: fleet\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    with open_listeners([f"127.0.0.1:{free_port()}"]) as listeners:
        port = listeners[0].sock.getsockname()[1]
        server = asyncio.create_task(
            serve_on(create_app(service), listeners[0], shutdown_timeout=1)
        )
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
            async with asyncio.timeout(10):
                for _ in range(2):
                    writer.write(request)
                    status, headers, answer = await read_response(reader)
                    assert (status, headers["content-type"]) == (400, "application/json")
                    assert "connection" not in headers  # not closing
                    assert json.loads(answer)["error"]["code"] == 400
            writer.close()
        finally:
            server.cancel()
            await asyncio.gather(server, return_exceptions=True)


async def test_a_content_length_too_long_for_python_is_a_413(api: httpx.AsyncClient) -> None:
    headers = {"Content-Type": "application/json", "Content-Length": "9" * 5000}
    response = await api.put("/fleet/v1/units/a.service", content=b"{}", headers=headers)
    assert_error(response, 413, "request body larger than")


async def test_an_unexpected_exception_is_a_500_in_fleets_shape(
    service: ApiService, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(service, "list_units", broken)
    transport = httpx.ASGITransport(app=create_app(service))  # raises what the app lets out
    async with httpx.AsyncClient(transport=transport, base_url="http://fleet") as api:
        with capture_logs() as logs:
            response = await api.get("/fleet/v1/units")
        assert [entry["event"] for entry in logs] == ["request failed"]
        assert_error(response, 500)
        assert response.json()["error"]["message"] == ""
        assert response.headers["server"].startswith("fleetd/")
        assert (await api.get("/healthz")).status_code == 200  # and the app goes on
