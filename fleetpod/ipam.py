"""Pod addresses on this node: which subnet the node holds, and which address each pod has.

The node's subnet comes from the agent's `subnet.env` (flannel's variables: `FLANNEL_NETWORK`,
`FLANNEL_SUBNET` as the bridge's address with the subnet's length, `FLANNEL_MTU`); no file means
no cluster network on this node, and `Net=default` keeps loopback only.

`AddressBook` hands out the subnet's addresses, one file per address in
`<data dir>/network/addresses/<a.b.c.d>` holding the pod's UUID, each created with O_EXCL: two
fleet-pods starting at once never get the same address, and allocations survive restarts of
fleet-pod, fleetd and the pods themselves. A pod that already holds an address gets it again.
The network address, the gateway (the bridge) and the broadcast address are never handed out.
`release(uuid)` frees a pod's address (at `gc`, or when its network could not be made).
Standard library only: this module makes no link.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

from fleetpod.errors import PodError

SUBNET_FILE_ENV = "FLEET_POD_SUBNET_FILE"
DEFAULT_SUBNET_FILE = Path("/run/fleet/subnet.env")


class PortTaken(PodError):
    """A node port another pod publishes, or something on the node listens on."""


class AddressesExhausted(PodError):
    """Every address of the node's subnet is held by a pod."""


@dataclass(frozen=True, slots=True)
class NodeNetwork:
    """The cluster network as this node sees it."""

    network: IPv4Network  # the whole cluster network
    gateway: IPv4Interface  # the bridge's address, with the node's subnet length
    mtu: int
    public_ip: IPv4Address | None = None  # where pods' ports are published (FLEET_PUBLIC_IP)

    @property
    def subnet(self) -> IPv4Network:
        return self.gateway.network


def subnet_file() -> Path:
    return Path(os.environ.get(SUBNET_FILE_ENV) or DEFAULT_SUBNET_FILE)


def parse_subnet_env(text: str) -> NodeNetwork:
    """flannel's `subnet.env`; PodError naming the variable when one is missing or bad."""
    values = {}
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep:
            values[name.strip()] = value.strip()
    try:
        network = IPv4Network(values["FLANNEL_NETWORK"])
        gateway = IPv4Interface(values["FLANNEL_SUBNET"])
        mtu = int(values.get("FLANNEL_MTU", "1500"))
        public_ip = IPv4Address(values["FLEET_PUBLIC_IP"]) if "FLEET_PUBLIC_IP" in values else None
    except KeyError as exc:
        raise PodError(f"subnet file: {exc.args[0]} is missing") from None
    except ValueError as exc:
        raise PodError(f"subnet file: {exc}") from None
    if not gateway.network.subnet_of(network):
        raise PodError(f"subnet file: FLANNEL_SUBNET {gateway} is outside {network}")
    return NodeNetwork(network, gateway, mtu, public_ip)


def read_node_network(path: Path | None = None) -> NodeNetwork | None:
    """This node's network, or None when the node has no cluster network."""
    try:
        text = (path or subnet_file()).read_text()
    except FileNotFoundError:
        return None
    return parse_subnet_env(text)


class AddressBook:
    """Pod addresses of one node; see the module docstring."""

    def __init__(self, data_dir: Path) -> None:
        self.directory = data_dir / "network" / "addresses"

    def holder(self, address: IPv4Address) -> str | None:
        try:
            return (self.directory / str(address)).read_text().strip() or None
        except FileNotFoundError:
            return None

    def held(self) -> dict[IPv4Address, str]:
        """Every address handed out, with its pod's UUID."""
        found = {}
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(self.directory):
                with contextlib.suppress(ValueError):
                    uuid = self.holder(IPv4Address(name))
                    if uuid:
                        found[IPv4Address(name)] = uuid
        return found

    def address_of(self, uuid: str) -> IPv4Address | None:
        return next((a for a, holder in self.held().items() if holder == uuid), None)

    def allocate(self, node: NodeNetwork, uuid: str) -> IPv4Interface:
        """An address of the node's subnet for pod `uuid` (its own again when it has one)."""
        subnet = node.subnet
        mine = self.address_of(uuid)
        if mine is not None and mine in subnet:
            return IPv4Interface((mine, subnet.prefixlen))
        self.directory.mkdir(parents=True, exist_ok=True)
        reserved = {subnet.network_address, subnet.broadcast_address, node.gateway.ip}
        for address in subnet.hosts():
            if address in reserved:
                continue
            try:
                fd = os.open(self.directory / str(address), os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            except FileExistsError:
                continue
            with os.fdopen(fd, "w") as file:
                file.write(uuid + "\n")
            return IPv4Interface((address, subnet.prefixlen))
        raise AddressesExhausted(
            f"no free address in {subnet}: all {subnet.num_addresses - 3} are held by pods "
            "(fleet-pod gc frees those of removed pods)"
        )

    def release(self, uuid: str) -> list[IPv4Address]:
        """Free every address pod `uuid` holds; the addresses freed."""
        freed = []
        for address, holder in self.held().items():
            if holder == uuid:
                with contextlib.suppress(FileNotFoundError):
                    (self.directory / str(address)).unlink()
                freed.append(address)
        return freed


class PortBook:
    """Which pod publishes which node port: `<data dir>/network/ports/<proto>-<port>` holding
    the pod's UUID, created with O_EXCL (two pods never publish one port)."""

    def __init__(self, data_dir: Path) -> None:
        self.directory = data_dir / "network" / "ports"

    def claim(self, uuid: str, protocol: str, port: int) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{protocol}-{port}"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            holder = path.read_text().strip()
            if holder == uuid:
                return
            raise PortTaken(
                f"node port {port}/{protocol} is already published by pod {holder}"
            ) from None
        with os.fdopen(fd, "w") as file:
            file.write(uuid + "\n")

    def release(self, uuid: str) -> list[str]:
        freed = []
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(self.directory):
                path = self.directory / name
                with contextlib.suppress(FileNotFoundError):
                    if path.read_text().strip() == uuid:
                        path.unlink()
                        freed.append(name)
        return freed
