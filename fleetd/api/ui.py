"""The dashboard at `/ui`: static HTML, CSS and JavaScript modules from `fleetd/api/static/`.

The page holds no data: it reads `/fleet/v1/snapshot` and follows `/fleet/v1/events` with the
same credentials as any client (`docs/dashboard.md`). So the page and its files are served to
anyone who can reach the listener, without the bearer token (a browser cannot send one when it
opens a URL); every data request it then makes needs the token on TCP, which the page takes
from `#token=...` in its URL or a form and keeps for the tab.

Files are read once, at import, and served from memory with an ETag; only the files in the
folder are served (no path is joined onto the file system). A strict Content-Security-Policy
allows scripts, styles and connections from this origin only.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import Final

from fastapi import APIRouter, Request, Response

from fleetd.api.errors import RouteNotFound

PATHS: Final = frozenset({"/ui", "/ui/"})
"""The page itself; with `PREFIX`, what the bearer token does not guard."""
PREFIX: Final = "/ui/"

_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
_SECURITY: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _load() -> dict[str, tuple[bytes, str, str]]:
    files: dict[str, tuple[bytes, str, str]] = {}
    for entry in resources.files("fleetd.api").joinpath("static").iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in _TYPES:
            body = entry.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            files[entry.name] = (body, _TYPES[suffix], etag)
    return files


FILES: Final = _load()


def _serve(name: str, request: Request) -> Response:
    found = FILES.get(name)
    if found is None:
        raise RouteNotFound("")
    body, media_type, etag = found
    headers = {**_SECURITY, "ETag": etag}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media_type, headers=headers)


def ui_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/ui")
    @router.get("/ui/")
    async def page(request: Request) -> Response:
        return _serve("index.html", request)

    @router.get("/ui/{name}")
    async def static_file(name: str, request: Request) -> Response:
        return _serve(name, request)

    return router
