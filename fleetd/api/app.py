"""The FastAPI app: fleet's v1 routes under `/fleet/v1` and `/v1-alpha`, plus `/healthz`.

Routes are thin: they check what the HTTP layer owns (Content-Type, page tokens, decoding the
body), call one `ApiService` method and render its result with `fleetd.api.schemas`. Errors are
raised, never built here: `fleetd.api.errors` turns them into statuses and fleet's envelope.
Every route is `async def`: a sync route would run in a worker thread, reading the view while the
event loop changes it.

Around the routes, four ASGI middlewares, outermost first:
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

A PUT that stores a unit with `[X-Fleet]` keys fleet does not know (accepted, and ignored by the
engine, as in fleet) names them in `X-Pyfleet-Ignored-Keys`: a JSON list of strings, ASCII only.
"""

from __future__ import annotations

import functools
import hmac
import json
from typing import Any, Final

from fastapi import APIRouter, FastAPI, Path, Query, Request, Response
from fastapi.openapi.utils import get_openapi
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fleetd import __version__
from fleetd.api import schemas
from fleetd.api.discovery import discovery_response
from fleetd.api.errors import (
    BadRequest,
    BodyTooLarge,
    MethodNotAllowed,
    Unauthorized,
    UnsupportedMediaType,
    install_error_handlers,
    response_for,
)
from fleetd.api.event_hub import EventHub
from fleetd.api.events import events_router
from fleetd.api.pagination import Page, PageToken, parse_page_token
from fleetd.api.service import ApiService, SetOutcome
from fleetd.api.ui import PATHS as UI_PATHS
from fleetd.api.ui import PREFIX as UI_PREFIX
from fleetd.api.ui import ui_router
from fleetd.core.requirements import unrecognized_keys
from fleetd.core.unitfile import UnitFile

PREFIXES: Final = ("/fleet/v1", "/v1-alpha")
IGNORED_KEYS_HEADER: Final = "X-Pyfleet-Ignored-Keys"
MAX_BODY_BYTES: Final = 1 << 20
SERVER_HEADER: Final = f"fleetd/{__version__}"
OPEN_PATHS: Final = frozenset({"/healthz", *UI_PATHS})
OPEN_PREFIXES: Final = (UI_PREFIX,)  # the dashboard's files: no data (fleetd.api.ui)

# What methods other than a resource's own get, by path under a prefix (fleet's messages).
NOT_ALLOWED: Final = {
    "/units": (405, "only GET supported against this resource"),
    "/units/{name}": (405, "only GET, PUT and DELETE supported against this resource"),
    "/state": (405, "only GET supported against this resource"),
    "/state/{name}": (405, "only GET supported against this resource"),
    "/machines": (405, "only GET and PATCH supported against this resource"),
    "/discovery": (400, "only HTTP GET supported against this resource"),
}

_COMPONENTS: Final = "#/components/schemas/"
_UNIT_NAME = Path(examples=["hello.service", "web@1.service", "web@.service"])
_HELLO_OPTIONS: Final = [
    {"section": "Unit", "name": "Description", "value": "Hello World"},
    {"section": "Service", "name": "ExecStart", "value": "/bin/sh -c 'echo hello; sleep 1d'"},
]
_UNIT_EXAMPLES: Final = {
    "create and start": {"value": {"desiredState": "launched", "options": _HELLO_OPTIONS}},
    "submit": {"value": {"options": _HELLO_OPTIONS}},
    "stop": {"value": {"desiredState": "loaded"}},
}
_MACHINE: Final = "113f16a7b1d84f6f8a2a9d5d2b3c2f19"
_OPS_EXAMPLES: Final = {
    "set and remove": {
        "value": [
            {"op": "add", "path": f"/{_MACHINE}/metadata/role", "value": {"value": "web"}},
            {"op": "remove", "path": f"/{_MACHINE}/metadata/az"},
        ]
    }
}
_PAGE_TOKEN = Query(None, alias="nextPageToken", description="the previous page's nextPageToken")
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": schemas.Error} for code in (400, 401, 404, 405, 413, 415, 503)
}
_LOST: dict[int | str, dict[str, Any]] = {  # a write whose outcome etcd never told
    504: {"model": schemas.Error, "description": "the write may or may not have been applied"}
}


