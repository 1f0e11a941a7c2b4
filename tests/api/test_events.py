"""`GET /fleet/v1/events` and `/fleet/v1/snapshot` served for real (uvicorn, the connection gate,
a real etcd): the stream, resuming with Last-Event-ID, its errors, and what it costs a GET."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fleetd.api import events
from fleetd.api.connections import ConnectionLimits
from fleetd.config import Config
from fleetd.registry.client import EtcdClient
from tests.api.test_listeners import UNIT, ready, serving, unix_client
from tests.engine.cluster import wait_until

WAIT = 10.0


class Stream:
    """One SSE response read as text: events as (id, kind, data), comments counted."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.events: list[tuple[str | None, str, dict[str, Any]]] = []
        self.comments: list[str] = []
        self._lines = response.aiter_lines()

    async def read_until(self, done: Any, within: float = WAIT) -> None:
        fields: dict[str, str] = {}
        async with asyncio.timeout(within):
            while not done():
                line = await anext(self._lines)
                if line.startswith(":"):
                    self.comments.append(line[1:].strip())
                elif line:
                    name, _, value = line.partition(": ")
                    fields[name] = value
                elif "event" in fields:
                    self.events.append(
                        (fields.get("id"), fields["event"], json.loads(fields["data"]))
                    )
                    fields = {}

    def ids(self) -> list[str | None]:
        return [event_id for event_id, _, _ in self.events]


@contextlib.asynccontextmanager
async def stream(
    client: httpx.AsyncClient,
    params: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> AsyncIterator[Stream]:
    async with client.stream("GET", "/fleet/v1/events", params=params, headers=headers) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        opened = Stream(resp)
        await opened.read_until(lambda: opened.comments)  # live once the opening comment is in
        yield opened


@contextlib.asynccontextmanager
async def api(
    tmp_path: Path, etcd: EtcdClient, key_prefix: str, limits: ConnectionLimits | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    path = tmp_path / "fleet.sock"
    config = Config(etcd_key_prefix=key_prefix, listen=(str(path),))
    async with serving(config, etcd, limits or ConnectionLimits()), unix_client(path) as client:
        await wait_until(lambda: ready(client), "the API", within=WAIT)
        yield client


async def put_unit(client: httpx.AsyncClient, name: str, body: dict[str, Any] = UNIT) -> None:
    response = await client.put(f"/fleet/v1/units/{name}", json=body)
    assert response.status_code in (201, 204), response.text


async def test_the_stream_carries_a_units_events_and_resumes_after_the_last_id(
    tmp_path: Path, etcd: EtcdClient, key_prefix: str
) -> None:
    async with api(tmp_path, etcd, key_prefix) as client:
        async with stream(client) as first:
            await put_unit(client, "a.service")
            await put_unit(client, "a.service", {"desiredState": "launched"})
            await first.read_until(lambda: len(first.events) == 2)
        assert [(kind, data["unit"]) for _, kind, data in first.events] == [
            ("unit", "a.service"),
            ("desired-state", "a.service"),
        ]
        last = first.ids()[-1]
        assert last is not None
        assert int(last) > 0
        await put_unit(client, "b.service")
        await client.delete("/fleet/v1/units/a.service")
        async with stream(client, headers={"Last-Event-ID": last}) as resumed:
            await resumed.read_until(lambda: len(resumed.events) == 2)
            await put_unit(client, "c.service")
            await resumed.read_until(lambda: len(resumed.events) == 3)
        assert [(d["unit"], d.get("action")) for _, _, d in resumed.events] == [
            ("b.service", "submitted"),
            ("a.service", "destroyed"),
            ("c.service", "submitted"),
        ]
        revisions = [int(i or 0) for i in first.ids() + resumed.ids()]
        assert revisions == sorted(revisions)
        assert len(set(revisions)) == len(revisions)
        # the query parameter serves clients that cannot set headers
        async with stream(client, {"lastEventId": last, "unit": "b*"}) as by_query:
            await by_query.read_until(lambda: len(by_query.events) == 1)
            assert by_query.events[0][2]["unit"] == "b.service"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (({}, {"Last-Event-ID": "abc"}), "bad event id 'abc'"),
        (({"kind": "unit,bogus"}, {}), "unknown event kind 'bogus'"),
        (({"unit": ""}, {}), "empty"),
    ],
)
async def test_bad_requests_get_a_400_naming_the_problem(
    tmp_path: Path,
    etcd: EtcdClient,
    key_prefix: str,
    query: tuple[dict[str, str], dict[str, str]],
    message: str,
) -> None:
    params, headers = query
    async with api(tmp_path, etcd, key_prefix) as client:
        response = await client.get("/fleet/v1/events", params=params, headers=headers)
        assert response.status_code == 400
        assert message in response.json()["error"]["message"]


