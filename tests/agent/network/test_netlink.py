"""The netlink adapter on a real kernel: scratch network namespaces as machines (root).

Each test makes its own namespaces and removes them, with every link and route inside."""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network

import pytest
from pyroute2 import IPRoute

from agent.network.executor import NetworkTaskFailed, apply_network_tasks
from agent.network.netlink import NetlinkKernel
from agent.network.plan import AddRoute, Route, desired_network, plan_changes, vtep_mac
from devtools.netns import Namespaces, fetch_tcp, serve_tcp
from fleetd.core.network import NetworkConfig, SubnetLease, parse_network_config

VXLAN = parse_network_config('{"Network": "10.244.0.0/16"}')
HOST_GW = parse_network_config('{"Network": "10.244.0.0/16", "Backend": {"Type": "host-gw"}}')
NETWORK = IPv4Network("10.244.0.0/16")


@pytest.fixture
def namespaces() -> Iterator[Namespaces]:
    made = Namespaces()
    try:
        yield made
    finally:
        made.cleanup()


def lease(n: int, kind: str) -> SubnetLease:
    subnet = IPv4Network(f"10.244.{n}.0/24")
    ip = IPv4Address(f"192.168.77.{n}")
    if kind == "vxlan":
        return SubnetLease(subnet, ip, "vxlan", 1, vtep_mac(f"machine{n}"))
    return SubnetLease(subnet, ip, kind)


def converge(
    kernel: NetlinkKernel, config: NetworkConfig, own: SubnetLease, all_leases: list[SubnetLease]
) -> None:
    desired = desired_network(config, own, all_leases)
    observed = kernel.observe(NETWORK, "flannel.1")
    apply_network_tasks(kernel, plan_changes(observed, desired))
    assert plan_changes(kernel.observe(NETWORK, "flannel.1"), desired) == []


def give_pod_address(name: str, n: int) -> None:
    """A stand-in for the pod bridge: 10.244.<n>.1 on this machine's loopback."""
    with IPRoute(netns=name) as ipr:
        ipr.addr(
            "add", index=ipr.link_lookup(ifname="lo")[0], address=f"10.244.{n}.1", prefixlen=32
        )


@pytest.mark.parametrize("kind", ["vxlan", "host-gw"])
def test_two_machines_reach_each_others_subnets(namespaces: Namespaces, kind: str) -> None:
    config = VXLAN if kind == "vxlan" else HOST_GW
    one, two = namespaces.create("one"), namespaces.create("two")
    namespaces.link(one, "192.168.77.1/24", two, "192.168.77.2/24")
    leases = [lease(1, kind), lease(2, kind)]
    for name, own in ((one, leases[0]), (two, leases[1])):
        converge(NetlinkKernel(name), config, own, leases)
    give_pod_address(one, 1)
    give_pod_address(two, 2)
    with serve_tcp(two, "10.244.2.1", 8080):
        answer = fetch_tcp(one, "10.244.2.1", 8080, "ping")
    # vxlan: the source is machine one's VTEP address; host-gw: its address on the segment
    source = "10.244.1.0" if kind == "vxlan" else "192.168.77.1"
    assert answer == f"hello ping from {source}"


def test_a_machine_that_leaves_takes_its_entries_with_it(namespaces: Namespaces) -> None:
    one, two = namespaces.create("one"), namespaces.create("two")
    namespaces.link(one, "192.168.77.1/24", two, "192.168.77.2/24")
    kernel = NetlinkKernel(one)
    leases = [lease(n, "vxlan") for n in (1, 2, 3)]
    converge(kernel, VXLAN, leases[0], leases)
    observed = kernel.observe(NETWORK, "flannel.1")
    assert observed.vxlan is not None
    assert observed.vxlan.mac == vtep_mac("machine1")
    assert {r.dst for r in observed.routes} == {leases[1].subnet, leases[2].subnet}
    assert len(observed.neighbours) == len(observed.fdb) == 2
    converge(kernel, VXLAN, leases[0], leases[:2])
    observed = kernel.observe(NETWORK, "flannel.1")
    assert {r.dst for r in observed.routes} == {leases[1].subnet}
    assert {f.dst for f in observed.fdb} == {IPv4Address("192.168.77.2")}
    assert {n.address for n in observed.neighbours} == {IPv4Address("10.244.2.0")}


def test_switching_backend_removes_the_vxlan_device(namespaces: Namespaces) -> None:
    one, two = namespaces.create("one"), namespaces.create("two")
    namespaces.link(one, "192.168.77.1/24", two, "192.168.77.2/24")
    kernel = NetlinkKernel(one)
    converge(kernel, VXLAN, lease(1, "vxlan"), [lease(1, "vxlan"), lease(2, "vxlan")])
    converge(kernel, HOST_GW, lease(1, "host-gw"), [lease(1, "host-gw"), lease(2, "host-gw")])
    with IPRoute(netns=one) as ipr:
        assert ipr.link_lookup(ifname="flannel.1") == []
    observed = kernel.observe(NETWORK, "flannel.1")
    assert observed.routes == {Route(IPv4Network("10.244.2.0/24"), IPv4Address("192.168.77.2"))}


def test_routes_the_agent_did_not_make_are_left_alone(namespaces: Namespaces) -> None:
    one, two = namespaces.create("one"), namespaces.create("two")
    namespaces.link(one, "192.168.77.1/24", two, "192.168.77.2/24")
    with IPRoute(netns=one) as ipr:  # an operator's route into the cluster network
        ipr.route("add", dst="10.244.9.0/24", gateway="192.168.77.9")
    kernel = NetlinkKernel(one)
    converge(kernel, HOST_GW, lease(1, "host-gw"), [lease(1, "host-gw")])
    with IPRoute(netns=one) as ipr:
        assert [r.get("dst") for r in ipr.get_routes(family=2, dst="10.244.9.0/24")] == [
            "10.244.9.0"
        ]


def test_a_refused_route_is_an_error_naming_the_task(namespaces: Namespaces) -> None:
    one = namespaces.create("one")
    kernel = NetlinkKernel(one)
    unreachable = Route(IPv4Network("10.244.5.0/24"), IPv4Address("192.168.99.5"))
    with pytest.raises(NetworkTaskFailed, match=r"route 10\.244\.5\.0/24 via 192\.168\.99\.5"):
        apply_network_tasks(kernel, [AddRoute(unreachable)])
    assert kernel.observe(NETWORK, None).routes == frozenset()
