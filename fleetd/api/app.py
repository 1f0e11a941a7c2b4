"""The FastAPI app: fleet's v1 routes under `/fleet/v1` and `/v1-alpha`, plus `/healthz`.

Each v1 resource's routes live in a module of their own, included here under both prefixes:
`units` (`/units`, `/units/{name}`), `state` (`/state`, `/state/{name}`), `machines`
(`/machines`) and `discovery` (`/discovery`). Routes are thin: they check what the HTTP layer
owns (Content-Type, page tokens, decoding the body), call one `ApiService` method and render its
result with `fleetd.api.schemas`. Errors are raised, never built there: `fleetd.api.errors` turns
them into statuses and fleet's envelope. Every route is `async def`: a sync route would run in a
worker thread, reading the view while the event loop changes it.

`GET /metrics` and the request counts are `fleetd.api.metrics`, included when the app is given a
`Metrics`.

Around the routes, four ASGI middlewares (five with metrics: `RequestMetrics` outermost),
outermost first:
* `Server: fleetd/<version>` on every response but a 503 (as fleet);
* the last resort: an exception nothing else handled is logged and answered with a 500 in
  fleet's envelope (never Starlette's plain-text page), unless the response had already begun;
* the bearer token, when one is configured: every request but `GET /healthz` and the
  dashboard's files (`/ui`, `fleetd.api.ui`: they hold no data) needs
  `Authorization: Bearer <token>`, else 401 (the OpenAPI document is not exempt);
* the body limit: a declared `Content-Length` over the limit is refused before the app runs, and
  a streamed body is counted as it is read; either way a 413.

Paths follow Go's ServeMux as fleet used it: no slash redirects, `/units/` and `/units/a/b` are
404 with an empty message, `/`, `/fleet/v1` and `/v1-alpha` are 405; unknown query parameters
(`alt=json`) are ignored. Only `/fleet/v1` appears in the OpenAPI document; `/v1-alpha` is the
same handlers.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Final

from fastapi import APIRouter, FastAPI, Response
from fastapi.openapi.utils import get_openapi
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fleetd import __version__
from fleetd.api import discovery, machines, schemas, state, units
from fleetd.api.discovery import discovery_router
from fleetd.api.errors import (
    BodyTooLarge,
    MethodNotAllowed,
    Unauthorized,
    install_error_handlers,
    response_for,
)
from fleetd.api.event_hub import EventHub
from fleetd.api.events import events_router
from fleetd.api.machines import machines_router
from fleetd.api.metrics import RequestMetrics, metrics_router
from fleetd.api.network import network_router
from fleetd.api.routing import COMPONENTS, bearer_matches, json_response
from fleetd.api.service import ApiService
from fleetd.api.state import state_router
from fleetd.api.tls import client_certificate_name
from fleetd.api.ui import PATHS as UI_PATHS
from fleetd.api.ui import PREFIX as UI_PREFIX
from fleetd.api.ui import ui_router
from fleetd.api.units import units_router
from fleetd.runtime.metrics import Metrics

PREFIXES: Final = ("/fleet/v1", "/v1-alpha")
MAX_BODY_BYTES: Final = 1 << 20
SERVER_HEADER: Final = f"fleetd/{__version__}"
OPEN_PATHS: Final = frozenset({"/healthz", *UI_PATHS})
OPEN_PREFIXES: Final = (UI_PREFIX,)  # the dashboard's files: no data (fleetd.api.ui)

# What methods other than a resource's own get, by path under a prefix (fleet's messages).
NOT_ALLOWED: Final = {
    **units.NOT_ALLOWED,
    **state.NOT_ALLOWED,
    **machines.NOT_ALLOWED,
    **discovery.NOT_ALLOWED,
}


def v1_routers(service: ApiService) -> list[APIRouter]:
    """fleet's v1 resources, one router each, in the order fleet's API documents them."""
    return [
        units_router(service),
        state_router(service),
        machines_router(service),
        discovery_router(),
    ]


def create_app(
    service: ApiService,
    *,
    token: str | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    metrics: Metrics | None = None,
    routers: Sequence[APIRouter] = (),
    events: EventHub | None = None,
) -> FastAPI:
    """The v1 API over `service`; with `token`, every request but /healthz must carry it. With
    `metrics`, `GET /metrics` serves them and every request is counted in them. `routers` are
    pyfleet's extensions (each in a module of its own), included as they are. With `events`,
    the event stream and snapshot extensions (`fleetd.api.events`) too."""
    app = FastAPI(
        title="fleet API",
        version=__version__,
        description="fleet's v1 HTTP API, served by pyfleet (see docs/api.md)",
        docs_url=None,
        redoc_url=None,
        redirect_slashes=False,
    )
    # A route of an included router may carry its path with or without the prefix.
    not_allowed: dict[str, tuple[int, str]] = dict(NOT_ALLOWED)
    resources = v1_routers(service)
    for prefix in PREFIXES:
        for router in resources:  # only /fleet/v1 is documented: /v1-alpha is the same handlers
            app.include_router(router, prefix=prefix, include_in_schema=prefix == PREFIXES[0])
        not_allowed.update({prefix + path: answer for path, answer in NOT_ALLOWED.items()})
        app.add_api_route(prefix, _not_allowed, methods=["GET"], include_in_schema=False)
    if events is not None:
        app.include_router(events_router(service, events))
    app.include_router(ui_router())
    app.add_api_route("/", _not_allowed, methods=["GET"], include_in_schema=False)
    app.include_router(network_router(service))
    if metrics is not None:
        app.include_router(metrics_router(metrics))
    for router in routers:
        app.include_router(router)
    install_error_handlers(app, not_allowed)

    @app.get("/healthz", response_model=schemas.Health)
    async def healthz() -> Response:
        return json_response({"status": "ok", "viewReady": service.ready})

    # Each add_middleware wraps the previous ones: the last added runs first.
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    if token is not None:
        app.add_middleware(BearerToken, token=token)
    app.add_middleware(LastResort)
    app.add_middleware(ServerHeader)
    if metrics is not None:  # outermost: it counts refusals and last-resort 500s too
        app.add_middleware(RequestMetrics, metrics=metrics, prefixes=PREFIXES)
    app.openapi = functools.partial(_openapi, app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, plus the request bodies the routes decode themselves, without 422s."""
    if app.openapi_schema is None:
        document = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        for operations in document["paths"].values():
            for operation in operations.values():
                operation["responses"].pop("422", None)  # invalid input is a 400 here
        components = document.setdefault("components", {}).setdefault("schemas", {})
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        for model in (schemas.Unit, schemas.MachineMetadataOp):
            definition = model.model_json_schema(ref_template=COMPONENTS + "{model}")
            components.update(definition.pop("$defs", {}))
            components[model.__name__] = definition
        app.openapi_schema = document
    return app.openapi_schema


