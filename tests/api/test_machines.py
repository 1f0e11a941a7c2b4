"""`/machines` in-process: pages, and PATCH of metadata with nothing written when refused (a
request is one etcd transaction, so it is never written in part)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from fleetd.api.view import ApiView
from fleetd.core.model import Machine
from fleetd.registry.client import EtcdClient
from fleetd.registry.keys import Keys
from tests.api.helpers import (
    M1,
    assert_error,
    dump,
    store_machine,
)


async def test_machine_pages(
    api: httpx.AsyncClient, etcd: EtcdClient, keys: Keys, view: ApiView
) -> None:
    assert (await api.get("/fleet/v1/machines")).content == b"{}"
    ids = [f"{n:032x}" for n in range(101)]
    for machine_id in reversed(ids):
        await store_machine(etcd, keys, view, Machine(machine_id))
    first = (await api.get("/fleet/v1/machines")).json()
    assert list(first) == ["machines", "nextPageToken"]
    assert first["nextPageToken"] == "ZAACAA=="
    assert [m["id"] for m in first["machines"]] == ids[:100]
    second = await api.get("/fleet/v1/machines?nextPageToken=ZAACAA%3D%3D")
    assert second.content == b'{"machines":[{"id":"' + ids[100].encode() + b'"}]}'


async def test_patch_both_value_forms(
    api: httpx.AsyncClient, etcd: EtcdClient, keys: Keys, view: ApiView
) -> None:
    await store_machine(etcd, keys, view, Machine(M1, {"az": "a", "disk": "hdd"}))
    ops = [
        {"op": "add", "path": f"/{M1}/metadata/role", "value": {"value": "web"}},
        {"op": "replace", "path": f"/{M1}/metadata/disk", "Value": {"Value": "ssd"}},
        {"op": "add", "path": f"/{M1}/metadata/rack", "value": "r1"},
        {"op": "remove", "path": f"/{M1}/metadata/az"},
        {"op": "add", "path": "/0000/metadata/x.y-z_1", "value": "unknown machines are fine"},
    ]
    response = await api.patch("/fleet/v1/machines", content=json.dumps(ops))  # no Content-Type
    assert (response.status_code, response.content) == (204, b"")
    machines = (await api.get("/fleet/v1/machines")).json()["machines"]
    assert machines == [{"id": M1, "metadata": {"disk": "ssd", "rack": "r1", "role": "web"}}]
    assert keys.metadata_key("0000", "x.y-z_1") in await dump(etcd, keys.prefix)


@pytest.mark.parametrize(
    ("ops", "message"),
    [
        (b"", "EOF"),
        (b"{}", "json: cannot unmarshal object into Go value of type []api.machineMetadataOp"),
        (
            [{"op": "test", "path": f"/{M1}/metadata/a", "value": "1"}],
            "invalid op: expect add, remove, or replace",
        ),
        (
            [{"path": f"/{M1}/metadata/a", "value": "1"}],
            "invalid op: expect add, remove, or replace",
        ),
        (
            [{"op": "add", "path": f"/{M1}/metadata/a\n", "value": "1"}],
            "machine metadata path invalid",
        ),
        (
            [{"op": "add", "path": f"{M1}/metadata/a", "value": "1"}],
            "machine metadata path invalid",
        ),
        (
            [{"op": "add", "path": f"/{M1}/metadata/a b", "value": "1"}],
            "machine metadata path invalid",
        ),
        ([{"op": "add", "path": f"/{M1}/labels/a", "value": "1"}], "machine metadata path invalid"),
        (
            [{"op": "add", "path": f"/{M1}/metadata/a"}],
            "invalid value: add and replace require a value",
        ),
        (
            [{"op": "replace", "path": f"/{M1}/metadata/a", "value": {"value": ""}}],
            "invalid value: add and replace require a value",
        ),
        (
            [{"op": "add", "path": f"/{M1}/metadata/a", "value": "1"}, {"op": "add", "path": "/x"}],
            "machine metadata path invalid",
        ),
    ],
)
async def test_patch_refusals_write_nothing(
    api: httpx.AsyncClient, etcd: EtcdClient, keys: Keys, ops: Any, message: str
) -> None:
    content = ops if isinstance(ops, bytes) else json.dumps(ops).encode()
    assert_error(await api.patch("/fleet/v1/machines", content=content), 400, message)
    assert await dump(etcd, keys.prefix) == {}


def metadata_ops(count: int, value: str = "v") -> list[dict[str, str]]:
    return [{"op": "add", "path": f"/{M1}/metadata/k{i}", "value": value} for i in range(count)]


async def test_a_patch_is_one_transaction_of_at_most_128_keys(
    api: httpx.AsyncClient, etcd: EtcdClient, keys: Keys
) -> None:
    """More keys than one etcd transaction takes are refused whole: written in batches, a
    request could be answered 503 (or 413 for a big value in a later batch) with the first
    batch already stored."""
    too_many = [*metadata_ops(129), metadata_ops(1, "x" * 9000)[0]]
    response = await api.patch("/fleet/v1/machines", content=json.dumps(too_many))
    message = (
        "too many metadata keys in one request: 129, over the limit of 128 (one etcd transaction)"
    )
    assert_error(response, 400, message)
    assert await dump(etcd, keys.prefix) == {}
    again = metadata_ops(128) + metadata_ops(128, "w")  # 256 ops on 128 keys: the last wins
    response = await api.patch("/fleet/v1/machines", content=json.dumps(again))
    assert (response.status_code, response.content) == (204, b"")
    stored = await dump(etcd, keys.prefix)
    assert len(stored) == 128
    assert {json.loads(v)["value"] for v in stored.values()} == {"w"}
