"""The test fake itself: it must answer as fleet's v1 API does, or the command
tests prove nothing."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.fleetctl.fake_api import FakeFleet, encode_token

JSON = {"Content-Type": "application/json"}
OPTIONS = [{"section": "Service", "name": "ExecStart", "value": "/bin/true"}]


@pytest.fixture
def api() -> httpx.Client:
    fake = FakeFleet(page_limit=2)
    fake.add_machine("m1", "10.0.0.1")
    return httpx.Client(transport=fake.transport(), base_url="http://fleet/fleet/v1")


def error(response: httpx.Response) -> tuple[int, Any]:
    return response.status_code, response.json()["error"]["message"]


def test_create_update_replace_delete(api: httpx.Client) -> None:
    assert api.put("/units/a.service", json={"options": OPTIONS}).status_code == 201
    assert api.put("/units/a.service", json={"desiredState": "launched"}).status_code == 204
    assert api.get("/units/a.service").json()["currentState"] == "launched"
    replaced = [{"section": "Service", "name": "ExecStart", "value": "/bin/false"}]
    assert api.put("/units/a.service", json={"options": replaced}).status_code == 201
    assert api.get("/units/a.service").json()["desiredState"] == "inactive"
    response = api.delete("/units/a.service")
    assert (response.status_code, response.content) == (204, b"")
    assert error(api.delete("/units/a.service")) == (404, "unit does not exist")


@pytest.mark.parametrize(
    ("path", "body", "headers", "expected"),
    [
        (
            "/units/a.service",
            {"desiredState": "launched"},
            None,
            (409, "unit does not exist and options field empty"),
        ),
        ("/units/bad", {"options": OPTIONS}, None, (400, 'unit name must contain "."')),
        (
            "/units/a.service",
            {"name": "b.service", "options": OPTIONS},
            None,
            (400, 'name in URL "a.service" differs from unit name in request body "b.service"'),
        ),
        (
            "/units/t@.service",
            {"options": OPTIONS, "desiredState": "launched"},
            None,
            (400, 'cannot activate template "t@.service"'),
        ),
        (
            "/units/a.service",
            {"options": OPTIONS, "desiredState": "bogus"},
            None,
            (400, "invalid desiredState: 'bogus'"),
        ),
        (
            "/units/a.service",
            {"options": OPTIONS},
            {"Content-Type": "text/plain"},
            (415, "only acceptable Content-Type is application/json"),
        ),
    ],
)
def test_put_errors(
    api: httpx.Client,
    path: str,
    body: dict[str, Any],
    headers: dict[str, str] | None,
    expected: tuple[int, str],
) -> None:
    if headers:
        response = api.put(path, content=httpx.Response(200, json=body).content, headers=headers)
    else:
        response = api.put(path, json=body)
    assert error(response) == expected


def test_an_update_needs_a_desired_state(api: httpx.Client) -> None:
    api.put("/units/a.service", json={"options": OPTIONS})
    assert error(api.put("/units/a.service", json={"options": OPTIONS})) == (
        409,
        "must provide DesiredState to update existing unit",
    )


def test_paging_with_fleets_tokens(api: httpx.Client) -> None:
    for name in ("a", "b", "c", "d"):
        api.put(f"/units/{name}.service", json={"options": OPTIONS})
    first = api.get("/units").json()
    assert [u["name"] for u in first["units"]] == ["a.service", "b.service"]
    assert first["nextPageToken"] == encode_token(2, 2)
    second = api.get("/units", params={"nextPageToken": first["nextPageToken"]}).json()
    assert second["nextPageToken"] == encode_token(2, 3)  # an exact multiple: one empty page more
    assert api.get("/units", params={"nextPageToken": second["nextPageToken"]}).json() == {}


def test_fleets_own_token_example() -> None:
    assert encode_token(100, 2) == "ZAACAA=="


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("EwBMLg==", "token limit must be 2"),
        (encode_token(2, 0), "token page must be greater than zero"),
    ],
)
def test_bad_tokens(api: httpx.Client, token: str, message: str) -> None:
    assert error(api.get("/machines", params={"nextPageToken": token})) == (400, message)


def test_an_empty_list_is_an_empty_object(api: httpx.Client) -> None:
    assert api.get("/units").json() == {}
    assert api.get("/state").json() == {}


def test_states_and_their_filters(api: httpx.Client) -> None:
    api.put("/units/a.service", json={"options": OPTIONS, "desiredState": "launched"})
    [state] = api.get("/state", params={"unitName": "a.service", "machineID": "m1"}).json()[
        "states"
    ]
    assert state["systemdActiveState"] == "active"
    assert api.get("/state", params={"machineID": "m2"}).json() == {}
    assert api.get("/state/a.service").json() == state
    assert error(api.get("/state/b.service")) == (404, "unit state does not exist")


def test_the_engine_stores_reasons_for_unplaceable_units() -> None:
    fake = FakeFleet()
    fake.unplaceable["db.service"] = ["no machine has metadata role=db"]
    fake.add_unit("db.service", "[Service]\nExecStart=/bin/db\n", desired="launched")
    api = httpx.Client(transport=fake.transport(), base_url="http://fleet/fleet/v1")
    unit = api.get("/units/db.service").json()
    assert unit["unplaceableReasons"] == ["no machine has metadata role=db"]
    assert unit["currentState"] == "inactive"
    assert "machineID" not in unit


def test_unknown_paths_and_methods(api: httpx.Client) -> None:
    assert error(api.get("/nope")) == (404, "")
    assert error(api.get("/units/a/b")) == (404, "")
    assert error(api.post("/units")) == (405, "only GET supported against this resource")
    assert error(api.post("/units/a.service")) == (
        405,
        "only GET, PUT and DELETE supported against this resource",
    )
    assert api.get("http://fleet/v1-alpha/units").status_code == 200
