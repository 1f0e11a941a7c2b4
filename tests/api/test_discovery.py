"""The discovery document: served unchanged, and describing fleet's v1 resources and schemas."""

from __future__ import annotations

import json

import httpx
import pytest

from fleetd.api.discovery import DISCOVERY_JSON


def test_the_document_describes_fleet_v1() -> None:
    document = json.loads(DISCOVERY_JSON)
    assert {k: document[k] for k in ("kind", "id", "name", "version", "title")} == {
        "kind": "discovery#restDescription",
        "id": "fleet:v1",
        "name": "schema",
        "version": "v1",
        "title": "fleet API",
    }
    assert (document["rootUrl"], document["baseUrl"]) == ("$ENDPOINT/", "$ENDPOINT/fleet/v1/")
    assert (document["basePath"], document["servicePath"]) == ("/fleet/v1/", "fleet/v1/")
    assert sorted(document["schemas"]) == [
        "Machine",
        "MachinePage",
        "Unit",
        "UnitOption",
        "UnitPage",
        "UnitState",
        "UnitStatePage",
    ]
    unit = document["schemas"]["Unit"]["properties"]
    assert unit["machineID"]["required"] is True
    assert (
        unit["desiredState"]["enum"]
        == unit["currentState"]["enum"]
        == ["inactive", "loaded", "launched"]
    )
    methods = {
        (resource, name): (
            method["httpMethod"],
            method["path"],
            sorted(method.get("parameters", {})),
        )
        for resource, body in document["resources"].items()
        for name, method in body["methods"].items()
    }
    assert methods == {
        ("Machines", "List"): ("GET", "machines", ["nextPageToken"]),
        ("Units", "List"): ("GET", "units", ["nextPageToken"]),
        ("Units", "Get"): ("GET", "units/{unitName}", ["unitName"]),
        ("Units", "Delete"): ("DELETE", "units/{unitName}", ["unitName"]),
        ("Units", "Set"): ("PUT", "units/{unitName}", ["unitName"]),
        ("UnitState", "Get"): ("GET", "state/{unitName}", ["unitName"]),
        ("UnitState", "List"): ("GET", "state", ["machineID", "nextPageToken", "unitName"]),
    }
    assert document["resources"]["Units"]["methods"]["Set"]["request"] == {"$ref": "Unit"}


@pytest.mark.parametrize("prefix", ["/fleet/v1", "/v1-alpha"])
async def test_served_byte_for_byte(api: httpx.AsyncClient, prefix: str) -> None:
    response = await api.get(f"{prefix}/discovery?alt=json")
    assert (response.status_code, response.content) == (200, DISCOVERY_JSON)
    assert response.headers["content-type"] == "application/json"
    refused = await api.delete(f"{prefix}/discovery")
    assert (refused.status_code, refused.json()) == (
        400,
        {"error": {"code": 400, "message": "only HTTP GET supported against this resource"}},
    )
