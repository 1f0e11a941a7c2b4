"""The dashboard's files: served from memory without the token, with types, ETags and a CSP;
nothing else is reachable through `/ui/` and every data route still needs the token."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from fleetd.api.app import create_app
from fleetd.api.service import ApiService
from fleetd.api.ui import FILES

TOKEN = "ui-test-token"


@pytest.fixture
async def guarded(service: ApiService) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(service, token=TOKEN))
    async with httpx.AsyncClient(transport=transport, base_url="http://fleet") as client:
        yield client


def test_the_page_and_its_modules_are_packaged() -> None:
    assert {"index.html", "app.js", "net.js", "store.js", "style.css"} <= set(FILES)


@pytest.mark.parametrize(
    ("path", "media_type"),
    [
        ("/ui", "text/html"),
        ("/ui/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/style.css", "text/css"),
    ],
)
async def test_files_are_served_without_the_token(
    guarded: httpx.AsyncClient, path: str, media_type: str
) -> None:
    response = await guarded.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(media_type)
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
    again = await guarded.get(path, headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304


@pytest.mark.parametrize("path", ["/ui/missing.js", "/ui/..%2Fapp.py", "/ui/static/app.js"])
async def test_nothing_else_is_served(guarded: httpx.AsyncClient, path: str) -> None:
    assert (await guarded.get(path)).status_code == 404


@pytest.mark.parametrize("path", ["/fleet/v1/units", "/openapi.json", "/uix"])
async def test_data_still_needs_the_token(guarded: httpx.AsyncClient, path: str) -> None:
    assert (await guarded.get(path)).status_code == 401
