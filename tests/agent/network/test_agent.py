"""The agent's network part on a real etcd, with the fake kernel: a subnet per machine, routes
to the others as machines come and go, the last good configuration kept, the subnet taken back
after a restart."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from ipaddress import IPv4Network
from pathlib import Path
from typing import TypeVar

from agent.heart import Heart
from agent.network.agent import NetworkAgent
from agent.network.executor import FakeKernel
from agent.network.subnet import read_subnet_file
from fleetd.core.model import Machine
from fleetd.registry.client import EtcdClient
from fleetd.registry.keys import Keys
from tests.agent.helpers import background
from tests.engine.cluster import wait_until

NETWORK = IPv4Network("10.244.0.0/16")
T = TypeVar("T")


class Node:
    def __init__(self, etcd: EtcdClient, keys: Keys, tmp_path: Path, n: int) -> None:
        self.machine = Machine(f"{n:032x}", {}, f"192.168.50.{n}")
        self.heart = Heart(etcd, keys, self.machine, ttl=2)
        self.kernel = FakeKernel()
        self.subnet_file = tmp_path / f"node{n}" / "subnet.env"
        self.agent = NetworkAgent(
            etcd,
            keys,
            self.machine,
            self.heart,
            self.kernel,
            subnet_file=self.subnet_file,
            link_mtu=1500,
        )

    def subnet(self) -> IPv4Network | None:
        return None if self.agent.acquired is None else self.agent.acquired.lease.subnet

    def routed(self) -> set[IPv4Network]:
        return {r.dst for r in self.kernel.observe(NETWORK, "flannel.1").routes}


@asynccontextmanager
async def running(node: Node) -> AsyncIterator[Node]:
    async with background(node.heart.run()), background(node.agent.run()):
        yield node


async def configure(etcd: EtcdClient, keys: Keys, config: dict[str, object] | str) -> None:
    text = config if isinstance(config, str) else json.dumps(config)
    await etcd.put(keys.network_config, text.encode())


async def test_machines_route_to_each_other_and_forget_a_dead_one(
    etcd: EtcdClient, keys: Keys, tmp_path: Path
) -> None:
    await configure(etcd, keys, {"Network": "10.244.0.0/16"})
    nodes = [Node(etcd, keys, tmp_path, n) for n in (1, 2, 3)]
    async with AsyncExitStack() as stack:
        for node in nodes:
            await stack.enter_async_context(running(node))

        async def meshed() -> bool:
            subnets = [node.subnet() for node in nodes]
            return None not in subnets and all(
                node.routed() == {s for s in subnets if s != node.subnet()} for node in nodes
            )

        await wait_until(meshed, "every machine routing to the two others")
        assert len({node.subnet() for node in nodes}) == 3
        assert nodes[0].kernel.vxlan is not None
        dead = nodes[2]
        dead_subnet = dead.subnet()
        lease = dead.heart.lease
        assert lease is not None
        await stack.aclose()  # all stop; the dead machine's lease is revoked below
    async with running(nodes[0]), running(nodes[1]):
        await etcd.lease_revoke(lease.id)

        async def forgotten() -> bool:
            return all(dead_subnet not in node.routed() for node in nodes[:2]) and all(
                node.routed() == {nodes[1 - i].subnet()} for i, node in enumerate(nodes[:2])
            )

        await wait_until(forgotten, "the dead machine's route gone")


async def test_a_bad_config_is_refused_and_the_last_good_one_kept(
    etcd: EtcdClient, keys: Keys, tmp_path: Path
) -> None:
    await configure(etcd, keys, {"Network": "10.244.0.0/16", "Backend": {"Type": "host-gw"}})
    one, two = Node(etcd, keys, tmp_path, 1), Node(etcd, keys, tmp_path, 2)
    async with running(one), running(two):
        await wait_until(lambda: _async(bool(one.routed())), "one routing to two")
        before = one.routed()
        await configure(etcd, keys, {"Network": "10.244.0.0/16", "SubnetLen": 33})
        await wait_until(lambda: _async(one.agent.config_error), "the bad config refused")
        assert "SubnetLen" in (one.agent.config_error or "")
        assert one.agent.config is not None
        assert one.agent.config.backend.type == "host-gw"
        assert one.routed() == before
        # a good one again is taken up: the backend switches to vxlan
        await configure(etcd, keys, {"Network": "10.244.0.0/16"})
        await wait_until(lambda: _async(one.kernel.vxlan is not None), "vxlan in force")
        assert one.agent.config_error is None
        assert one.routed() == before


async def test_a_restarted_machine_takes_its_subnet_back(
    etcd: EtcdClient, keys: Keys, tmp_path: Path
) -> None:
    await configure(etcd, keys, {"Network": "10.244.0.0/16"})
    node = Node(etcd, keys, tmp_path, 1)
    async with running(node):
        await wait_until(lambda: _async(node.subnet()), "a subnet")
        first = node.subnet()
        lease = node.heart.lease
        assert lease is not None
    assert read_subnet_file(node.subnet_file) == first
    await etcd.lease_revoke(lease.id)  # gone for longer than the TTL: the key went with it
    again = Node(etcd, keys, tmp_path, 1)
    async with running(again):
        await wait_until(lambda: _async(again.subnet()), "a subnet after the restart")
        assert again.subnet() == first
        assert again.agent.acquired is not None
        assert not again.agent.acquired.reclaimed


async def test_a_full_network_is_a_clear_error(
    etcd: EtcdClient, keys: Keys, tmp_path: Path
) -> None:
    config: dict[str, object] = {
        "Network": "10.244.0.0/16",
        "SubnetMin": "10.244.1.0",
        "SubnetMax": "10.244.1.0",
    }
    await configure(etcd, keys, config)
    one, two = Node(etcd, keys, tmp_path, 1), Node(etcd, keys, tmp_path, 2)
    async with running(one):
        await wait_until(lambda: _async(one.subnet()), "one's subnet")
        async with running(two):
            await wait_until(lambda: _async(two.agent.error), "two's error")
            assert "is full" in (two.agent.error or "")
            assert two.subnet() is None


async def _async(value: T) -> T:
    return value


async def test_a_subnet_key_deleted_under_the_machine_is_leased_again(
    etcd: EtcdClient, keys: Keys, tmp_path: Path
) -> None:
    await configure(etcd, keys, {"Network": "10.244.0.0/16"})
    node = Node(etcd, keys, tmp_path, 1)
    async with running(node):
        await wait_until(lambda: _async(node.subnet()), "a subnet")
        subnet = node.subnet()
        assert subnet is not None
        key = keys.subnet(f"{subnet.network_address}-{subnet.prefixlen}")
        await etcd.delete(key)

        async def back() -> bool:
            kv = await etcd.get(key)
            return (
                kv is not None
                and node.heart.lease is not None
                and (kv.lease == node.heart.lease.id)
            )

        await wait_until(back, "the subnet key written again on the machine's lease")
        assert node.subnet() == subnet  # remembered: the same subnet
