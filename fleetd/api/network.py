"""pyfleet's network routes (an extension beside fleet's v1 routes, never changing them):

* `GET /fleet/v1/network/config`: the stored configuration, flannel's JSON as the operator wrote
  it, plus every default spelled out: `{"config": {...}, "effective": {...}}`; 404 when unset.
  A stored configuration the agents refuse (written straight into etcd) comes back with
  `"error"` naming the field, and no `effective`.
* `PUT /fleet/v1/network/config`: check the body (`parse_network_config`) and store it; a bad one
  is a 400 whose message names the field, and nothing is written. The store is a guarded write
  (`fleetd.registry.writes`), as every other API write: etcd's lost answer is found out, so a 503
  means nothing was written and a 504 that etcd never told.
* `GET /fleet/v1/network/subnets`: every machine's subnet lease, `{"subnets": [{"subnet",
  "machineID", "publicIP", "backendType", "backendData"}]}`, in address order. The machine is
  the one whose `machines/<id>` record rides on the same etcd lease as the subnet key (both are
  the agent's), "" when none does.

Reads go to etcd (a few keys; the watch-fed view does not hold them).
"""

from __future__ import annotations

import json
from ipaddress import IPv4Network
from typing import Any

from fastapi import APIRouter, Request, Response

from fleetd.api.errors import BadRequest, RouteNotFound, Unavailable
from fleetd.api.service import ApiService
from fleetd.core.network import NetworkConfigError, decode_subnet_lease, parse_network_config
from fleetd.registry.writes import Applied, GuardedWrite, apply_guarded, deadline_in, read_keys

PREFIX = "/fleet/v1/network"
MAX_CONFIG_BYTES = 64 * 1024
STORE_ATTEMPTS = 5  # reads and guarded writes of the key before another writer is said to win


async def store_config(service: ApiService, value: bytes) -> None:
    """Set the configuration key to `value`, whatever it held: a guarded write, from the key's
    revision as read, tried again when another writer moved the key in between."""
    key = service.keys.network_config
    deadline = deadline_in(service.request_timeout)
    for _attempt in range(STORE_ATTEMPTS):
        current, revision = await read_keys(service.client, [key], deadline=deadline)
        known = current.get(key)
        expected = {key: 0 if known is None else known.mod_revision}
        write = GuardedWrite(expected=expected, changes={key: value}, observed_at=revision)
        outcome = await apply_guarded(
            service.client, write, deadline=deadline, resolve_for=service.request_timeout
        )
        if isinstance(outcome, Applied):
            return
    raise Unavailable("the network configuration kept changing while it was being written")


def _json(obj: Any) -> Response:
    return Response(json.dumps(obj, separators=(",", ":")), media_type="application/json")


def network_router(service: ApiService) -> APIRouter:
    router = APIRouter(prefix=PREFIX, tags=["network"])
    keys, client = service.keys, service.client

    @router.get("/config")
    async def get_network_config() -> Response:
        kv = await client.get(keys.network_config, timeout=service.request_timeout)
        if kv is None:
            raise RouteNotFound("no network configuration is set")
        try:
            stored: Any = json.loads(kv.value)
        except ValueError:
            stored = kv.value.decode(errors="replace")
        try:
            effective = parse_network_config(kv.value).as_json()
        except NetworkConfigError as exc:
            return _json({"config": stored, "error": str(exc)})
        return _json({"config": stored, "effective": effective})

    @router.put("/config")
    async def put_network_config(request: Request) -> Response:
        body = await request.body()
        if len(body) > MAX_CONFIG_BYTES:
            raise BadRequest(f"the configuration is over {MAX_CONFIG_BYTES} bytes")
        try:
            config = parse_network_config(body)
        except NetworkConfigError as exc:
            raise BadRequest(f"bad network configuration: {exc}") from None
        text = json.dumps(json.loads(body), separators=(",", ":"))
        await store_config(service, text.encode())
        return _json({"config": json.loads(text), "effective": config.as_json()})

    @router.get("/subnets")
    async def list_subnets() -> Response:
        subnets, _ = await client.get_prefix(keys.subnets, timeout=service.request_timeout)
        machines, _ = await client.get_prefix(keys.machines, timeout=service.request_timeout)
        owner = {kv.lease: kv.key.removeprefix(keys.machines) for kv in machines if kv.lease}
        rows = []
        for kv in subnets:
            name = kv.key.removeprefix(keys.subnets)
            try:
                lease = decode_subnet_lease(name, kv.value)
            except ValueError:
                continue
            record = lease.as_json()
            rows.append(
                {
                    "subnet": str(lease.subnet),
                    "machineID": owner.get(kv.lease, "") if kv.lease else "",
                    "publicIP": record["PublicIP"],
                    "backendType": record["BackendType"],
                    "backendData": record["BackendData"],
                }
            )
        rows.sort(key=lambda row: IPv4Network(row["subnet"]))
        return _json({"subnets": rows})

    return router