async def _not_allowed() -> Response:
    raise MethodNotAllowed("")


# ------------------------------------------------------------------ middleware


class LastResort:
    """A 500 in fleet's envelope for any exception that reached the outside of the app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_and_note(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except Exception as error:
            if started:  # too late for a status: let the server cut the connection
                raise
            response = response_for(error)  # logs it, with its traceback
            await response(scope, receive, send)


class ServerHeader:
    """`Server: fleetd/<version>` on every response except a 503."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_server(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] != 503:
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"server"]
                message = {**message, "headers": [*headers, (b"server", SERVER_HEADER.encode())]}
            await send(message)

        await self.app(scope, receive, send_with_server)


class BearerToken:
    """Refuse every request but those to `OPEN_PATHS` without `Authorization: Bearer <token>`,
    unless its connection presented a client certificate that the client CA verified
    (`fleetd.api.tls`)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        if not token:
            raise ValueError("the API token must not be empty")
        self.app = app
        self._expected = token.encode()

    def _accepts(self, headers: list[tuple[bytes, bytes]]) -> bool:
        return bearer_matches(headers, self._expected)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        guarded = (
            scope["type"] == "http"
            and path not in OPEN_PATHS
            and not path.startswith(OPEN_PREFIXES)
        )
        if guarded and not client_certificate_name(scope) and not self._accepts(scope["headers"]):
            response = response_for(Unauthorized("missing or wrong bearer token"))
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class BodyLimit:
    """413 for a body over `max_bytes`: by its Content-Length up front, or counted as it streams."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = [v for k, v in scope["headers"] if k == b"content-length"]
        if any(self._over(v.strip()) for v in declared):
            response = response_for(self._too_large())
            await response(scope, receive, send)
            return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise self._too_large()
            return message

        await self.app(scope, counting_receive, send)

    def _over(self, length: bytes) -> bool:
        """A declared length over the limit (however many digits it has)."""
        if not length.isdigit():
            return False
        digits = length.lstrip(b"0")
        limit = str(self.max_bytes).encode()
        return len(digits) > len(limit) or (len(digits) == len(limit) and digits > limit)

    def _too_large(self) -> BodyTooLarge:
        return BodyTooLarge(f"request body larger than {self.max_bytes} bytes")
