"""The agent's network part: this machine's subnet lease and its routes to the other machines.

`NetworkAgent.run()` runs three parts in one task group:

* a watch on `network/config`: each value is checked (`parse_network_config`); a bad one is
  logged with the field named and the last good configuration stays in force, so a typo never
  takes a running cluster's network down. A deleted configuration also keeps the last one (the
  pods that run keep their addresses); only a machine that never saw one has no network.
* a watch on `network/subnets/`: every machine's lease, as flannel writes it;
* a `ReconcileLoop` pass on every change and on a slow safety tick:
  1. lease: when the configuration, the machine's etcd lease or the stored record no longer
     match what this machine holds, take a subnet with the `SubnetKeeper` (the remembered one
     first, flannel's `subnet.env`; the one already on this machine's etcd lease after a restart
     within the TTL); a subnet key of ours outside the configured range is deleted first;
  2. masquerade (once per network): pods' traffic that leaves the cluster network is NATed to
     the node's address, nothing else (one nftables rule, `agent.network.netlink`);
  3. routes: snapshot the kernel (`NetworkKernel.observe`), plan (`desired_network`,
     `plan_changes`), apply (`apply_network_tasks`), all in a worker thread (netlink blocks).

A full network (`NetworkFull`) is logged as an error on every pass and retried with backoff: a
machine may free a subnet. Nothing here stops a unit: when etcd is away, the routes stay as the
last pass left them.
"""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Address, IPv4Network, ip_address
from pathlib import Path

import structlog

from agent.heart import Heart
from agent.network.executor import NetworkKernel, apply_network_tasks
from agent.network.plan import desired_network, plan_changes, vtep_mac, vxlan_device_name
from agent.network.subnet import SUBNET_FILE, Acquired, SubnetKeeper
from fleetd.core.model import Machine
from fleetd.core.network import (
    NetworkConfig,
    NetworkConfigError,
    SubnetLease,
    decode_subnet_lease,
    parse_network_config,
    parse_subnet_key_name,
    subnet_key_name,
)
from fleetd.registry.client import EtcdClient, KeyValue
from fleetd.registry.keys import Keys
from fleetd.registry.watch import Changes, PrefixWatcher, Snapshot
from fleetd.runtime.loop import ReconcileLoop

log = structlog.get_logger(__name__)

RECONCILE_INTERVAL = 30.0


