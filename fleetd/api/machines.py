"""`/machines`: list the live machines, and set or remove their metadata (PATCH)."""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter, Request, Response

from fleetd.api import schemas
from fleetd.api.errors import BadRequest
from fleetd.api.routing import (
    COMPONENTS,
    ERRORS,
    LOST,
    PAGE_TOKEN,
    json_response,
    next_token,
    page_token,
)
from fleetd.api.service import ApiService

# What methods other than a resource's own get, by path under a prefix (fleet's messages).
NOT_ALLOWED: Final = {
    "/machines": (405, "only GET and PATCH supported against this resource"),
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


def machines_router(service: ApiService) -> APIRouter:
    router = APIRouter()

    @router.get("/machines", responses={200: {"model": schemas.MachinePage}, **ERRORS})
    async def list_machines(request: Request, next_page_token: str | None = PAGE_TOKEN) -> Response:
        page = service.list_machines(page_token(service, request))
        machines = [schemas.machine_json(m) for m in page.items]
        return json_response(schemas.page_json("machines", machines, next_token(page)))

    ops_doc = {"type": "array", "items": {"$ref": f"{COMPONENTS}MachineMetadataOp"}}

    @router.patch(
        "/machines",
        status_code=204,
        responses={204: {"description": "metadata set"}, **ERRORS, **LOST},
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

    return router
