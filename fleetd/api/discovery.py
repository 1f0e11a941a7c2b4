"""The discovery document: fleet's `GET /fleet/v1/discovery`, in Google's discovery format.

`discovery.json` (beside this module, shipped as package data) describes the v1 resources the
way fleet's generated Go client expects: id `fleet:v1`, the `Machine`, `MachinePage`,
`UnitOption`, `Unit`, `UnitPage`, `UnitState` and `UnitStatePage` schemas, and the `Machines`,
`Units` and `UnitState` methods. Its URL fields hold the placeholder `$ENDPOINT`: a client puts
its own endpoint there. PATCH /machines and pyfleet's extensions are not in it.

Invariant: the file's bytes are served unchanged, read once at import.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Final

from fastapi import APIRouter, Response

from fleetd.api import schemas

DISCOVERY_JSON: Final[bytes] = (
    files(__package__ or "fleetd.api").joinpath("discovery.json").read_bytes()
)


# What methods other than GET get (fleet's message and status).
NOT_ALLOWED: Final = {"/discovery": (400, "only HTTP GET supported against this resource")}


def discovery_response() -> Response:
    return Response(DISCOVERY_JSON, media_type="application/json")


def discovery_router() -> APIRouter:
    router = APIRouter()

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
