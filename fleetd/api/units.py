"""`/units` and `/units/{name}`: list, get, create or change (PUT) and destroy units.

A PUT that stores a unit with `[X-Fleet]` keys fleet does not know (accepted, and ignored by the
engine, as in fleet) names them in `X-Pyfleet-Ignored-Keys`: a JSON list of strings, ASCII only.
"""

from __future__ import annotations

import json
from typing import Final

from fastapi import APIRouter, Request, Response

from fleetd.api import schemas
from fleetd.api.errors import BadRequest, UnsupportedMediaType
from fleetd.api.routing import (
    COMPONENTS,
    ERRORS,
    LOST,
    PAGE_TOKEN,
    UNIT_NAME,
    json_response,
    next_token,
    page_token,
)
from fleetd.api.service import ApiService, SetOutcome
from fleetd.api.stop_grace import EXACT_STATE_HEADER
from fleetd.core.requirements import unrecognized_keys
from fleetd.core.unitfile import UnitFile

IGNORED_KEYS_HEADER: Final = "X-Pyfleet-Ignored-Keys"

# What methods other than a resource's own get, by path under a prefix (fleet's messages).
NOT_ALLOWED: Final = {
    "/units": (405, "only GET supported against this resource"),
    "/units/{name}": (405, "only GET, PUT and DELETE supported against this resource"),
}

_HELLO_OPTIONS: Final = [
    {"section": "Unit", "name": "Description", "value": "Hello World"},
    {"section": "Service", "name": "ExecStart", "value": "/bin/sh -c 'echo hello; sleep 1d'"},
]
_UNIT_EXAMPLES: Final = {
    "create and start": {"value": {"desiredState": "launched", "options": _HELLO_OPTIONS}},
    "submit": {"value": {"options": _HELLO_OPTIONS}},
    "stop": {"value": {"desiredState": "loaded"}},
}


def _require_json(request: Request) -> None:
    """fleet's PUT check: exactly one Content-Type, whose media type is application/json."""
    values = request.headers.getlist("content-type")
    if len(values) != 1:
        raise UnsupportedMediaType(f"expected 1 Content-Type, got {len(values)}")
    if values[0].split(";", 1)[0].strip() != "application/json":
        raise UnsupportedMediaType("only acceptable Content-Type is application/json")


def units_router(service: ApiService) -> APIRouter:
    router = APIRouter()

    @router.get("/units", responses={200: {"model": schemas.UnitPage}, **ERRORS})
    async def list_units(request: Request, next_page_token: str | None = PAGE_TOKEN) -> Response:
        page = service.list_units(page_token(service, request))
        units = [schemas.unit_json(u) for u in page.items]
        return json_response(schemas.page_json("units", units, next_token(page)))

    @router.get("/units/{name}", responses={200: {"model": schemas.Unit}, **ERRORS})
    async def get_unit(request: Request, name: str = UNIT_NAME) -> Response:
        exact = EXACT_STATE_HEADER in request.headers  # else fleet's restart timing (stop_grace)
        return json_response(
            schemas.unit_json(service.unit_status(name, listing=False, exact=exact))
        )

    unit_schema = {"schema": {"$ref": f"{COMPONENTS}Unit"}, "examples": _UNIT_EXAMPLES}
    body_doc = {"content": {"application/json": unit_schema}}

    @router.put(
        "/units/{name}",
        status_code=201,
        responses={
            201: {"description": "created or replaced"},
            204: {"description": "desired state set"},
            409: {"model": schemas.Error},
            **ERRORS,
            **LOST,
        },
        openapi_extra={"requestBody": {"required": True, **body_doc}},
    )
    async def set_unit(request: Request, name: str = UNIT_NAME) -> Response:
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
        responses={204: {"description": "destroyed"}, **ERRORS, **LOST},
    )
    async def destroy_unit(name: str = UNIT_NAME) -> Response:
        await service.destroy_unit(name)
        return Response(status_code=204)

    return router
