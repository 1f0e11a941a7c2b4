"""schemathesis over the app's own OpenAPI document: no generated request gets a 5xx.

schemathesis runs ASGI apps in its own event-loop thread, so the app it calls carries its etcd
client and view in an ASGI lifespan (`_AppWithLifespan`): they are made, and closed, in that loop.
Positive and negative cases, a bounded number per operation, deterministic.
"""

from __future__ import annotations

import asyncio
from typing import Any

import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.python import asgi
from starlette.types import Receive, Scope, Send

from devtools.etcd_server import EtcdServer
from fleetd.api.app import create_app
from fleetd.api.service import ApiService
from fleetd.api.view import ApiView
from fleetd.registry.client import EtcdClient
from fleetd.registry.keys import Keys

EXAMPLES_PER_OPERATION = 25


class _AppWithLifespan:
    """The real app over a real etcd, with its client and view living in the serving loop."""

    def __init__(self, endpoint: str, prefix: str) -> None:
        self.endpoint = endpoint
        self.prefix = prefix
        self.app: FastAPI | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        assert self.app is not None, "the lifespan has not started"
        await self.app(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        assert (await receive())["type"] == "lifespan.startup"
        client = await EtcdClient.connect([self.endpoint])
        keys = Keys(self.prefix)
        view = ApiView(client, keys)
        watching = asyncio.create_task(view.run())
        try:
            await asyncio.wait_for(view.wait_ready(), 10)
            self.app = create_app(ApiService(client, keys, view))
            await send({"type": "lifespan.startup.complete"})
            assert (await receive())["type"] == "lifespan.shutdown"
        finally:
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)
            await client.close()
        await send({"type": "lifespan.shutdown.complete"})


def test_no_request_makes_a_server_error(etcd_server: EtcdServer, key_prefix: str) -> None:
    app = _AppWithLifespan(etcd_server.endpoint, key_prefix)
    try:
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        results = list(schema.get_all_operations())
        operations = [result.ok() for result in results if isinstance(result, Ok)]
        assert len(operations) == len(results), "the OpenAPI document has invalid operations"
        assert len(operations) == 13  # fleet's 10, and the network routes (fleetd.api.network)
        for operation in operations:
            generated = [
                operation.as_strategy(generation_mode=m) for m in schemathesis.GenerationMode
            ]
            strategy = st.one_of(*generated, *schema.get_strategies_from_examples(operation))

            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=strategy)
            def no_server_error(case: Any) -> None:
                case.call_and_validate(checks=[not_a_server_error])

            no_server_error()
    finally:
        asgi.shutdown_lifespans()
