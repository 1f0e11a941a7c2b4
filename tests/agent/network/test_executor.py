"""The network executor: tasks applied in order, stopping at the first failure with the task
named, and planning again after applying leaves nothing to do (with the fake kernel)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.network.executor import FakeKernel, NetworkTaskFailed, apply_network_tasks
from agent.network.plan import AddFdb, desired_network, plan_changes, vtep_mac
from fleetd.core.network import NetworkConfig, SubnetLease, parse_network_config

VXLAN = parse_network_config('{"Network": "10.244.0.0/16"}')
HOST_GW = parse_network_config('{"Network": "10.244.0.0/16", "Backend": {"Type": "host-gw"}}')
NETWORK = IPv4Network("10.244.0.0/16")


def lease(n: int, kind: str = "vxlan") -> SubnetLease:
    subnet = IPv4Network(f"10.244.{n}.0/24")
    ip = IPv4Address(f"192.168.0.{n}")
    if kind == "vxlan":
        return SubnetLease(subnet, ip, "vxlan", 1, vtep_mac(f"machine{n}"))
    return SubnetLease(subnet, ip, kind)


def converge(
    kernel: FakeKernel, config: NetworkConfig, own: SubnetLease, others: list[SubnetLease]
) -> None:
    desired = desired_network(config, own, others)
    apply_network_tasks(kernel, plan_changes(kernel.observe(NETWORK, "flannel.1"), desired))


@given(
    first=st.sets(st.integers(2, 20), max_size=8),
    second=st.sets(st.integers(2, 20), max_size=8),
    host_gw=st.booleans(),
)
def test_applying_a_plan_leaves_nothing_to_plan(
    first: set[int], second: set[int], host_gw: bool
) -> None:
    kind, config = ("host-gw", HOST_GW) if host_gw else ("vxlan", VXLAN)
    kernel = FakeKernel()
    own = lease(1, kind)
    for members in (first, second):
        others = [lease(n, kind) for n in sorted(members)]
        converge(kernel, config, own, others)
        desired = desired_network(config, own, others)
        observed = kernel.observe(NETWORK, "flannel.1")
        assert plan_changes(observed, desired) == []
        assert {r.dst for r in observed.routes} == {lease(n).subnet for n in members}


def test_a_failure_stops_the_pass_and_names_the_task() -> None:
    kernel = FakeKernel(fail_on=AddFdb)
    desired = desired_network(VXLAN, lease(1), [lease(2), lease(3)])
    tasks = plan_changes(kernel.observe(NETWORK, "flannel.1"), desired)
    with pytest.raises(NetworkTaskFailed, match=r"forward .* to 192\.168\.0\.\d on flannel\.1"):
        apply_network_tasks(kernel, tasks)
    assert not kernel.routes  # routes come after the fdb entries: none was added
    apply_network_tasks(kernel, plan_changes(kernel.observe(NETWORK, "flannel.1"), desired))
    assert plan_changes(kernel.observe(NETWORK, "flannel.1"), desired) == []


def test_vtep_mac_is_stable_unicast_and_locally_administered() -> None:
    mac = vtep_mac("0c1ab2f2f1a34a7e8d3a6e1f20aa0001")
    assert mac == vtep_mac("0c1ab2f2f1a34a7e8d3a6e1f20aa0001")
    assert mac != vtep_mac("5d9e01b7c3f04b1d9a2e4c6b80bb0002")
    first = int(mac.split(":")[0], 16)
    assert first & 0b10
    assert not first & 0b01
