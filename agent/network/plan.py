"""The route planner: from this machine's subnet lease, the other machines' leases and the
backend, the links, routes, neighbour and forwarding entries the kernel should hold, and the
changes that take the kernel from what it holds to that.

vxlan (flannel's layout): one VXLAN device, `flannel.<VNI>`, carrying the subnet's network
address as a /32; for every other machine a route to its subnet via its subnet's network
address on that device (on-link), a neighbour entry giving that address the machine's VTEP MAC,
and a forwarding (fdb) entry sending that MAC to the machine's public IP.

host-gw: for every other machine a route to its subnet via its public IP; the machines must
share an L2 segment.

A lease of another backend type than the configured one, or outside the configured network,
is skipped (and named in `Desired.skipped`), as flannel does: it cannot be reached this way.

Pure: no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from fleetd.core.network import NetworkConfig, SubnetLease


def vxlan_device_name(vni: int) -> str:
    """The VXLAN device's name, as flannel names it."""
    return f"flannel.{vni}"


@dataclass(frozen=True, slots=True)
class VxlanDevice:
    name: str
    vni: int
    port: int
    local: IPv4Address  # this machine's public IP, the tunnel's source
    address: IPv4Interface  # the subnet's network address, /32
    mtu: int
    mac: str | None = None  # the VTEP's MAC, as this machine's lease announces it


@dataclass(frozen=True, slots=True)
class Route:
    dst: IPv4Network
    gateway: IPv4Address
    device: str | None = None  # None: whichever link reaches the gateway
    onlink: bool = False


@dataclass(frozen=True, slots=True)
class Neighbour:
    address: IPv4Address
    mac: str
    device: str


@dataclass(frozen=True, slots=True)
class FdbEntry:
    mac: str
    dst: IPv4Address
    device: str


@dataclass(frozen=True, slots=True)
class Desired:
    """What the kernel should hold for the cluster network."""

    vxlan: VxlanDevice | None
    routes: frozenset[Route]
    neighbours: frozenset[Neighbour] = frozenset()
    fdb: frozenset[FdbEntry] = frozenset()
    skipped: tuple[str, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class Observed:
    """What the kernel holds for the cluster network (the executor reads it): routes to
    subnets of the cluster network, and the VXLAN device's neighbour and fdb entries."""

    vxlan: VxlanDevice | None = None
    routes: frozenset[Route] = frozenset()
    neighbours: frozenset[Neighbour] = frozenset()
    fdb: frozenset[FdbEntry] = frozenset()


@dataclass(frozen=True, slots=True)
class EnsureVxlan:
    device: VxlanDevice


@dataclass(frozen=True, slots=True)
class DeleteLink:
    name: str


@dataclass(frozen=True, slots=True)
class AddRoute:
    route: Route


@dataclass(frozen=True, slots=True)
class DeleteRoute:
    route: Route


@dataclass(frozen=True, slots=True)
class AddNeighbour:
    neighbour: Neighbour


@dataclass(frozen=True, slots=True)
class DeleteNeighbour:
    neighbour: Neighbour


@dataclass(frozen=True, slots=True)
class AddFdb:
    entry: FdbEntry


@dataclass(frozen=True, slots=True)
class DeleteFdb:
    entry: FdbEntry


Task = (
    EnsureVxlan
    | DeleteLink
    | AddRoute
    | DeleteRoute
    | AddNeighbour
    | DeleteNeighbour
    | AddFdb
    | DeleteFdb
)


def desired_network(
    config: NetworkConfig, own: SubnetLease, leases: Iterable[SubnetLease], link_mtu: int = 1500
) -> Desired:
    """The kernel state for `own` among `leases` (which may include `own`)."""
    backend = config.backend
    others: list[SubnetLease] = []
    skipped: list[str] = []
    for lease in sorted(leases, key=lambda x: int(x.subnet.network_address)):
        if lease.subnet == own.subnet:
            continue
        if not lease.subnet.subnet_of(config.network):
            skipped.append(f"{lease.subnet}: outside network {config.network}")
        elif lease.backend_type != backend.type:
            skipped.append(f"{lease.subnet}: backend {lease.backend_type}, not {backend.type}")
        elif lease.public_ip == own.public_ip:
            skipped.append(f"{lease.subnet}: has this machine's public IP {own.public_ip}")
        else:
            others.append(lease)
    if backend.type == "host-gw":
        routes = frozenset(Route(lease.subnet, lease.public_ip) for lease in others)
        return Desired(None, routes, skipped=tuple(skipped))
    name = vxlan_device_name(backend.vni)
    device = VxlanDevice(
        name,
        backend.vni,
        backend.port,
        own.public_ip,
        IPv4Interface((own.subnet.network_address, 32)),
        backend.mtu(link_mtu),
        own.vtep_mac,
    )
    routes_v, neighbours, fdb = set(), set(), set()
    for lease in others:
        if lease.vtep_mac is None or lease.vni != backend.vni:
            skipped.append(f"{lease.subnet}: VNI {lease.vni}, not {backend.vni}")
            continue
        gateway = lease.subnet.network_address
        routes_v.add(Route(lease.subnet, gateway, name, onlink=True))
        neighbours.add(Neighbour(gateway, lease.vtep_mac, name))
        fdb.add(FdbEntry(lease.vtep_mac, lease.public_ip, name))
    return Desired(
        device, frozenset(routes_v), frozenset(neighbours), frozenset(fdb), tuple(skipped)
    )


def plan_changes(observed: Observed, desired: Desired) -> list[Task]:
    """The tasks that take `observed` to `desired`: stale entries go first (a route to a
    subnet that moved must go before its replacement comes), the device before what uses it."""
    tasks: list[Task] = []
    if observed.vxlan is not None and (
        desired.vxlan is None or observed.vxlan.name != desired.vxlan.name
    ):
        tasks.append(DeleteLink(observed.vxlan.name))
        observed = Observed(routes=frozenset(r for r in observed.routes if r.device is None))
    tasks += [DeleteRoute(r) for r in sorted(observed.routes - desired.routes, key=repr)]
    tasks += [
        DeleteNeighbour(n) for n in sorted(observed.neighbours - desired.neighbours, key=repr)
    ]
    tasks += [DeleteFdb(f) for f in sorted(observed.fdb - desired.fdb, key=repr)]
    if desired.vxlan is not None and observed.vxlan != desired.vxlan:
        tasks.append(EnsureVxlan(desired.vxlan))
    tasks += [AddFdb(f) for f in sorted(desired.fdb - observed.fdb, key=repr)]
    tasks += [AddNeighbour(n) for n in sorted(desired.neighbours - observed.neighbours, key=repr)]
    tasks += [AddRoute(r) for r in sorted(desired.routes - observed.routes, key=repr)]
    return tasks


def vtep_mac(machine_id: str) -> str:
    """The VXLAN device's MAC for `machine_id`: stable across restarts (so a lease taken back
    after a restart still names the right VTEP), unicast and locally administered."""
    digest = hashlib.sha256(f"vtep:{machine_id}".encode()).digest()
    octets = [(digest[0] & 0xFC) | 0x02, *digest[1:6]]
    return ":".join(f"{o:02x}" for o in octets)
