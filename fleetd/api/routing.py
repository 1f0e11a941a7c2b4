"""What every resource's routes share: rendering JSON as fleet's server does, page tokens from the
query, and the documented parameters and error answers.

Each v1 resource has a module of its own (`units`, `state`, `machines`, `discovery`) with a
`*_router` factory; `fleetd.api.app` mounts each under every prefix. A route module holds only
thin routes: check what HTTP owns, call one `ApiService` method, render with `fleetd.api.schemas`.
"""

from __future__ import annotations

import hmac
from typing import Any, Final

from fastapi import Path, Query, Request, Response

from fleetd.api import schemas
from fleetd.api.pagination import Page, PageToken, parse_page_token
from fleetd.api.service import ApiService

COMPONENTS: Final = "#/components/schemas/"
UNIT_NAME = Path(examples=["hello.service", "web@1.service", "web@.service"])
PAGE_TOKEN = Query(None, alias="nextPageToken", description="the previous page's nextPageToken")
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": schemas.Error} for code in (400, 401, 404, 405, 413, 415, 503)
}
LOST: dict[int | str, dict[str, Any]] = {  # a write whose outcome etcd never told
    504: {"model": schemas.Error, "description": "the write may or may not have been applied"}
}


def json_response(obj: Any) -> Response:
    return Response(schemas.go_json(obj), media_type="application/json")


def next_token(page: Page[Any]) -> str:
    return page.next_token.encode() if page.next_token is not None else ""


def page_token(service: ApiService, request: Request) -> PageToken:
    """The request's `nextPageToken` (fleet refuses it repeated), for the service's limit."""
    return parse_page_token(request.query_params.getlist("nextPageToken"), service.token_limit)


def bearer_matches(headers: list[tuple[bytes, bytes]], expected: bytes) -> bool:
    """One Authorization header, scheme `Bearer` in any case (RFC 9110), then `expected`,
    compared in constant time: the API token's check and the cluster credential's."""
    given = [v for k, v in headers if k == b"authorization"]
    if len(given) != 1:
        return False
    scheme, _, credentials = given[0].strip().partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(b" "), expected)
