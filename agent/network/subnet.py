"""This machine's subnet lease: `network/subnets/<a.b.c.d-len>` on the machine's own etcd lease.

`SubnetKeeper.acquire(lease_id)` reads the configuration (`network/config`) and the leases
already taken, picks a subnet with `choose_subnet` (the one remembered in the local subnet file
first, flannel's `subnet.env`, if it is still free) and creates its key with a transaction that
holds only if the key is still absent, so machines starting together never share a subnet: the
loser reads again and picks another. A key already on this machine's own etcd lease (a fleetd
restarted within the TTL re-attaches the machine lease) is taken back as it is. The lease key
rides on the machine lease, so it is renewed while the machine lives and freed when it dies.

The subnet file holds flannel's variables (`FLANNEL_NETWORK`, `FLANNEL_SUBNET` as the bridge's
address with the subnet's length, `FLANNEL_MTU`, `FLANNEL_IPMASQ`); it is written atomically.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

import structlog

from fleetd.core.network import (
    NetworkConfig,
    SubnetLease,
    choose_subnet,
    decode_subnet_lease,
    parse_network_config,
    parse_subnet_key_name,
    subnet_key_name,
)
from fleetd.registry.client import Compare, EtcdClient, Put
from fleetd.registry.keys import Keys

log = structlog.get_logger(__name__)

SUBNET_FILE = Path("/run/fleet/subnet.env")
MAX_ATTEMPTS = 64  # lost create races before giving up (each loss means another machine won)


class NoNetworkConfig(LookupError):
    """`network/config` is not set: the cluster has no container network."""


@dataclass(frozen=True, slots=True)
class Acquired:
    """The outcome of `acquire`: the configuration used and this machine's lease."""

    config: NetworkConfig
    lease: SubnetLease
    reclaimed: bool  # the key was already on this machine's etcd lease


def read_subnet_file(path: Path) -> IPv4Network | None:
    """The subnet remembered in `path` (`FLANNEL_SUBNET=10.244.3.1/24`), or None."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip() == "FLANNEL_SUBNET":
            try:
                return IPv4Interface(value.strip()).network
            except ValueError:
                log.warning("ignoring a malformed subnet file", path=str(path), line=line)
                return None
    return None


def write_subnet_file(
    path: Path,
    config: NetworkConfig,
    subnet: IPv4Network,
    mtu: int,
    public_ip: IPv4Address | None = None,
) -> None:
    """Write flannel's subnet.env for `subnet` atomically (a temporary file, then a rename);
    pyfleet adds `FLEET_PUBLIC_IP`, the node address pods' ports are published on."""
    gateway = IPv4Interface((subnet.network_address + 1, subnet.prefixlen))
    text = (
        f"FLANNEL_NETWORK={config.network}\n"
        f"FLANNEL_SUBNET={gateway}\n"
        f"FLANNEL_MTU={mtu}\n"
        "FLANNEL_IPMASQ=true\n"
    )
    if public_ip is not None:
        text += f"FLEET_PUBLIC_IP={public_ip}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.tmp")
    scratch.write_text(text)
    os.replace(scratch, path)


class SubnetKeeper:
    """Leases this machine's subnet; see the module docstring."""

    def __init__(
        self,
        client: EtcdClient,
        keys: Keys,
        machine_id: str,
        public_ip: IPv4Address,
        *,
        vtep_mac: str | None = None,
        subnet_file: Path = SUBNET_FILE,
        link_mtu: int = 1500,
    ) -> None:
        self._client = client
        self._keys = keys
        self._machine_id = machine_id
        self._public_ip = public_ip
        self._vtep_mac = vtep_mac
        self._subnet_file = subnet_file
        self._link_mtu = link_mtu

    async def read_config(self) -> NetworkConfig:
        """The cluster's configuration; NoNetworkConfig when unset; NetworkConfigError
        (naming the field) when bad."""
        kv = await self._client.get(self._keys.network_config)
        if kv is None:
            raise NoNetworkConfig(f"no network configuration at {self._keys.network_config}")
        return parse_network_config(kv.value)

    def _record(self, config: NetworkConfig, subnet: IPv4Network) -> SubnetLease:
        backend = config.backend
        if backend.type == "vxlan":
            if self._vtep_mac is None:
                raise ValueError("a vxlan subnet lease needs the VTEP's MAC address")
            return SubnetLease(subnet, self._public_ip, "vxlan", backend.vni, self._vtep_mac)
        return SubnetLease(subnet, self._public_ip, backend.type)

    async def acquire(self, lease_id: int, config: NetworkConfig | None = None) -> Acquired:
        """Lease a subnet on etcd lease `lease_id` under `config` (by default the stored one);
        NetworkFull when none is free."""
        if config is None:
            config = await self.read_config()
        remembered = read_subnet_file(self._subnet_file)
        for _ in range(MAX_ATTEMPTS):
            kvs, _ = await self._client.get_prefix(self._keys.subnets)
            taken: set[IPv4Network] = set()
            ours = None
            for kv in kvs:
                try:
                    subnet = parse_subnet_key_name(kv.key.removeprefix(self._keys.subnets))
                except ValueError:
                    continue
                taken.add(subnet)
                if kv.lease == lease_id and config.in_range(subnet):
                    ours = (subnet, kv)
            if ours is not None:
                subnet, kv = ours
                record = self._record(config, subnet)
                if kv.value != record.encode():
                    await self._client.put(kv.key, record.encode(), lease=lease_id)
                return self._done(config, record, reclaimed=True)
            subnet = choose_subnet(config, taken, self._machine_id, remembered)
            record = self._record(config, subnet)
            key = self._keys.subnet(subnet_key_name(subnet))
            result = await self._client.txn(
                [Compare.create_revision(key, "==", 0)],
                [Put(key, record.encode(), lease=lease_id)],
            )
            if result.succeeded:
                return self._done(config, record, reclaimed=False)
            log.info("subnet taken meanwhile, choosing again", subnet=str(subnet))
        raise RuntimeError(f"could not lease a subnet after {MAX_ATTEMPTS} lost races")

    def _done(self, config: NetworkConfig, record: SubnetLease, *, reclaimed: bool) -> Acquired:
        mtu = config.backend.mtu(self._link_mtu)
        write_subnet_file(self._subnet_file, config, record.subnet, mtu, self._public_ip)
        log.info(
            "subnet leased",
            subnet=str(record.subnet),
            machine=self._machine_id,
            reclaimed=reclaimed,
        )
        return Acquired(config, record, reclaimed)


async def list_subnet_leases(client: EtcdClient, keys: Keys) -> list[SubnetLease]:
    """Every well-formed subnet lease in etcd, in key order (malformed ones are logged)."""
    kvs, _ = await client.get_prefix(keys.subnets)
    leases = []
    for kv in kvs:
        name = kv.key.removeprefix(keys.subnets)
        try:
            leases.append(decode_subnet_lease(name, kv.value))
        except ValueError as exc:
            log.warning("ignoring a malformed subnet lease", key=kv.key, error=str(exc))
    return leases
