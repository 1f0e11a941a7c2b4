"""`fleetd.api.peer`: the node-to-node app refuses anyone without the cluster credential, and
serves a unit's journal from its reader as newline-delimited JSON."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from fleetd.api.peer import create_peer_app
from fleetd.runtime.journal import JournalError, JournalQuery

SECRET = "cluster-secret-9f3a"
ENTRIES = [b'{"__CURSOR":"c1","MESSAGE":"one"}', b'{"__CURSOR":"c2","MESSAGE":"two"}']


class FakeReader:
    def __init__(self, fail: str = "") -> None:
        self.queries: list[JournalQuery] = []
        self.fail = fail

    async def __call__(self, query: JournalQuery) -> AsyncIterator[bytes]:
        self.queries.append(query)
        if self.fail:
            raise JournalError(self.fail)
        for entry in ENTRIES:
            yield entry


@pytest.fixture
def reader() -> FakeReader:
    return FakeReader()


@pytest.fixture
async def peer(reader: FakeReader) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_peer_app(SECRET, reader))
    async with httpx.AsyncClient(transport=transport, base_url="http://node2") as client:
        yield client


AUTH = {"Authorization": f"Bearer {SECRET}"}
PATH = "/peer/v1/journal/hello.service"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {SECRET}"},
        {"Authorization": f"Bearer {SECRET}x"},
        {"Authorization": f"Bearer {SECRET[:-1]}"},
    ],
)
async def test_no_request_without_the_credential(
    peer: httpx.AsyncClient, reader: FakeReader, headers: dict[str, str]
) -> None:
    for path in (PATH, "/", "/healthz", "/openapi.json", "/peer/v1/other"):
        response = await peer.get(path, headers=headers)
        assert response.status_code == 401, path
        assert response.json() == {
            "error": {"code": 401, "message": "missing or wrong cluster credential"}
        }
    assert reader.queries == []


async def test_two_authorization_headers_are_refused(peer: httpx.AsyncClient) -> None:
    headers = [("Authorization", f"Bearer {SECRET}"), ("Authorization", f"Bearer {SECRET}")]
    assert (await peer.get(PATH, headers=headers)).status_code == 401


async def test_the_journal_as_ndjson(peer: httpx.AsyncClient, reader: FakeReader) -> None:
    response = await peer.get(PATH, params={"lines": "2"}, headers=AUTH)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    assert response.content == b"".join(entry + b"\n" for entry in ENTRIES)
    assert reader.queries == [JournalQuery("hello.service", 2, follow=False)]
    await peer.get(PATH, params={"follow": "true"}, headers=AUTH)
    assert reader.queries[-1] == JournalQuery("hello.service", 10, follow=True)


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/peer/v1/journal/hello", {}),  # no unit type
        (PATH, {"lines": "10001"}),
        (PATH, {"lines": "-1"}),
        (PATH, {"lines": "many"}),
    ],
)
async def test_bad_requests(
    peer: httpx.AsyncClient, reader: FakeReader, path: str, params: dict[str, str]
) -> None:
    response = await peer.get(path, params=params, headers=AUTH)
    assert response.status_code == 400
    assert response.json()["error"]["message"]
    assert reader.queries == []


async def test_a_journal_that_cannot_be_read_is_a_503() -> None:
    transport = httpx.ASGITransport(app=create_peer_app(SECRET, FakeReader("no journalctl")))
    async with httpx.AsyncClient(transport=transport, base_url="http://node2") as client:
        response = await client.get(PATH, headers=AUTH)
    assert response.status_code == 503
    assert response.json() == {"error": {"code": 503, "message": "no journalctl"}}


def test_an_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        create_peer_app("", FakeReader())
