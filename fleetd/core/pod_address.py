"""The pod-address handoff: how fleet-pod tells the agent the address of a unit's pod.

fleet-pod and the agent are separate programs that may not import each other, so the address
travels through one small file per unit, in a runtime directory both know:

    /run/fleet/pod-addresses/<unit name>    {"address": "10.244.3.2", "pod": "<pod uuid>"}

* fleet-pod writes it (atomically) just before it execs stage1, when a pod of a service unit
  joined the cluster network (`--net default` on a node with a subnet). The unit's name is the
  service fleet-pod runs in (from `/proc/self/cgroup`); a pod run outside a service writes none.
* fleet-pod removes it when that pod stops (`gc --mark-only` as the unit's `ExecStopPost=`), when
  gc marks or sweeps the pod, and when the unit starts a pod without an address.
* The agent watches the directory (inotify) and publishes the address in the unit's state
  (`podAddress` in `states/<machine>/<unit>`) while systemd reports the unit `active`: a file
  left by a pod that died unseen shows nowhere.

The file's name is the unit's name, checked by `unit_file_name_problem` (no `/`, no dot files);
`address` is a dotted IPv4 address without its prefix length, `pod` the pod's UUID. Pure:
the path, the format and its checks; fleet-pod and the agent do the reading and writing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from ipaddress import AddressValueError, IPv4Address
from pathlib import Path

from fleetd.core.names import unit_file_name_problem

POD_ADDRESS_DIR = Path("/run/fleet/pod-addresses")
MAX_POD_ADDRESS_BYTES = 4096  # a record is under 100 bytes; a bigger file is not one


class PodAddressError(ValueError):
    """A pod-address file or unit name that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class PodAddress:
    """The address of the pod a unit runs, as fleet-pod hands it to the agent."""

    address: str
    pod: str


def pod_address_file(directory: Path, unit: str) -> Path:
    """The file of `unit` in `directory`; `PodAddressError` for a name that is not a unit's."""
    problem = unit_file_name_problem(unit)
    if problem is not None:
        raise PodAddressError(f"no pod-address file for {unit!r}: {problem}")
    return directory / unit


def _checked_address(text: object) -> str:
    if not isinstance(text, str):
        raise PodAddressError(f"'address' must be a string, got {text!r}")
    try:
        return str(IPv4Address(text))
    except AddressValueError:
        raise PodAddressError(f"'address' is not an IPv4 address: {text!r}") from None


def encode_pod_address(record: PodAddress) -> bytes:
    """The file's bytes; `PodAddressError` for an address that is not IPv4 or an empty pod."""
    if not record.pod:
        raise PodAddressError("'pod' must name the pod")
    address = _checked_address(record.address)
    return json.dumps({"address": address, "pod": record.pod}, sort_keys=True).encode() + b"\n"


def decode_pod_address(raw: bytes) -> PodAddress:
    """A file's record; `PodAddressError` naming what is wrong with it."""
    if len(raw) > MAX_POD_ADDRESS_BYTES:
        raise PodAddressError(f"{len(raw)} bytes, more than a pod address takes")
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PodAddressError(f"not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise PodAddressError(f"expected a JSON object, got {type(obj).__name__}")
    pod = obj.get("pod")
    if not isinstance(pod, str) or not pod:
        raise PodAddressError(f"'pod' must be a non-empty string, got {pod!r}")
    return PodAddress(_checked_address(obj.get("address")), pod)