class NetworkAgent:
    """One machine's part of the container network; see the module docstring."""

    def __init__(
        self,
        client: EtcdClient,
        keys: Keys,
        machine: Machine,
        heart: Heart,
        kernel: NetworkKernel,
        *,
        subnet_file: Path = SUBNET_FILE,
        link_mtu: int | None = None,
        reconcile_interval: float = RECONCILE_INTERVAL,
        forwarding_file: Path | None = None,
    ) -> None:
        self._client = client
        self._keys = keys
        self._machine = machine
        self._heart = heart
        self._kernel = kernel
        self._subnet_file = subnet_file
        self._link_mtu = link_mtu
        self.config: NetworkConfig | None = None  # the last good configuration
        self.config_error: str | None = None  # why the stored configuration was refused
        self.leases: dict[str, SubnetLease] = {}  # by key name, as the watch saw them
        self._lease_keys: dict[str, int] = {}  # key name -> etcd lease id
        self.acquired: Acquired | None = None
        self._acquired_on: int | None = None  # the etcd lease the subnet key rides on
        self._subnet_lost = False  # the watch saw our subnet key deleted or taken over
        self.error: str | None = None  # why the last pass failed (NetworkFull, ...)
        self.loop = ReconcileLoop("network", self._pass, interval=reconcile_interval)
        self._forwarding_file = forwarding_file
        self._masqueraded: IPv4Network | None = None  # the network the NAT rule covers

    @property
    def public_ip(self) -> IPv4Address:
        address = ip_address(self._machine.primary_ip)
        if not isinstance(address, IPv4Address):
            raise ValueError(f"public IP {address} is not IPv4")
        return address

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._watch_config(), name="network:config")
            group.create_task(self._watch_subnets(), name="network:subnets")
            group.create_task(self._follow_heart(), name="network:lease")
            group.create_task(self.loop.run(), name="network:reconcile")

    # ---- inputs

    async def _watch_config(self) -> None:
        key = self._keys.network_config
        async for batch in PrefixWatcher(self._client, key):
            match batch:
                case Snapshot(_, kvs):
                    for kv in kvs:
                        if kv.key == key:
                            self._take_config(kv.value)
                case Changes(_, events):
                    for event in events:
                        if event.kv.key != key:
                            continue
                        if event.kind == "put":
                            self._take_config(event.kv.value)
                        else:
                            log.warning("network config deleted, keeping the last one")

    def _take_config(self, value: bytes) -> None:
        try:
            config = parse_network_config(value)
        except NetworkConfigError as exc:
            self.config_error = str(exc)
            log.error("refusing the network config, keeping the last good one", error=str(exc))
            return
        self.config_error = None
        if config != self.config:
            log.info("network config", config=config.as_json())
            self.config = config
            self.loop.trigger()

    async def _watch_subnets(self) -> None:
        prefix = self._keys.subnets
        async for batch in PrefixWatcher(self._client, prefix):
            match batch:
                case Snapshot(_, kvs):
                    self.leases, self._lease_keys = {}, {}
                    for kv in kvs:
                        self._take_lease(kv)
                case Changes(_, events):
                    for event in events:
                        name = event.kv.key.removeprefix(prefix)
                        if event.kind == "put":
                            self._take_lease(event.kv)
                        else:
                            self.leases.pop(name, None)
                            self._lease_keys.pop(name, None)
                        self._check_own(name)
            self.loop.trigger()

    def _check_own(self, name: str) -> None:
        """Note when the key of the subnet this machine holds is gone or no longer ours."""
        held = self.acquired
        if held is None or name != subnet_key_name(held.lease.subnet):
            return
        if self._lease_keys.get(name) != self._acquired_on or self.leases.get(name) != held.lease:
            log.warning("this machine's subnet key changed under it, leasing again", key=name)
            self._subnet_lost = True

    def _take_lease(self, kv: KeyValue) -> None:
        name = kv.key.removeprefix(self._keys.subnets)
        try:
            self.leases[name] = decode_subnet_lease(name, kv.value)
            self._lease_keys[name] = kv.lease
        except ValueError as exc:
            log.warning("ignoring a malformed subnet lease", key=kv.key, error=str(exc))

    async def _follow_heart(self) -> None:
        while True:
            lease = await self._heart.wait_lease()
            if lease.id != self._acquired_on:
                self.loop.trigger()
            await lease.wait_lost()

    # ---- one pass

    async def _pass(self) -> None:
        config = self.config
        if config is None:
            return
        try:
            acquired = await self._lease(config)
        except Exception as exc:
            self.error = str(exc)
            log.error("no subnet for this machine", error=str(exc))
            raise
        self.error = None
        own = acquired.lease
        leases = [lease for lease in self.leases.values() if lease.subnet != own.subnet]
        await asyncio.to_thread(self._converge, config, own, leases)

    def _converge(self, config: NetworkConfig, own: SubnetLease, others: list[SubnetLease]) -> None:
        if self._forwarding_file is not None:
            enable_forwarding(self._forwarding_file)
        desired = desired_network(config, own, [own, *others], self._mtu())
        for reason in desired.skipped:
            log.info("subnet lease not routed", reason=reason)
        if self._masqueraded != config.network:
            self._kernel.masquerade(config.network)
            self._masqueraded = config.network
            log.info(
                "masquerading traffic that leaves the cluster network", network=str(config.network)
            )
        observed = self._kernel.observe(config.network, vxlan_device_name(config.backend.vni))
        tasks = plan_changes(observed, desired)
        if tasks:
            apply_network_tasks(self._kernel, tasks)

    def _mtu(self) -> int:
        if self._link_mtu is None:
            link_mtu = getattr(self._kernel, "link_mtu", None)
            self._link_mtu = link_mtu(self.public_ip) if link_mtu is not None else 1500
        return self._link_mtu

    async def _lease(self, config: NetworkConfig) -> Acquired:
        """This machine's lease under `config`, taken again when anything it rests on changed."""
        lease = await self._heart.wait_lease()
        held = self.acquired
        if (
            held is not None
            and self._acquired_on == lease.id
            and held.config == config
            and not self._subnet_lost
        ):
            return held
        self._subnet_lost = False
        await self._drop_out_of_range(config, lease.id)
        mtu = await asyncio.to_thread(self._mtu)
        keeper = SubnetKeeper(
            self._client,
            self._keys,
            self._machine.id,
            self.public_ip,
            vtep_mac=vtep_mac(self._machine.id),
            subnet_file=self._subnet_file,
            link_mtu=mtu,
        )
        acquired = await keeper.acquire(lease.id, config)
        self.acquired, self._acquired_on = acquired, lease.id
        return acquired

    async def _drop_out_of_range(self, config: NetworkConfig, lease_id: int) -> None:
        """Delete this machine's subnet keys the configuration no longer covers."""
        for name, on in list(self._lease_keys.items()):
            if on != lease_id:
                continue
            try:
                subnet = parse_subnet_key_name(name)
            except ValueError:
                continue
            if not config.in_range(subnet):
                log.info("releasing a subnet outside the network", subnet=str(subnet))
                await self._client.delete(self._keys.subnet(name))


def enable_forwarding(path: Path) -> None:
    """Turn IPv4 forwarding on (pods' packets cross from the bridge to the other machines);
    a read-only /proc/sys (a container) that already has it on is fine."""
    if path.read_text().strip() == "1":
        return
    try:
        path.write_text("1\n")
    except OSError as exc:
        raise OSError(exc.errno, f"cannot turn IPv4 forwarding on ({path}): {exc}") from None
