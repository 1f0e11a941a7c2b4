"""The flat container network's rules: flannel's configuration, subnet choice and lease names.

Every machine leases one subnet of one cluster-wide IPv4 network, and every pod gets an address
from its machine's subnet. The configuration is flannel's JSON, stored at `network/config`:

    {"Network": "10.244.0.0/16", "SubnetLen": 24, "SubnetMin": "10.244.1.0",
     "SubnetMax": "10.244.255.0", "Backend": {"Type": "vxlan", "VNI": 1, "Port": 8472}}

`Network` is the only key that must be there. The defaults are flannel's: `SubnetLen` is 24, or
two more than the network's prefix when the network is smaller than a /22; `SubnetMin` is the
network's second subnet and `SubnetMax` its last. One default differs on purpose: a missing
`Backend.Type` is `vxlan` (flannel's recommended backend), since pyfleet has no `udp` backend.
`vxlan` takes `VNI` (1) and `Port` (8472); `host-gw` takes nothing else.

`parse_network_config` refuses a bad configuration with a `NetworkConfigError` that names the
field; `choose_subnet` picks a machine's subnet (the one it remembers when still free, else a
free one at an offset drawn from its id, so machines starting together rarely race for the same
subnet), raising `NetworkFull` when none is left. Subnets are named in keys as flannel names them,
`10.244.3.0-24`.

Pure: standard library only, no I/O.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, ip_address, ip_network
from typing import Any

BACKENDS = ("vxlan", "host-gw")
DEFAULT_BACKEND = "vxlan"
DEFAULT_VNI = 1
DEFAULT_VXLAN_PORT = 8472
MAX_VNI = 2**24 - 1
# a subnet must hold its bridge (the pods' gateway) and at least a couple of pods
SMALLEST_SUBNET_LEN = 29
VXLAN_OVERHEAD = 50  # outer IPv4, UDP and VXLAN headers plus the inner Ethernet header


class NetworkConfigError(ValueError):
    """A network configuration that cannot be used; the message names the field."""


class NetworkFull(RuntimeError):
    """Every subnet of the configured range is leased."""


@dataclass(frozen=True, slots=True)
class Backend:
    """How packets cross between machines: `vxlan` (an overlay) or `host-gw` (plain routes)."""

    type: str = DEFAULT_BACKEND
    vni: int = DEFAULT_VNI
    port: int = DEFAULT_VXLAN_PORT

    def mtu(self, link_mtu: int) -> int:
        """The pods' MTU over a host link of `link_mtu` bytes."""
        return link_mtu - VXLAN_OVERHEAD if self.type == "vxlan" else link_mtu

    def as_json(self) -> dict[str, Any]:
        if self.type == "vxlan":
            return {"Type": self.type, "VNI": self.vni, "Port": self.port}
        return {"Type": self.type}


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    """A checked configuration, defaults filled in."""

    network: IPv4Network
    subnet_len: int
    subnet_min: IPv4Network
    subnet_max: IPv4Network
    backend: Backend = Backend()

    @property
    def subnet_count(self) -> int:
        """How many subnets lie between `subnet_min` and `subnet_max`, both included."""
        return self._index(self.subnet_max) - self._index(self.subnet_min) + 1

    def subnet_at(self, index: int) -> IPv4Network:
        """The `index`-th subnet of the range (0 is `subnet_min`)."""
        size = 2 ** (32 - self.subnet_len)
        address = int(self.subnet_min.network_address) + index * size
        return IPv4Network((address, self.subnet_len))

    def subnets(self) -> Iterator[IPv4Network]:
        """Every subnet of the range, in address order."""
        return (self.subnet_at(i) for i in range(self.subnet_count))

    def in_range(self, subnet: IPv4Network) -> bool:
        """Whether `subnet` is one this configuration may lease."""
        return (
            subnet.prefixlen == self.subnet_len
            and subnet.subnet_of(self.network)
            and self.subnet_min.network_address
            <= subnet.network_address
            <= self.subnet_max.network_address
        )

    def _index(self, subnet: IPv4Network) -> int:
        return (int(subnet.network_address) - int(self.network.network_address)) >> (
            32 - self.subnet_len
        )

    def as_json(self) -> dict[str, Any]:
        """The configuration in flannel's JSON, every default spelled out."""
        return {
            "Network": str(self.network),
            "SubnetLen": self.subnet_len,
            "SubnetMin": str(self.subnet_min.network_address),
            "SubnetMax": str(self.subnet_max.network_address),
            "Backend": self.backend.as_json(),
        }


