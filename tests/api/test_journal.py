"""`fleetd.api.journal`: where a unit's journal is read (`locate_unit`), when a followed one
ends (`gone_reason`), and the route forwarding to a real node-to-node endpoint on TCP, with the
cluster credential, on a real etcd and view."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import pytest

from devtools.etcd_server import free_port
from fleetd.api.app import create_app
from fleetd.api.errors import BadRequest, Unavailable, UnitNotFound, UnitNotRunning
from fleetd.api.journal import JournalForwarder, gone_reason, journal_router, locate_unit
from fleetd.api.peer import serve_peer
from fleetd.api.service import ApiService
from fleetd.api.view import ApiView
from fleetd.core.model import Machine
from fleetd.core.unitfile import UnitOption
from fleetd.registry.client import EtcdClient
from fleetd.registry.keys import Keys
from fleetd.runtime.journal import JournalQuery
from tests.api.helpers import (
    M1,
    M2,
    place,
    publish_state,
    remove,
    simple_options,
    store_machine,
    store_unit,
)

SECRET = "cluster-secret-journal-22"
WITHIN = 10.0
GLOBAL = (*simple_options("g"), UnitOption("X-Fleet", "Global", "true"))


class FollowingReader:
    """Two entries, then (when following) nothing more until cancelled."""

    def __init__(self) -> None:
        self.queries: list[JournalQuery] = []
        self.following = asyncio.Event()
        self.closed = asyncio.Event()

    async def __call__(self, query: JournalQuery) -> AsyncIterator[bytes]:
        self.queries.append(query)
        try:
            for n in range(2):
                yield json.dumps({"__CURSOR": f"c{n}", "MESSAGE": f"line {n}"}).encode()
            if query.follow:
                self.following.set()
                await asyncio.Event().wait()
        finally:
            self.closed.set()


@pytest.fixture
def reader() -> FollowingReader:
    return FollowingReader()


@pytest.fixture
async def peer_port(reader: FollowingReader) -> AsyncIterator[int]:
    port = free_port()
    serving = asyncio.create_task(
        serve_peer(f"127.0.0.1:{port}", SECRET, shutdown_timeout=1.0, reader=reader)
    )

    async def listening() -> None:
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                if serving.done():
                    serving.result()
                await asyncio.sleep(0.02)
                continue
            writer.close()
            return

    await asyncio.wait_for(listening(), WITHIN)
    try:
        yield port
    finally:
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)


async def running_unit(
    etcd: EtcdClient, keys: Keys, view: ApiView, peer: str, name: str = "hello.service"
) -> None:
    await store_machine(etcd, keys, view, Machine(M1, {}, "127.0.0.1", peer))
    record = await store_unit(etcd, keys, view, name)
    await place(etcd, keys, view, record, M1)
    await publish_state(etcd, keys, view, name, M1, unit_hash=record.hash)


def api_for(service: ApiService, forwarder: JournalForwarder) -> httpx.AsyncClient:
    app = create_app(service, routers=[journal_router(forwarder)])
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fleet")


# ---- locate_unit, gone_reason


async def test_where_a_journal_is_read(etcd: EtcdClient, keys: Keys, view: ApiView) -> None:
    with pytest.raises(UnitNotFound):
        locate_unit(view, "nope.service")
    await store_unit(etcd, keys, view, "g.service", GLOBAL)
    with pytest.raises(BadRequest, match="global unit"):
        locate_unit(view, "g.service")
    record = await store_unit(etcd, keys, view, "hello.service")
    with pytest.raises(UnitNotRunning):
        locate_unit(view, "hello.service")  # placed nowhere
    await store_machine(etcd, keys, view, Machine(M1, {}, "10.0.0.1"))
    await place(etcd, keys, view, record, M1)
    with pytest.raises(UnitNotRunning):
        locate_unit(view, "hello.service")  # no state from its machine yet
    await publish_state(etcd, keys, view, "hello.service", M1, unit_hash=record.hash)
    with pytest.raises(Unavailable, match="publishes no node-to-node address"):
        locate_unit(view, "hello.service")
    await store_machine(etcd, keys, view, Machine(M1, {}, "10.0.0.1", "10.0.0.1:49154"))
    assert locate_unit(view, "hello.service").peer_address == "10.0.0.1:49154"


async def test_when_a_followed_journal_ends(etcd: EtcdClient, keys: Keys, view: ApiView) -> None:
    await running_unit(etcd, keys, view, "10.0.0.1:49154")
    await store_machine(etcd, keys, view, Machine(M2, {}, "10.0.0.2", "10.0.0.2:49154"))
    assert gone_reason(view, "hello.service", M1) is None
    assert gone_reason(view, "hello.service", M2) == f"unit hello.service moved to machine {M1}"
    await remove(etcd, view, keys.machines, keys.machine(M1))
    assert gone_reason(view, "hello.service", M1) == f"machine {M1} left the cluster"
    await remove(etcd, view, keys.units, keys.unit("hello.service"))
    assert gone_reason(view, "hello.service", M1) == "unit hello.service was destroyed"


# ---- the route, forwarding to a real peer


async def test_the_journal_comes_from_the_units_machine(
    etcd: EtcdClient,
    *,
    keys: Keys,
    view: ApiView,
    service: ApiService,
    reader: FollowingReader,
    peer_port: int,
) -> None:
    await running_unit(etcd, keys, view, f"127.0.0.1:{peer_port}")
    forwarder = JournalForwarder(view, SECRET)
    async with api_for(service, forwarder) as api:
        response = await api.get("/fleet/v1/units/hello.service/journal", params={"lines": 5})
    await forwarder.aclose()
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    assert [json.loads(line)["MESSAGE"] for line in response.text.splitlines()] == [
        "line 0",
        "line 1",
    ]
    assert reader.queries == [JournalQuery("hello.service", 5, follow=False)]


async def test_a_followed_journal_ends_when_the_unit_moves(
    etcd: EtcdClient,
    *,
    keys: Keys,
    view: ApiView,
    service: ApiService,
    reader: FollowingReader,
    peer_port: int,
) -> None:
    await running_unit(etcd, keys, view, f"127.0.0.1:{peer_port}")
    forwarder = JournalForwarder(view, SECRET)
    async with api_for(service, forwarder) as api:
        path = "/fleet/v1/units/hello.service/journal"
        request = asyncio.create_task(api.get(path, params={"follow": "true"}))
        await asyncio.wait_for(reader.following.wait(), WITHIN)
        assert not request.done()
        # the engine moves it: M1's placement goes, M2 gets one
        await store_machine(etcd, keys, view, Machine(M2, {}, "127.0.0.1"))
        record = view.units["hello.service"]
        await place(etcd, keys, view, record, M2)
        await remove(etcd, view, keys.schedule, keys.placement(M1, "hello.service"))
        response = await asyncio.wait_for(request, WITHIN)
    await forwarder.aclose()
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert [line.get("MESSAGE") for line in lines[:2]] == ["line 0", "line 1"]
    assert lines[2:] == [{"end": f"unit hello.service moved to machine {M2}"}]
    await asyncio.wait_for(reader.closed.wait(), WITHIN)  # the peer stopped reading too


async def test_the_peer_refuses_a_wrong_credential(
    etcd: EtcdClient, keys: Keys, view: ApiView, service: ApiService, peer_port: int
) -> None:
    await running_unit(etcd, keys, view, f"127.0.0.1:{peer_port}")
    forwarder = JournalForwarder(view, "not-the-secret")
    async with api_for(service, forwarder) as api:
        response = await api.get("/fleet/v1/units/hello.service/journal")
    await forwarder.aclose()
    assert response.status_code == 502
    assert response.json()["error"]["message"] == (
        f"the fleetd of machine {M1} at 127.0.0.1:{peer_port} refused this fleetd's cluster "
        "credential"
    )


async def test_refusals_before_anything_is_streamed(
    etcd: EtcdClient, keys: Keys, view: ApiView, service: ApiService
) -> None:
    closed = free_port()  # nothing listens there
    await running_unit(etcd, keys, view, f"127.0.0.1:{closed}")
    await store_unit(etcd, keys, view, "idle.service")
    without_secret = JournalForwarder(view, None)
    with_secret = JournalForwarder(view, SECRET)
    async with api_for(service, without_secret) as api:
        no_secret = await api.get("/fleet/v1/units/hello.service/journal")
    async with api_for(service, with_secret) as api:
        unreachable = await api.get("/fleet/v1/units/hello.service/journal")
        idle = await api.get("/fleet/v1/units/idle.service/journal")
        missing = await api.get("/fleet/v1/units/nope.service/journal")
        too_many = await api.get("/fleet/v1/units/hello.service/journal?lines=10001")
    await without_secret.aclose()
    await with_secret.aclose()
    assert (no_secret.status_code, no_secret.json()["error"]["message"]) == (
        503,
        "this fleetd has no cluster_secret_file: it cannot ask other machines for logs",
    )
    assert unreachable.status_code == 502
    message = unreachable.json()["error"]["message"]
    assert message.startswith(f"cannot reach the fleetd of machine {M1} at 127.0.0.1:{closed}: ")
    assert (idle.status_code, idle.json()["error"]["message"]) == (409, "unit is not running")
    assert (missing.status_code, missing.json()["error"]["message"]) == (404, "unit does not exist")
    assert too_many.status_code == 400
