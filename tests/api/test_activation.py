"""The API's view starts with the first request: nothing is mirrored before, the first request
waits for the view's first read (bounded), and a view that cannot be read still answers 503."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx

from fleetd.api.activation import ViewActivation
from fleetd.api.app import create_app
from fleetd.api.service import ApiService
from fleetd.api.view import ApiView
from fleetd.registry.client import EtcdClient
from fleetd.registry.keys import Keys
from tests.api.helpers import VIEW_WAIT, assert_error, put, unit_body


@contextlib.asynccontextmanager
async def lazy_api(
    etcd: EtcdClient, keys: Keys, view: ApiView, first_wait: float
) -> AsyncIterator[tuple[ViewActivation, httpx.AsyncClient]]:
    activation = ViewActivation(view, first_wait=first_wait)
    app = activation.wrap(create_app(ApiService(etcd, keys, view, request_timeout=5.0)))
    task = asyncio.create_task(activation.run())
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://f") as api:
            yield activation, api
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_the_view_starts_with_the_first_request_which_waits_for_it(
    etcd: EtcdClient, keys: Keys
) -> None:
    writer = ApiView(etcd, keys)  # another fleetd's API, to put a unit in the registry
    feeding = asyncio.create_task(writer.run())
    try:
        await asyncio.wait_for(writer.wait_ready(), VIEW_WAIT)
        async with lazy_api(etcd, keys, writer, VIEW_WAIT) as (_, other):
            assert (await put(other, "a.service", unit_body())).status_code == 201
    finally:
        feeding.cancel()
        await asyncio.gather(feeding, return_exceptions=True)

    view = ApiView(etcd, keys)
    async with lazy_api(etcd, keys, view, VIEW_WAIT) as (activation, api):
        await asyncio.sleep(0)  # the activation's task runs up to its wait
        assert (activation.started, view.ready) == (False, False)
        first, second = await asyncio.gather(
            api.get("/fleet/v1/units/a.service"), api.get("/fleet/v1/units")
        )
        assert (first.status_code, first.json()["name"]) == (200, "a.service")
        assert [unit["name"] for unit in second.json()["units"]] == ["a.service"]
        assert activation.started
        assert view.ready


async def test_a_view_that_cannot_be_read_answers_503_after_the_bounded_wait(
    etcd: EtcdClient, keys: Keys
) -> None:
    class Unread(ApiView):
        async def run(self) -> None:
            await asyncio.Event().wait()  # never reads anything

    never = Unread(etcd, keys)
    async with lazy_api(etcd, keys, never, first_wait=0.05) as (activation, api):
        response = await api.get("/fleet/v1/units")
        assert_error(response, 503, "fleet server unable to communicate with etcd")
        assert activation.started