def _integer(value: object, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise NetworkConfigError(f"{field}: must be a whole number, not {json.dumps(value)}")
    if not low <= value <= high:
        raise NetworkConfigError(f"{field}: {value} is out of range ({low} to {high})")
    return value


def _subnet_bound(raw: object, field: str, network: IPv4Network, subnet_len: int) -> IPv4Network:
    if not isinstance(raw, str):
        raise NetworkConfigError(f"{field}: must be an IPv4 address string, not {json.dumps(raw)}")
    try:
        address = ip_address(raw)
    except ValueError:
        raise NetworkConfigError(f"{field}: {raw!r} is not an IPv4 address") from None
    if not isinstance(address, IPv4Address) or address not in network:
        raise NetworkConfigError(f"{field}: {raw} is not inside Network {network}")
    try:
        return IPv4Network((address, subnet_len))
    except ValueError:
        raise NetworkConfigError(
            f"{field}: {raw} does not start a /{subnet_len} subnet (SubnetLen)"
        ) from None


def _backend(raw: object) -> Backend:
    if raw is None:
        return Backend()
    if not isinstance(raw, Mapping):
        raise NetworkConfigError(f"Backend: must be an object, not {json.dumps(raw)}")
    kind = raw.get("Type", DEFAULT_BACKEND)
    if kind not in BACKENDS:
        raise NetworkConfigError(
            f"Backend.Type: {json.dumps(kind)} is not supported (use {' or '.join(BACKENDS)})"
        )
    if kind == "host-gw":
        extra = sorted(set(raw) - {"Type"})
        if extra:
            raise NetworkConfigError(f"Backend.{extra[0]}: host-gw takes no options")
        return Backend("host-gw")
    extra = sorted(set(raw) - {"Type", "VNI", "Port"})
    if extra:
        raise NetworkConfigError(f"Backend.{extra[0]}: not a vxlan option (VNI, Port)")
    vni = _integer(raw.get("VNI", DEFAULT_VNI), "Backend.VNI", 1, MAX_VNI)
    port = _integer(raw.get("Port", DEFAULT_VXLAN_PORT), "Backend.Port", 1, 65535)
    return Backend("vxlan", vni, port)


def parse_network_config(text: str | bytes) -> NetworkConfig:
    """A configuration from flannel's JSON; a `NetworkConfigError` names what is wrong."""
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise NetworkConfigError(f"not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise NetworkConfigError("the configuration must be a JSON object")
    if raw.get("EnableIPv6"):
        raise NetworkConfigError("EnableIPv6: IPv6 networks are not supported")
    if "Network" not in raw:
        raise NetworkConfigError('Network: missing (for example "10.244.0.0/16")')
    cidr = raw["Network"]
    if not isinstance(cidr, str):
        raise NetworkConfigError(f"Network: must be a CIDR string, not {json.dumps(cidr)}")
    try:
        network = ip_network(cidr)
    except ValueError as exc:
        raise NetworkConfigError(f"Network: {cidr!r} is not an IPv4 network: {exc}") from None
    if not isinstance(network, IPv4Network):
        raise NetworkConfigError(f"Network: {cidr} is not IPv4")
    if "SubnetLen" in raw:
        subnet_len = _integer(raw["SubnetLen"], "SubnetLen", 1, 32)
    else:
        subnet_len = 24 if network.prefixlen <= 22 else network.prefixlen + 2
    if subnet_len <= network.prefixlen:
        raise NetworkConfigError(
            f"SubnetLen: /{subnet_len} does not fit in Network {network}: it must be longer "
            f"than /{network.prefixlen}"
        )
    if subnet_len > SMALLEST_SUBNET_LEN:
        raise NetworkConfigError(
            f"SubnetLen: /{subnet_len} is too small for a machine's pods "
            f"(at most /{SMALLEST_SUBNET_LEN}; Network {network} may be too small)"
        )
    size = 2 ** (32 - subnet_len)
    first = IPv4Network((int(network.network_address) + size, subnet_len))
    last = IPv4Network((int(network.broadcast_address) + 1 - size, subnet_len))
    lowest = _subnet_bound(
        raw.get("SubnetMin", str(first.network_address)), "SubnetMin", network, subnet_len
    )
    highest = _subnet_bound(
        raw.get("SubnetMax", str(last.network_address)), "SubnetMax", network, subnet_len
    )
    if lowest.network_address > highest.network_address:
        raise NetworkConfigError(
            f"SubnetMin: {lowest.network_address} is above SubnetMax {highest.network_address}"
        )
    return NetworkConfig(network, subnet_len, lowest, highest, _backend(raw.get("Backend")))


def choose_subnet(
    config: NetworkConfig,
    taken: Collection[IPv4Network],
    machine_id: str,
    remembered: IPv4Network | None = None,
) -> IPv4Network:
    """The subnet `machine_id` should try to lease: the one it `remembered` if that is still
    free and in range, else the first free one from an offset drawn from the machine's id."""
    if remembered is not None and config.in_range(remembered) and remembered not in taken:
        return remembered
    used = {s for s in taken if config.in_range(s)}
    count = config.subnet_count
    if len(used) >= count:
        raise NetworkFull(
            f"network {config.network} is full: all {count} subnets /{config.subnet_len} "
            f"from {config.subnet_min.network_address} to {config.subnet_max.network_address} "
            "are leased"
        )
    start = int.from_bytes(hashlib.sha256(machine_id.encode()).digest()[:8], "big") % count
    for step in range(count):
        subnet = config.subnet_at((start + step) % count)
        if subnet not in used:
            return subnet
    raise AssertionError("unreachable: a free subnet was counted")  # pragma: no cover


def subnet_key_name(subnet: IPv4Network) -> str:
    """The last component of a subnet's lease key, as flannel writes it: `10.244.3.0-24`."""
    return f"{subnet.network_address}-{subnet.prefixlen}"


def parse_subnet_key_name(name: str) -> IPv4Network:
    """The subnet a lease key names; ValueError when it names none."""
    address, sep, length = name.partition("-")
    if not sep or not length.isdigit():
        raise ValueError(f"{name!r} is not a subnet lease name (a.b.c.d-len)")
    network = ip_network(f"{address}/{length}")
    if not isinstance(network, IPv4Network):
        raise ValueError(f"{name!r} is not an IPv4 subnet")
    return network


@dataclass(frozen=True, slots=True)
class SubnetLease:
    """One machine's subnet lease, stored at `network/subnets/<name>` in flannel's JSON:
    `{"PublicIP": ..., "BackendType": ..., "BackendData": {...}}`. vxlan's BackendData is
    `{"VNI": n, "VtepMAC": "aa:bb:.."}`; host-gw has none."""

    subnet: IPv4Network
    public_ip: IPv4Address
    backend_type: str = DEFAULT_BACKEND
    vni: int | None = None
    vtep_mac: str | None = None

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.backend_type == "vxlan":
            data = {"VNI": self.vni, "VtepMAC": self.vtep_mac}
        return {
            "PublicIP": str(self.public_ip),
            "BackendType": self.backend_type,
            "BackendData": data,
        }

    def encode(self) -> bytes:
        return json.dumps(self.as_json(), separators=(",", ":")).encode()


def _mac(raw: object) -> str:
    if not isinstance(raw, str):
        raise ValueError(f"BackendData.VtepMAC: must be a MAC address string, not {raw!r}")
    parts = raw.split(":")
    if len(parts) != 6 or not all(
        len(p) == 2 and all(c in "0123456789abcdefABCDEF" for c in p) for p in parts
    ):
        raise ValueError(f"BackendData.VtepMAC: {raw!r} is not a MAC address")
    return raw.lower()


def decode_subnet_lease(name: str, value: bytes) -> SubnetLease:
    """A lease from its key name and stored JSON; ValueError naming the field when malformed."""
    subnet = parse_subnet_key_name(name)
    try:
        raw = json.loads(value)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"subnet lease {name}: not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"subnet lease {name}: not a JSON object")
    try:
        public_ip = ip_address(str(raw.get("PublicIP")))
    except ValueError:
        raise ValueError(
            f"subnet lease {name}: PublicIP {raw.get('PublicIP')!r} is not an address"
        ) from None
    if not isinstance(public_ip, IPv4Address):
        raise ValueError(f"subnet lease {name}: PublicIP {public_ip} is not IPv4")
    kind = raw.get("BackendType", DEFAULT_BACKEND)
    if kind not in BACKENDS:
        raise ValueError(f"subnet lease {name}: BackendType {kind!r} is not supported")
    if kind == "host-gw":
        return SubnetLease(subnet, public_ip, "host-gw")
    data = raw.get("BackendData")
    if not isinstance(data, dict):
        raise ValueError(f"subnet lease {name}: BackendData must be an object for vxlan")
    try:
        vni = _integer(data.get("VNI"), "BackendData.VNI", 1, MAX_VNI)
    except NetworkConfigError as exc:
        raise ValueError(f"subnet lease {name}: {exc}") from None
    try:
        mac = _mac(data.get("VtepMAC"))
    except ValueError as exc:
        raise ValueError(f"subnet lease {name}: {exc}") from None
    return SubnetLease(subnet, public_ip, "vxlan", vni, mac)
