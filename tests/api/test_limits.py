"""The API's limits on the real app and a real etcd: record sizes counted as stored, control
characters in unit files, numbers too long for Python, and errors that always keep fleet's shape.
"""

from __future__ import annotations

import httpx
import pytest
from structlog.testing import capture_logs

from fleetd.api.app import create_app
from fleetd.api.service import ApiService
from fleetd.registry.client import EtcdClient
from fleetd.registry.keys import Keys
from tests.api.helpers import M1, dump

JSON = {"Content-Type": "application/json"}


def assert_error(response: httpx.Response, status: int, *fragments: str) -> str:
    """fleet's envelope with `status`, its message holding every fragment; returns the message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["error"]["code"] == status
    message: str = body["error"]["message"]
    for fragment in fragments:
        assert fragment in message
    return message


# ---- numbers too long for Python's int, and the last resort


async def test_an_integer_too_long_for_python_is_a_400_in_fleets_shape(
    api: httpx.AsyncClient, etcd: EtcdClient, keys: Keys
) -> None:
    before = await dump(etcd, keys.prefix)
    huge = "1" + "0" * 5000
    put = await api.put(
        "/fleet/v1/units/a.service", content=f'{{"desiredState": {huge}}}', headers=JSON
    )
    assert_error(put, 400, "cannot unmarshal number into Go struct field Unit.desiredState")
    body = f'[{{"op": "add", "path": "/{M1}/metadata/a", "value": {huge}}}]'
    patch = await api.patch("/fleet/v1/machines", content=body)
    assert_error(patch, 400, "cannot unmarshal number")
    assert await dump(etcd, keys.prefix) == before


async def test_a_content_length_too_long_for_python_is_a_413(api: httpx.AsyncClient) -> None:
    headers = {"Content-Type": "application/json", "Content-Length": "9" * 5000}
    response = await api.put("/fleet/v1/units/a.service", content=b"{}", headers=headers)
    assert_error(response, 413, "request body larger than")


async def test_an_unexpected_exception_is_a_500_in_fleets_shape(
    service: ApiService, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(service, "list_units", broken)
    transport = httpx.ASGITransport(app=create_app(service))  # raises what the app lets out
    async with httpx.AsyncClient(transport=transport, base_url="http://fleet") as api:
        with capture_logs() as logs:
            response = await api.get("/fleet/v1/units")
        assert [entry["event"] for entry in logs] == ["request failed"]
        assert_error(response, 500)
        assert response.json()["error"]["message"] == ""
        assert response.headers["server"].startswith("fleetd/")
        assert (await api.get("/healthz")).status_code == 200  # and the app goes on
