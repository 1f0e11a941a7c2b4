"""The route planner: flannel's vxlan and host-gw layouts from leases, and the changes between
what the kernel holds and what it should."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from agent.network.plan import (
    AddFdb,
    AddNeighbour,
    AddRoute,
    DeleteFdb,
    DeleteLink,
    DeleteNeighbour,
    DeleteRoute,
    EnsureVxlan,
    FdbEntry,
    Neighbour,
    Observed,
    Route,
    desired_network,
    plan_changes,
)
from fleetd.core.network import SubnetLease, parse_network_config

VXLAN = parse_network_config('{"Network": "10.244.0.0/16"}')
HOST_GW = parse_network_config('{"Network": "10.244.0.0/16", "Backend": {"Type": "host-gw"}}')


def lease(n: int, kind: str = "vxlan", vni: int = 1) -> SubnetLease:
    subnet = IPv4Network(f"10.244.{n}.0/24")
    ip = IPv4Address(f"192.168.0.{n}")
    if kind == "vxlan":
        return SubnetLease(subnet, ip, "vxlan", vni, f"aa:00:00:00:00:{n:02x}")
    return SubnetLease(subnet, ip, kind)


def test_vxlan_routes_neighbours_and_fdb_for_every_other_machine() -> None:
    desired = desired_network(VXLAN, lease(1), [lease(1), lease(2), lease(3)])
    assert desired.vxlan is not None
    assert desired.vxlan.name == "flannel.1"
    assert desired.vxlan.address == IPv4Interface("10.244.1.0/32")
    assert desired.vxlan.local == IPv4Address("192.168.0.1")
    assert desired.vxlan.mtu == 1450
    assert desired.routes == {
        Route(IPv4Network("10.244.2.0/24"), IPv4Address("10.244.2.0"), "flannel.1", onlink=True),
        Route(IPv4Network("10.244.3.0/24"), IPv4Address("10.244.3.0"), "flannel.1", onlink=True),
    }
    assert Neighbour(IPv4Address("10.244.2.0"), "aa:00:00:00:00:02", "flannel.1") in (
        desired.neighbours
    )
    assert FdbEntry("aa:00:00:00:00:03", IPv4Address("192.168.0.3"), "flannel.1") in desired.fdb
    assert len(desired.neighbours) == len(desired.fdb) == 2
    assert desired.skipped == ()


def test_host_gw_routes_via_public_ips() -> None:
    desired = desired_network(HOST_GW, lease(1, "host-gw"), [lease(2, "host-gw")])
    assert desired.vxlan is None
    assert desired.routes == {Route(IPv4Network("10.244.2.0/24"), IPv4Address("192.168.0.2"))}
    assert desired.neighbours == frozenset()
    assert desired.fdb == frozenset()


def test_leases_that_cannot_be_reached_are_skipped_and_named() -> None:
    foreign = SubnetLease(
        IPv4Network("10.9.0.0/24"), IPv4Address("192.168.0.9"), "vxlan", 1, "aa:00:00:00:00:09"
    )
    same_ip = SubnetLease(
        IPv4Network("10.244.7.0/24"), IPv4Address("192.168.0.1"), "vxlan", 1, "aa:00:00:00:00:07"
    )
    desired = desired_network(
        VXLAN, lease(1), [lease(2, "host-gw"), lease(3, vni=2), foreign, same_ip, lease(4)]
    )
    assert {r.dst for r in desired.routes} == {IPv4Network("10.244.4.0/24")}
    assert len(desired.skipped) == 4
    assert any("backend host-gw" in s for s in desired.skipped)
    assert any("VNI 2" in s for s in desired.skipped)
    assert any("outside network" in s for s in desired.skipped)


def test_from_nothing_the_device_comes_before_its_entries() -> None:
    desired = desired_network(VXLAN, lease(1), [lease(2)])
    tasks = plan_changes(Observed(), desired)
    assert [type(t) for t in tasks] == [EnsureVxlan, AddFdb, AddNeighbour, AddRoute]
    assert (
        plan_changes(
            Observed(desired.vxlan, desired.routes, desired.neighbours, desired.fdb), desired
        )
        == []
    )


def test_a_machine_gone_removes_its_entries_only() -> None:
    before = desired_network(VXLAN, lease(1), [lease(2), lease(3)])
    after = desired_network(VXLAN, lease(1), [lease(2)])
    tasks = plan_changes(
        Observed(before.vxlan, before.routes, before.neighbours, before.fdb), after
    )
    gone = lease(3)
    assert tasks == [
        DeleteRoute(Route(gone.subnet, gone.subnet.network_address, "flannel.1", onlink=True)),
        DeleteNeighbour(Neighbour(gone.subnet.network_address, "aa:00:00:00:00:03", "flannel.1")),
        DeleteFdb(FdbEntry("aa:00:00:00:00:03", gone.public_ip, "flannel.1")),
    ]


def test_switching_to_host_gw_deletes_the_device_and_its_routes_first() -> None:
    before = desired_network(VXLAN, lease(1), [lease(2)])
    after = desired_network(HOST_GW, lease(1, "host-gw"), [lease(2, "host-gw")])
    tasks = plan_changes(
        Observed(before.vxlan, before.routes, before.neighbours, before.fdb), after
    )
    assert tasks == [
        DeleteLink("flannel.1"),
        AddRoute(Route(IPv4Network("10.244.2.0/24"), IPv4Address("192.168.0.2"))),
    ]


def test_a_changed_device_is_ensured_again() -> None:
    desired = desired_network(VXLAN, lease(1), [])
    assert desired.vxlan is not None
    stale = desired_network(VXLAN, lease(1), [], link_mtu=9000).vxlan
    assert plan_changes(Observed(stale), desired) == [EnsureVxlan(desired.vxlan)]
