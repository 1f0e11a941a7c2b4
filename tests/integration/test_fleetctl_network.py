"""`fleetctl network-config`, `list-subnets` and the pods' addresses in `list-units`, against the
real API and etcd."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Network

import httpx

from fleetd.core.network import SubnetLease
from fleetd.core.pod_address import PodAddress, encode_pod_address
from fleetd.runtime.files import write_atomically
from tests.engine.cluster import wait_until
from tests.integration.cluster import WEB, Cluster, legend


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


async def test_a_pods_address_is_in_the_units_state_and_list_units(
    fleet_cluster: Cluster,
) -> None:
    fleet_cluster.write_unit(
        "pod.service",
        "[Service]\nExecStart=/bin/sleep infinity\n\n[X-Fleet]\nMachineMetadata=role=web\n",
    )
    start = await fleet_cluster.fleetctl("start", "pod.service")
    assert (start.code, start.err) == (0, "")
    web = fleet_cluster.hosts[WEB].agent.publisher.pod_addresses
    assert web is not None
    # fleet-pod, in the unit, hands its pod's address over once the unit is active
    record = PodAddress("10.244.3.2", "6f1d3c2a-0b4e-4a7f-9c1d-2e3f4a5b6c7d")
    write_atomically(web.directory / "pod.service", encode_pod_address(record))

    transport = httpx.AsyncHTTPTransport(uds=fleet_cluster.socket_path)
    async with httpx.AsyncClient(transport=transport, base_url="http://fleet") as api:

        async def published() -> dict[str, str] | None:
            response = await api.get("/fleet/v1/state", params={"unitName": "pod.service"})
            states = response.json().get("states", [])
            return states[0] if states and "podAddress" in states[0] else None

        state = await wait_until(published, "the pod address in GET /fleet/v1/state")
    assert state is not None
    assert state == {
        "hash": state["hash"],
        "machineID": WEB,
        "name": "pod.service",
        "podAddress": "10.244.3.2",
        "systemdActiveState": "active",
        "systemdLoadState": "loaded",
        "systemdSubState": "running",
    }
    shown = await fleet_cluster.fleetctl("list-units", "--fields", "unit,machine,address")
    assert (shown.code, shown.err) == (0, "")
    assert shown.out == (f"UNIT\t\tMACHINE\t\t\tADDRESS\npod.service\t{legend(WEB)}\t10.244.3.2\n")
    default = await fleet_cluster.fleetctl("list-units")
    assert default.out == (
        f"UNIT\t\tMACHINE\t\t\tACTIVE\tSUB\npod.service\t{legend(WEB)}\tactive\trunning\n"
    )

    stop = await fleet_cluster.fleetctl("stop", "pod.service")  # the file is still there
    assert stop.code == 0, stop.err
    stopped = await fleet_cluster.fleetctl("list-units", "--fields", "unit,active,address")
    assert stopped.out == "UNIT\t\tACTIVE\t\tADDRESS\npod.service\tinactive\t-\n"
