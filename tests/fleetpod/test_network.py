"""Pods on the cluster network, on a real kernel: scratch namespaces stand for two nodes (root),
each with the agent's routes (vxlan or host-gw) and a pod connected by `fleetpod.network`; a pod
on one node reaches the pod on the other by its address, without NAT."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

import pytest
from pyroute2 import IPRoute, netns

from agent.network.executor import apply_network_tasks
from agent.network.netlink import NetlinkKernel
from agent.network.plan import desired_network, plan_changes, vtep_mac
from devtools.netns import Namespaces, fetch_tcp, in_netns, serve_tcp
from fleetd.core.container import PortMapping
from fleetd.core.network import SubnetLease, parse_network_config
from fleetpod.errors import PodError
from fleetpod.ipam import NodeNetwork, PortTaken
from fleetpod.network import (
    BRIDGE,
    connect_pod,
    disconnect_pod,
    host_veth_name,
    netns_name,
    publish_ports,
    unpublish_ports,
)

NETWORK = IPv4Network("10.244.0.0/16")


@pytest.fixture
def namespaces() -> Iterator[Namespaces]:
    made = Namespaces()
    try:
        yield made
    finally:
        made.cleanup()


@pytest.fixture
def pods() -> Iterator[list[str]]:
    """Pod UUIDs whose namespaces the test may leave behind; all removed afterwards."""
    made: list[str] = []
    try:
        yield made
    finally:
        for pod in made:
            if netns_name(pod) in netns.listnetns():
                netns.remove(netns_name(pod))


def forwarding_on(name: str) -> None:
    subprocess.run(in_netns(name, "sysctl", "-qw", "net.ipv4.ip_forward=1"), check=True)


@pytest.mark.parametrize("kind", ["vxlan", "host-gw"])
def test_a_pod_reaches_a_pod_on_another_node(
    namespaces: Namespaces, pods: list[str], kind: str
) -> None:
    config = parse_network_config(
        json.dumps({"Network": "10.244.0.0/16", "Backend": {"Type": kind}})
    )
    one, two = namespaces.create("node1"), namespaces.create("node2")
    namespaces.link(one, "192.168.77.1/24", two, "192.168.77.2/24")
    leases = [
        SubnetLease(
            IPv4Network(f"10.244.{n}.0/24"),
            IPv4Address(f"192.168.77.{n}"),
            kind,
            *((1, vtep_mac(f"m{n}")) if kind == "vxlan" else ()),
        )
        for n in (1, 2)
    ]
    addresses = []
    for n, (node, own) in enumerate(((one, leases[0]), (two, leases[1])), start=1):
        forwarding_on(node)
        kernel = NetlinkKernel(node)
        kernel.masquerade(NETWORK)  # only what leaves the network: not this pod-to-pod traffic
        desired = desired_network(config, own, leases)
        apply_network_tasks(kernel, plan_changes(kernel.observe(NETWORK, "flannel.1"), desired))
        view = NodeNetwork(NETWORK, IPv4Interface(f"10.244.{n}.1/24"), config.backend.mtu(1500))
        pod = str(uuid.uuid4())
        pods.append(pod)
        address = IPv4Interface(f"10.244.{n}.2/24")
        connect_pod(view, pod, address, host_netns=node)
        addresses.append((netns_name(pod), address))
    (client, client_address), (server, server_address) = addresses
    with serve_tcp(server, str(server_address.ip), 8080):
        answer = fetch_tcp(client, str(server_address.ip), 8080, "ping")
    assert answer == f"hello ping from {client_address.ip}"  # the pod's own address: no NAT
    with IPRoute(netns=client) as ipr:
        (eth0,) = ipr.get_links(ifname="eth0")
        assert eth0.get("mtu") == (1450 if kind == "vxlan" else 1500)


def test_only_traffic_leaving_the_cluster_network_is_masqueraded(
    namespaces: Namespaces, pods: list[str]
) -> None:
    node, outside = namespaces.create("node"), namespaces.create("outside")
    namespaces.link(node, "192.168.77.1/24", outside, "192.168.77.9/24")
    forwarding_on(node)
    NetlinkKernel(node).masquerade(NETWORK)
    NetlinkKernel(node).masquerade(NETWORK)  # again: still one rule
    pod = str(uuid.uuid4())
    pods.append(pod)
    view = NodeNetwork(NETWORK, IPv4Interface("10.244.1.1/24"), 1450)
    connect_pod(view, pod, IPv4Interface("10.244.1.2/24"), host_netns=node)
    with serve_tcp(outside, "192.168.77.9", 8080):
        answer = fetch_tcp(netns_name(pod), "192.168.77.9", 8080, "out")
    assert answer == "hello out from 192.168.77.1"  # the node's address
    script = (
        "from pyroute2.nftables.main import NFTables\n"
        "nft = NFTables(nfgen_family=2)\n"
        "print(sum(r.get('NFTA_RULE_TABLE') == 'pyfleet' for r in nft.get_rules()))\n"
    )
    rules = subprocess.run(
        in_netns(node, sys.executable, "-c", script), capture_output=True, text=True, check=True
    )
    assert rules.stdout.strip() == "1"


def test_a_failed_connection_leaves_nothing(namespaces: Namespaces, pods: list[str]) -> None:
    node = namespaces.create("node")
    pod = str(uuid.uuid4())
    pods.append(pod)
    bad_mtu = NodeNetwork(NETWORK, IPv4Interface("10.244.1.1/24"), 10)  # below IPv4's minimum
    with pytest.raises(PodError, match=f"cannot connect pod {pod} to the cluster network"):
        connect_pod(bad_mtu, pod, IPv4Interface("10.244.1.2/24"), host_netns=node)
    assert netns_name(pod) not in netns.listnetns()
    with IPRoute(netns=node) as ipr:
        assert ipr.link_lookup(ifname=host_veth_name(pod)) == []


def test_disconnect_removes_the_namespace_and_the_link(
    namespaces: Namespaces, pods: list[str]
) -> None:
    node = namespaces.create("node")
    pod = str(uuid.uuid4())
    pods.append(pod)
    view = NodeNetwork(NETWORK, IPv4Interface("10.244.1.1/24"), 1450)
    path = connect_pod(view, pod, IPv4Interface("10.244.1.2/24"), host_netns=node)
    assert path == Path("/run/netns") / netns_name(pod)
    with IPRoute(netns=node) as ipr:
        (veth,) = ipr.get_links(ifname=host_veth_name(pod))
        assert veth.get("master") == ipr.link_lookup(ifname=BRIDGE)[0]
    disconnect_pod(pod, host_netns=node)
    disconnect_pod(pod, host_netns=node)  # idempotent
    assert netns_name(pod) not in netns.listnetns()
    with IPRoute(netns=node) as ipr:
        assert ipr.link_lookup(ifname=host_veth_name(pod)) == []


def test_a_published_port_reaches_the_pod_through_the_nodes_address(
    namespaces: Namespaces, pods: list[str]
) -> None:
    node, outside = namespaces.create("node"), namespaces.create("outside")
    namespaces.link(node, "192.168.77.1/24", outside, "192.168.77.9/24")
    forwarding_on(node)
    pod = str(uuid.uuid4())
    pods.append(pod)
    view = NodeNetwork(NETWORK, IPv4Interface("10.244.1.1/24"), 1450)
    connect_pod(view, pod, IPv4Interface("10.244.1.2/24"), host_netns=node)
    mapping = PortMapping(8080, 80, "tcp")
    node_ip, pod_ip = IPv4Address("192.168.77.1"), IPv4Address("10.244.1.2")
    publish_ports(pod, node_ip, pod_ip, [mapping], host_netns=node)
    with serve_tcp(netns_name(pod), "10.244.1.2", 80):
        assert fetch_tcp(outside, "192.168.77.1", 8080, "in") == "hello in from 192.168.77.9"
    with serve_tcp(netns_name(pod), "10.244.1.2", 80):  # from the node itself
        assert fetch_tcp(node, "192.168.77.1", 8080, "local") == "hello local from 192.168.77.1"
    unpublish_ports(pod, host_netns=node)
    unpublish_ports(pod, host_netns=node)  # idempotent
    with serve_tcp(netns_name(pod), "10.244.1.2", 80), pytest.raises(ConnectionError):
        fetch_tcp(outside, "192.168.77.1", 8080, "gone")


def test_a_port_taken_on_the_node_is_refused_and_nothing_is_left(
    namespaces: Namespaces, pods: list[str]
) -> None:
    node = namespaces.create("node")
    pod = str(uuid.uuid4())
    pods.append(pod)
    node_ip, pod_ip = IPv4Address("192.168.77.1"), IPv4Address("10.244.1.2")
    taken = pytest.raises(PortTaken, match=r"node port 8080/tcp is taken on this node")
    with serve_tcp(node, "0.0.0.0", 8080), taken:  # something on the node listens on 8080
        publish_ports(pod, node_ip, pod_ip, [PortMapping(8080, 80)], host_netns=node)
    script = (
        "from pyroute2.nftables.main import NFTables\n"
        "print([t.get('NFTA_TABLE_NAME') for t in NFTables(nfgen_family=2).get_tables()])\n"
    )
    tables = subprocess.run(
        in_netns(node, sys.executable, "-c", script), capture_output=True, text=True, check=True
    )
    assert tables.stdout.strip() == "[]"
