"""fleetctl's calls to pyfleet's network routes (`/fleet/v1/network/...`, see docs/api.md).

Kept beside `fleetctl.client` (which holds fleet's v1 routes) so the extension stays in one
place; it goes through the client's request path, so endpoint, token, timeout and error
handling are the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fleetctl.client import FleetAPIError, FleetClient

CONFIG_PATH = "/network/config"  # under the client's /fleet/v1
SUBNETS_PATH = "/network/subnets"


@dataclass(frozen=True, slots=True)
class Subnet:
    subnet: str
    machine_id: str
    public_ip: str
    backend_type: str
    backend_data: dict[str, Any]


def get_config(client: FleetClient) -> dict[str, Any] | None:
    """The stored configuration (`config`, `effective` or `error`), or None when unset."""
    try:
        answer = client._json(client._request("GET", CONFIG_PATH))
    except FleetAPIError as exc:
        if exc.status == 404:
            return None
        raise
    if not isinstance(answer, dict):
        raise FleetAPIError(200, f"the API sent a configuration that is not an object: {answer!r}")
    return answer


def set_config(client: FleetClient, config: Any) -> dict[str, Any]:
    """Store `config` (flannel's JSON, parsed); the API refuses a bad one naming the field."""
    answer = client._json(client._request("PUT", CONFIG_PATH, body=config))
    if not isinstance(answer, dict):
        raise FleetAPIError(200, f"the API sent an answer that is not an object: {answer!r}")
    return answer


def subnets(client: FleetClient) -> list[Subnet]:
    """Every machine's subnet lease, in address order."""
    answer = client._json(client._request("GET", SUBNETS_PATH))
    rows = answer.get("subnets") if isinstance(answer, dict) else None
    if not isinstance(rows, list):
        raise FleetAPIError(200, f"the API sent a subnet list that is not one: {answer!r}")
    return [
        Subnet(
            str(row.get("subnet", "")),
            str(row.get("machineID", "")),
            str(row.get("publicIP", "")),
            str(row.get("backendType", "")),
            dict(row.get("backendData") or {}),
        )
        for row in rows
        if isinstance(row, dict)
    ]