async def test_a_stream_outlives_the_request_deadlines_and_keeps_alive(
    tmp_path: Path, etcd: EtcdClient, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events, "HEARTBEAT", 0.8)
    limits = ConnectionLimits(header_timeout=0.25, body_timeout=0.25, keep_alive_timeout=1)
    socket_path = tmp_path / "fleet.sock"
    async with (
        api(tmp_path, etcd, key_prefix, limits),
        unix_client(socket_path) as fresh,  # no pooled connection the deadlines may have closed
        stream(fresh) as live,
    ):
        # three keep-alives: the stream has lived through many header deadlines
        await live.read_until(lambda: live.comments.count("keep-alive") >= 3)
        async with unix_client(socket_path) as other:
            await put_unit(other, "late.service")
        await live.read_until(lambda: len(live.events) == 1)


async def test_two_hundred_idle_streams_do_not_hold_up_a_get(
    tmp_path: Path, etcd: EtcdClient, key_prefix: str
) -> None:
    async with api(tmp_path, etcd, key_prefix) as client:
        streams: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        try:
            for _ in range(200):
                reader, writer = await asyncio.open_unix_connection(str(tmp_path / "fleet.sock"))
                writer.write(b"GET /fleet/v1/events HTTP/1.1\r\nHost: fleet\r\n\r\n")
                streams.append((reader, writer))
            for reader, _ in streams:
                async with asyncio.timeout(WAIT):
                    await reader.readuntil(b": live after revision")
            # every stream is open and subscribed: a GET still answers
            async with asyncio.timeout(WAIT):
                listed = await client.get("/fleet/v1/units")
            assert listed.status_code == 200
            await put_unit(client, "everyone.service")
            for reader, _ in streams:  # ...and each stream gets the event
                async with asyncio.timeout(WAIT):
                    await reader.readuntil(b'"unit":"everyone.service"')
        finally:
            for _, writer in streams:
                writer.close()


async def test_the_snapshot_holds_everything_with_a_revision_to_resume_from(
    tmp_path: Path, etcd: EtcdClient, key_prefix: str
) -> None:
    async with api(tmp_path, etcd, key_prefix) as client:
        await put_unit(client, "a.service")
        response = await client.get("/fleet/v1/snapshot")
        assert response.status_code == 200
        body = response.json()
        assert [u["name"] for u in body["units"]] == ["a.service"]
        assert body["units"][0]["desiredState"] == "loaded"
        assert body["units"][0]["currentState"] == "inactive"
        assert body["machines"] == []
        assert body["placements"] == []
        assert body["states"] == []
        async with stream(client, headers={"Last-Event-ID": str(body["revision"])}) as after:
            await put_unit(client, "b.service")
            await after.read_until(lambda: any(d["unit"] == "b.service" for *_, d in after.events))
            # events the snapshot may already show can come again (they carry whole values)
            assert all(d["revision"] > body["revision"] for *_, d in after.events)
        again = (await client.get("/fleet/v1/snapshot")).json()  # not the one kept before
        assert [u["name"] for u in again["units"]] == ["a.service", "b.service"]
        assert again == (await client.get("/fleet/v1/snapshot")).json()


async def test_the_routes_are_in_the_openapi_document(
    tmp_path: Path, etcd: EtcdClient, key_prefix: str
) -> None:
    async with api(tmp_path, etcd, key_prefix) as client:
        paths = (await client.get("/openapi.json")).json()["paths"]
        stream_doc = paths["/fleet/v1/events"]["get"]
        assert "text/event-stream" in stream_doc["responses"]["200"]["content"]
        assert {p["name"] for p in stream_doc["parameters"]} >= {"unit", "machineID", "kind"}
        snapshot_doc = paths["/fleet/v1/snapshot"]["get"]["responses"]["200"]["content"]
        assert "revision" in snapshot_doc["application/json"]["schema"]["properties"]
