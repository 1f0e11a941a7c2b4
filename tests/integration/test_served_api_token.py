"""The bearer token on the served TCP listener, as any HTTP client (curl, a Go client) sends it.

fleetctl always sends `Authorization: Bearer <token>`; other clients may spell the scheme in
another case or put more than one space before the token. Both are valid HTTP: the scheme is a
case-insensitive token (RFC 9110 section 11.1) and RFC 6750 section 2.1 defines the credentials as
`"Bearer" 1*SP b64token`, where a quoted ABNF string is case-insensitive (RFC 5234 section 2.3).
"""

from __future__ import annotations

import httpx
import pytest

from tests.integration.cluster import TOKEN, WEB, Cluster


async def _machines(cluster: Cluster, authorization: str | None) -> httpx.Response:
    headers = {} if authorization is None else {"Authorization": authorization}
    async with httpx.AsyncClient(base_url=cluster.tcp_endpoint) as http:
        return await http.get("/fleet/v1/machines", headers=headers)


async def test_the_token_fleetctl_sends_is_accepted_and_others_are_not(
    fleet_cluster: Cluster,
) -> None:
    accepted = await _machines(fleet_cluster, f"Bearer {TOKEN}")
    assert accepted.status_code == 200
    assert accepted.json()["machines"][0]["id"] == WEB
    for authorization in (None, "Bearer wrong", f"Basic {TOKEN}", TOKEN):
        refused = await _machines(fleet_cluster, authorization)
        assert refused.status_code == 401, authorization
        assert refused.json() == {
            "error": {"code": 401, "message": "missing or wrong bearer token"}
        }
    async with httpx.AsyncClient(base_url=fleet_cluster.tcp_endpoint) as http:
        health = await http.get("/healthz")
    assert (health.status_code, health.json()) == (200, {"status": "ok", "viewReady": True})


@pytest.mark.parametrize(
    "authorization",
    [f"bearer {TOKEN}", f"BEARER {TOKEN}", f"Bearer  {TOKEN}"],
    ids=["lower-case scheme", "upper-case scheme", "two spaces"],
)
async def test_any_valid_spelling_of_the_bearer_scheme_is_accepted(
    fleet_cluster: Cluster, authorization: str
) -> None:
    response = await _machines(fleet_cluster, authorization)
    assert response.status_code == 200, response.text