def _json(obj: Any) -> Response:
    return Response(schemas.go_json(obj), media_type="application/json")


def _token(page: Page[Any]) -> str:
    return page.next_token.encode() if page.next_token is not None else ""


def _first(values: list[str]) -> str | None:
    """Go's `url.Values.Get`: the first value (Starlette's `get` returns the last)."""
    return values[0] if values else None


def _require_json(request: Request) -> None:
    """fleet's PUT check: exactly one Content-Type, whose media type is application/json."""
    values = request.headers.getlist("content-type")
    if len(values) != 1:
        raise UnsupportedMediaType(f"expected 1 Content-Type, got {len(values)}")
    if values[0].split(";", 1)[0].strip() != "application/json":
        raise UnsupportedMediaType("only acceptable Content-Type is application/json")


def _v1_router(service: ApiService, prefix: str) -> APIRouter:
    router = APIRouter(prefix=prefix, include_in_schema=prefix == PREFIXES[0])

    def page_token(request: Request) -> PageToken:
        values = request.query_params.getlist("nextPageToken")
        return parse_page_token(values, service.token_limit)

    @router.get("/units", responses={200: {"model": schemas.UnitPage}, **_ERRORS})
    async def list_units(request: Request, next_page_token: str | None = _PAGE_TOKEN) -> Response:
        page = service.list_units(page_token(request))
        return _json(
            schemas.page_json("units", [schemas.unit_json(u) for u in page.items], _token(page))
        )

    @router.get("/units/{name}", responses={200: {"model": schemas.Unit}, **_ERRORS})
    async def get_unit(name: str = _UNIT_NAME) -> Response:
        return _json(schemas.unit_json(service.unit_status(name, listing=False)))

    unit_schema = {"schema": {"$ref": f"{_COMPONENTS}Unit"}, "examples": _UNIT_EXAMPLES}
    body_doc = {"content": {"application/json": unit_schema}}

    @router.put(
        "/units/{name}",
        status_code=201,
        responses={
            201: {"description": "created or replaced"},
            204: {"description": "desired state set"},
            409: {"model": schemas.Error},
            **_ERRORS,
            **_LOST,
        },
        openapi_extra={"requestBody": {"required": True, **body_doc}},
    )
    async def set_unit(request: Request, name: str = _UNIT_NAME) -> Response:
        _require_json(request)
        try:
            unit = schemas.decode_unit_request(await request.body())
        except schemas.DecodeError as exc:
            raise BadRequest(f"unable to decode body: {exc}") from None
        outcome = await service.set_unit(name, unit)
        created = outcome in (SetOutcome.CREATED, SetOutcome.REPLACED)
        response = Response(status_code=201 if created else 204)
        ignored = unrecognized_keys(UnitFile(unit.options))
        if ignored:
            response.headers[IGNORED_KEYS_HEADER] = json.dumps(list(ignored))
        return response

    @router.delete(
        "/units/{name}",
        status_code=204,
        responses={204: {"description": "destroyed"}, **_ERRORS, **_LOST},
    )
    async def destroy_unit(name: str = _UNIT_NAME) -> Response:
        await service.destroy_unit(name)
        return Response(status_code=204)

    @router.get("/state", responses={200: {"model": schemas.UnitStatePage}, **_ERRORS})
    async def list_states(
        request: Request,
        next_page_token: str | None = _PAGE_TOKEN,
        machine_id: str | None = Query(None, alias="machineID", description="one machine's only"),
        unit_name: str | None = Query(None, alias="unitName", description="one unit's only"),
    ) -> Response:
        token = page_token(request)  # filters: the first value of each, as in fleet
        query = request.query_params
        machine, unit = _first(query.getlist("machineID")), _first(query.getlist("unitName"))
        page = service.list_states(token, machine_id=machine, unit_name=unit)
        states = [schemas.state_json(u, m, s) for u, m, s in page.items]
        return _json(schemas.page_json("states", states, _token(page)))

    @router.get("/state/{name}", responses={200: {"model": schemas.UnitState}, **_ERRORS})
    async def get_state(name: str = _UNIT_NAME) -> Response:
        machine, state = service.get_state(name)
        return _json(schemas.state_json(name, machine, state))

    @router.get("/machines", responses={200: {"model": schemas.MachinePage}, **_ERRORS})
    async def list_machines(
        request: Request, next_page_token: str | None = _PAGE_TOKEN
    ) -> Response:
        page = service.list_machines(page_token(request))
        machines = [schemas.machine_json(m) for m in page.items]
        return _json(schemas.page_json("machines", machines, _token(page)))

    ops_doc = {"type": "array", "items": {"$ref": f"{_COMPONENTS}MachineMetadataOp"}}

    @router.patch(
        "/machines",
        status_code=204,
        responses={204: {"description": "metadata set"}, **_ERRORS, **_LOST},
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": ops_doc, "examples": _OPS_EXAMPLES}},
            }
        },
    )
    async def patch_machines(request: Request) -> Response:
        try:
            ops = schemas.decode_metadata_ops(await request.body())
        except schemas.DecodeError as exc:
            raise BadRequest(str(exc)) from None
        await service.patch_machines(ops)
        return Response(status_code=204, media_type="application/json")

    @router.get(
        "/discovery",
        responses={
            200: {"description": "Google discovery document"},
            400: {"model": schemas.Error},
        },
    )
    async def discovery() -> Response:
        return discovery_response()

    return router


