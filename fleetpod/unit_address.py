"""Handing a unit's pod address to fleetd's agent: fleet-pod's side of `fleetd.core.pod_address`.

`publish_unit_address` writes `<dir>/<unit>` atomically (the agent never reads half a file);
`withdraw_unit_address` removes it, only when it names the given pod when a pod is given (a newer
pod of the unit keeps its file). The directory is `fleetd.core.pod_address.POD_ADDRESS_DIR`, or
`FLEET_POD_ADDRESS_DIR` (tests, unprivileged use). A unit name that cannot name a file, or a
directory that cannot be written, never stops a pod: the address is then only in `fleet-pod
list`, and the failure is reported to the caller's warning hook.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path

from fleetd.core.pod_address import (
    POD_ADDRESS_DIR,
    PodAddress,
    PodAddressError,
    decode_pod_address,
    encode_pod_address,
    pod_address_file,
)
from fleetd.runtime.files import write_atomically

ADDRESS_DIR_ENV = "FLEET_POD_ADDRESS_DIR"


def address_dir() -> Path:
    return Path(os.environ.get(ADDRESS_DIR_ENV) or POD_ADDRESS_DIR)


def publish_unit_address(
    unit: str, uuid: str, address: IPv4Address, *, warn: Callable[[str], None] | None = None
) -> bool:
    """Tell the agent that `unit` runs pod `uuid` at `address`; whether the file was written."""
    try:
        path = pod_address_file(address_dir(), unit)
        write_atomically(path, encode_pod_address(PodAddress(str(address), uuid)))
    except (OSError, PodAddressError) as exc:
        if warn is not None:
            warn(f"cannot hand the address of pod {uuid} to fleetd ({exc})")
        return False
    return True


def withdraw_unit_address(unit: str, uuid: str | None = None) -> bool:
    """Remove `unit`'s file (only if it names pod `uuid`, when given); whether one went."""
    try:
        path = pod_address_file(address_dir(), unit)
        if uuid is not None:
            try:
                if decode_pod_address(path.read_bytes()).pod != uuid:
                    return False
            except PodAddressError:
                pass  # not a record: nobody's, remove it
        path.unlink()
    except (OSError, PodAddressError):
        return False
    return True
