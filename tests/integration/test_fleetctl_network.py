"""`fleetctl network-config` and `fleetctl list-subnets` against the real API and etcd."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Network

from fleetd.core.network import SubnetLease
from tests.integration.cluster import Cluster


async def test_set_show_and_refuse_a_network_config(fleet_cluster: Cluster) -> None:
    unset = await fleet_cluster.fleetctl("network-config")
    assert unset.code == 1
    assert "No network configuration is set" in unset.err

    stored = await fleet_cluster.fleetctl(
        "network-config", '{"Network": "10.244.0.0/16", "Backend": {"Type": "host-gw"}}'
    )
    assert (stored.code, stored.err) == (0, "")
    shown = await fleet_cluster.fleetctl("network-config")
    assert json.loads(shown.out) == {
        "Network": "10.244.0.0/16",
        "SubnetLen": 24,
        "SubnetMin": "10.244.1.0",
        "SubnetMax": "10.244.255.0",
        "Backend": {"Type": "host-gw"},
    }

    bad = await fleet_cluster.fleetctl(
        "network-config", '{"Network": "10.244.0.0/16", "SubnetLen": 8}'
    )
    assert bad.code == 1
    assert "SubnetLen: /8 does not fit in Network 10.244.0.0/16" in bad.err
    raw = await fleet_cluster.fleetctl("network-config", "--raw")
    assert json.loads(raw.out) == {"Network": "10.244.0.0/16", "Backend": {"Type": "host-gw"}}


async def test_list_subnets(fleet_cluster: Cluster) -> None:
    etcd, keys = fleet_cluster.client, fleet_cluster.keys
    lease = await etcd.lease_grant(30)
    machine = "ab" * 16
    await etcd.put(keys.machine(machine), json.dumps({"id": machine}).encode(), lease=lease)
    record = SubnetLease(
        IPv4Network("10.244.7.0/24"), IPv4Address("192.168.0.7"), "vxlan", 1, "02:00:00:00:00:07"
    )
    await etcd.put(keys.subnet("10.244.7.0-24"), record.encode(), lease=lease)
    result = await fleet_cluster.fleetctl("list-subnets")
    assert (result.code, result.err) == (0, "")
    assert result.out == (
        "SUBNET\t\tMACHINE\t\tIP\t\tBACKEND\n10.244.7.0/24\tabababab...\t192.168.0.7\tvxlan\n"
    )
    vtep = await fleet_cluster.fleetctl("list-subnets", "--no-legend", "--fields", "subnet,vtep")
    assert vtep.out == "10.244.7.0/24\t02:00:00:00:00:07\n"
