"""API fixtures: a running `ApiView` on the test's own prefix, the service, and the real app
in-process through `httpx.ASGITransport`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from fleetd.api.app import create_app
from fleetd.api.service import ApiService
from fleetd.api.view import ApiView
from fleetd.registry.client import EtcdClient
from fleetd.registry.keys import Keys
from tests.api.helpers import VIEW_WAIT


@pytest.fixture
def keys(key_prefix: str) -> Keys:
    return Keys(key_prefix)


@pytest.fixture
async def view(etcd: EtcdClient, keys: Keys) -> AsyncIterator[ApiView]:
    api_view = ApiView(etcd, keys)
    task = asyncio.create_task(api_view.run(), name="test-api-view")
    try:
        await asyncio.wait_for(api_view.wait_ready(), VIEW_WAIT)
        yield api_view
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.fixture
def service(etcd: EtcdClient, keys: Keys, view: ApiView) -> ApiService:
    return ApiService(etcd, keys, view, request_timeout=5.0)


@pytest.fixture
async def api(service: ApiService) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(service))
    async with httpx.AsyncClient(transport=transport, base_url="http://fleet") as client:
        yield client
