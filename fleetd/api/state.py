"""`/state` and `/state/{name}`: the unit states machines publish, as fleet lists them."""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter, Query, Request, Response

from fleetd.api import schemas
from fleetd.api.routing import ERRORS, PAGE_TOKEN, UNIT_NAME, json_response, next_token, page_token
from fleetd.api.service import ApiService

# What methods other than a resource's own get, by path under a prefix (fleet's messages).
NOT_ALLOWED: Final = {
    "/state": (405, "only GET supported against this resource"),
    "/state/{name}": (405, "only GET supported against this resource"),
}


def _first(values: list[str]) -> str | None:
    """Go's `url.Values.Get`: the first value (Starlette's `get` returns the last)."""
    return values[0] if values else None


def state_router(service: ApiService) -> APIRouter:
    router = APIRouter()

    @router.get("/state", responses={200: {"model": schemas.UnitStatePage}, **ERRORS})
    async def list_states(
        request: Request,
        next_page_token: str | None = PAGE_TOKEN,
        machine_id: str | None = Query(None, alias="machineID", description="one machine's only"),
        unit_name: str | None = Query(None, alias="unitName", description="one unit's only"),
    ) -> Response:
        token = page_token(service, request)  # filters: the first value of each, as in fleet
        query = request.query_params
        machine, unit = _first(query.getlist("machineID")), _first(query.getlist("unitName"))
        page = service.list_states(token, machine_id=machine, unit_name=unit)
        states = [schemas.state_json(u, m, s) for u, m, s in page.items]
        return json_response(schemas.page_json("states", states, next_token(page)))

    @router.get("/state/{name}", responses={200: {"model": schemas.UnitState}, **ERRORS})
    async def get_state(name: str = UNIT_NAME) -> Response:
        machine, state = service.get_state(name)
        return json_response(schemas.state_json(name, machine, state))

    return router