def create_app(
    service: ApiService,
    *,
    token: str | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    events: EventHub | None = None,
) -> FastAPI:
    """The v1 API over `service`; with `token`, every request but /healthz must carry it.
    With `events`, the event stream and snapshot extensions (`fleetd.api.events`) too."""
    app = FastAPI(
        title="fleet API",
        version=__version__,
        description="fleet's v1 HTTP API, served by pyfleet (see docs/api.md)",
        docs_url=None,
        redoc_url=None,
        redirect_slashes=False,
    )
    not_allowed: dict[str, tuple[int, str]] = {}
    for prefix in PREFIXES:
        app.include_router(_v1_router(service, prefix))
        not_allowed.update({prefix + path: answer for path, answer in NOT_ALLOWED.items()})
        app.add_api_route(prefix, _not_allowed, methods=["GET"], include_in_schema=False)
    if events is not None:
        app.include_router(events_router(service, events))
    app.include_router(ui_router())
    app.add_api_route("/", _not_allowed, methods=["GET"], include_in_schema=False)
    install_error_handlers(app, not_allowed)

    @app.get("/healthz", response_model=schemas.Health)
    async def healthz() -> Response:
        return _json({"status": "ok", "viewReady": service.ready})

    # Each add_middleware wraps the previous ones: the last added runs first.
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    if token is not None:
        app.add_middleware(BearerToken, token=token)
    app.add_middleware(LastResort)
    app.add_middleware(ServerHeader)
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
            definition = model.model_json_schema(ref_template=_COMPONENTS + "{model}")
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
    """Refuse every request but those to `OPEN_PATHS` without `Authorization: Bearer <token>`."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        if not token:
            raise ValueError("the API token must not be empty")
        self.app = app
        self._expected = token.encode()

    def _accepts(self, headers: list[tuple[bytes, bytes]]) -> bool:
        """One Authorization header, scheme `Bearer` in any case (RFC 9110), then the token."""
        given = [v for k, v in headers if k == b"authorization"]
        if len(given) != 1:
            return False
        scheme, _, credentials = given[0].strip().partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(
            credentials.strip(b" "), self._expected
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        guarded = (
            scope["type"] == "http"
            and path not in OPEN_PATHS
            and not path.startswith(OPEN_PREFIXES)
        )
        if guarded and not self._accepts(scope["headers"]):
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
