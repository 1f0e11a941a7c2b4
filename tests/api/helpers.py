"""Helpers for API tests on a real etcd: write what the engine and agents would, read it back;
send requests and check fleet's error envelope."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from fleetd.api.view import ApiView
from fleetd.core.model import Machine, Placement
from fleetd.core.states import JobState
from fleetd.core.unitfile import UnitFile, UnitOption
from fleetd.registry.client import Delete, EtcdClient
from fleetd.registry.codec import (
    UnitRecord,
    UnitStateRecord,
    encode_machine,
    encode_placement,
    encode_reasons,
    encode_state,
    encode_unit,
)
from fleetd.registry.keys import Keys

M1 = "113f16a7b1d84f6f8a2a9d5d2b3c2f19"  # the machine of fleet's documented exchanges
M2 = "2" * 32
M3 = "3" * 32
VIEW_WAIT = 10.0

HELLO_OPTIONS = (
    UnitOption("Unit", "Description", "Hello World"),
    UnitOption(
        "Service",
        "ExecStart",
        '/bin/bash -c "while true; do echo \\"Hello, world\\"; sleep 1; done"',
    ),
)
HELLO_HASH = "e55c0aeb44ba0b68004ceb8a200e685194448b45"


def options(*lines: tuple[str, str, str]) -> tuple[UnitOption, ...]:
    return tuple(UnitOption(*line) for line in lines)


def simple_options(description: str = "x") -> tuple[UnitOption, ...]:
    return options(("Unit", "Description", description), ("Service", "ExecStart", "/bin/true"))


def options_json(opts: tuple[UnitOption, ...]) -> list[dict[str, str]]:
    return [{"section": o.section, "name": o.name, "value": o.value} for o in opts]


async def seen(view: ApiView, prefix: str, revision: int) -> None:
    """Wait (bounded) until the view has applied `revision` under `prefix`."""
    await asyncio.wait_for(view.wait_for({prefix: revision}), VIEW_WAIT)


async def store_unit(
    etcd: EtcdClient,
    keys: Keys,
    view: ApiView,
    name: str,
    opts: tuple[UnitOption, ...] | None = None,
    *,
    desired: JobState = JobState.LAUNCHED,
) -> UnitRecord:
    """A unit written straight into etcd (no API checks), once the view shows it."""
    opts = simple_options(name) if opts is None else opts
    record = UnitRecord(name, opts, UnitFile(opts).hash, desired)
    await seen(view, keys.units, await etcd.put(keys.unit(name), encode_unit(record)))
    return record


async def store_machine(etcd: EtcdClient, keys: Keys, view: ApiView, machine: Machine) -> None:
    record = encode_machine(machine, "test")
    await seen(view, keys.machines, await etcd.put(keys.machine(machine.id), record))


async def place(
    etcd: EtcdClient, keys: Keys, view: ApiView, record: UnitRecord, machine: str
) -> None:
    placement = Placement(record.name, machine, record.hash, record.desired)
    revision = await etcd.put(keys.placement(machine, record.name), encode_placement(placement))
    await seen(view, keys.schedule, revision)


async def publish_state(
    etcd: EtcdClient,
    keys: Keys,
    view: ApiView,
    unit: str,
    machine: str,
    *,
    active: str = "active",
    unit_hash: str = HELLO_HASH,
) -> UnitStateRecord:
    sub = {"active": "running", "inactive": "dead"}.get(active, active)
    state = UnitStateRecord("loaded", active, sub, unit_hash, 1700000000.0)
    revision = await etcd.put(keys.state(machine, unit), encode_state(state))
    await seen(view, keys.states, revision)
    return state


async def store_reasons(
    etcd: EtcdClient, keys: Keys, view: ApiView, unit: str, reasons: tuple[str, ...]
) -> None:
    revision = await etcd.put(keys.unplaceable_unit(unit), encode_reasons(reasons))
    await seen(view, keys.unplaceable, revision)


async def remove(etcd: EtcdClient, view: ApiView, prefix: str, key: str) -> None:
    """Delete `key` (under the watched `prefix`), once the view shows it."""
    result = await etcd.txn([], [Delete(key)])
    await seen(view, prefix, result.revision)


async def dump(etcd: EtcdClient, prefix: str) -> dict[str, bytes]:
    """Everything under `prefix`, to prove that a refused request wrote nothing."""
    kvs, _ = await etcd.get_prefix(prefix)
    return {kv.key: kv.value for kv in kvs}


JSON = {"Content-Type": "application/json"}


def error(code: int, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}, separators=(",", ":")).encode()


def unit_body(*lines: tuple[str, str, str], **fields: Any) -> dict[str, Any]:
    return {**fields, "options": options_json(options(*lines) if lines else simple_options())}


async def put(api: httpx.AsyncClient, name: str, body: Any, **kwargs: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = kwargs.pop("headers", JSON)
    return await api.put(f"/fleet/v1/units/{name}", content=content, headers=headers, **kwargs)


def assert_error(response: httpx.Response, code: int, message: str) -> None:
    assert (response.status_code, response.content) == (code, error(code, message))
    assert response.headers["content-type"] == "application/json"
