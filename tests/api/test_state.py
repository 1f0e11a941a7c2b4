"""`/state` and `/state/{name}` in-process: pages, filters and one unit's state."""

from __future__ import annotations

import httpx

from fleetd.api.view import ApiView
from fleetd.registry.client import EtcdClient
from fleetd.registry.keys import Keys
from tests.api.helpers import (
    HELLO_HASH,
    M1,
    M2,
    assert_error,
    publish_state,
)


async def test_state_pages_and_filters(
    api: httpx.AsyncClient, etcd: EtcdClient, keys: Keys, view: ApiView
) -> None:
    assert (await api.get("/fleet/v1/state")).content == b"{}"
    for number in range(100):
        await publish_state(etcd, keys, view, f"s{number:03}.service", M2)
    await publish_state(etcd, keys, view, "s000.service", M1, active="failed")
    first = (await api.get("/fleet/v1/state")).json()
    assert [(s["name"], s["machineID"]) for s in first["states"][:3]] == [
        ("s000.service", M1),
        ("s000.service", M2),
        ("s001.service", M2),
    ]
    assert first["nextPageToken"] == "ZAACAA=="
    second = (await api.get("/fleet/v1/state?nextPageToken=ZAACAA%3D%3D")).json()
    assert [s["name"] for s in second["states"]] == ["s099.service"]
    only_m1 = (await api.get(f"/fleet/v1/state?machineID={M1}&machineID={M2}")).json()
    assert [(s["name"], s["systemdActiveState"]) for s in only_m1["states"]] == [
        ("s000.service", "failed")
    ]
    one_unit = (
        await api.get("/v1-alpha/state", params={"unitName": "s000.service", "machineID": M2})
    ).json()
    assert [(s["name"], s["machineID"]) for s in one_unit["states"]] == [("s000.service", M2)]
    assert (await api.get("/fleet/v1/state?unitName=nope.service")).content == b"{}"


async def test_state_of_one_unit(
    api: httpx.AsyncClient, etcd: EtcdClient, keys: Keys, view: ApiView
) -> None:
    assert_error(await api.get("/fleet/v1/state/hello.service"), 404, "unit state does not exist")
    await publish_state(etcd, keys, view, "hello.service", M1)
    response = await api.get("/v1-alpha/state/hello.service")
    assert response.json() == {
        "hash": HELLO_HASH,
        "machineID": M1,
        "name": "hello.service",
        "systemdActiveState": "active",
        "systemdLoadState": "loaded",
        "systemdSubState": "running",
    }
