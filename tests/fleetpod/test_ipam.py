"""Pod addresses: the node's subnet from subnet.env, one address per pod, race-free files that
survive restarts, a clear error when the subnet is full."""

from __future__ import annotations

import threading
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

import pytest

from fleetpod.errors import PodError
from fleetpod.ipam import (
    AddressBook,
    AddressesExhausted,
    NodeNetwork,
    PortBook,
    PortTaken,
    parse_subnet_env,
)

NODE = NodeNetwork(IPv4Network("10.244.0.0/16"), IPv4Interface("10.244.3.1/24"), 1450)


def test_subnet_env_as_the_agent_writes_it() -> None:
    node = parse_subnet_env(
        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\n"
        "FLANNEL_IPMASQ=true\nFLEET_PUBLIC_IP=192.168.0.3\n"
    )
    assert node == replace(NODE, public_ip=IPv4Address("192.168.0.3"))
    assert node.subnet == IPv4Network("10.244.3.0/24")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("FLANNEL_SUBNET=10.244.3.1/24\n", "FLANNEL_NETWORK is missing"),
        ("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.9.3.1/24\n", "outside"),
        ("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=x\n", "subnet file"),
    ],
)
def test_a_bad_subnet_env_names_the_problem(text: str, problem: str) -> None:
    with pytest.raises(PodError, match=problem):
        parse_subnet_env(text)


def test_pods_get_different_addresses_and_keep_theirs(tmp_path: Path) -> None:
    book = AddressBook(tmp_path)
    first = book.allocate(NODE, "pod-a")
    second = book.allocate(NODE, "pod-b")
    assert first == IPv4Interface("10.244.3.2/24")  # .0 network, .1 the bridge
    assert second == IPv4Interface("10.244.3.3/24")
    assert AddressBook(tmp_path).allocate(NODE, "pod-a") == first  # a restart: the same one
    assert book.release("pod-a") == [IPv4Address("10.244.3.2")]
    assert book.allocate(NODE, "pod-c") == first  # freed, handed out again


def test_concurrent_allocations_never_share_an_address(tmp_path: Path) -> None:
    got: dict[str, IPv4Interface] = {}

    def take(uuid: str) -> None:
        got[uuid] = AddressBook(tmp_path).allocate(NODE, uuid)

    threads = [threading.Thread(target=take, args=(f"pod-{n}",)) for n in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(got.values())) == 40


def test_a_full_subnet_is_a_clear_error(tmp_path: Path) -> None:
    small = NodeNetwork(IPv4Network("10.244.0.0/16"), IPv4Interface("10.244.3.1/29"), 1450)
    book = AddressBook(tmp_path)
    for n in range(5):  # /29: 8 addresses, less network, bridge and broadcast
        book.allocate(small, f"pod-{n}")
    with pytest.raises(AddressesExhausted, match=r"no free address in 10\.244\.3\.0/29: all 5"):
        book.allocate(small, "one-too-many")
    assert book.address_of("one-too-many") is None


def test_a_node_port_is_published_by_one_pod_only(tmp_path: Path) -> None:
    ports = PortBook(tmp_path)
    ports.claim("pod-a", "tcp", 8080)
    ports.claim("pod-a", "tcp", 8080)  # its own again: fine
    ports.claim("pod-b", "udp", 8080)  # another protocol
    with pytest.raises(PortTaken, match="node port 8080/tcp is already published by pod pod-a"):
        ports.claim("pod-b", "tcp", 8080)
    assert ports.release("pod-a") == ["tcp-8080"]
    ports.claim("pod-b", "tcp", 8080)
