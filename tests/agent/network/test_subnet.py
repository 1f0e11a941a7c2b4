"""The subnet lease keeper on a real etcd: flannel's records on the machine's lease, the
remembered subnet taken back, race-free allocation, and clear errors that write nothing."""

from __future__ import annotations

import asyncio
import json
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from agent.network.subnet import (
    NoNetworkConfig,
    SubnetKeeper,
    list_subnet_leases,
    read_subnet_file,
)
from fleetd.core.network import NetworkConfigError, NetworkFull
from fleetd.registry.client import EtcdClient
from fleetd.registry.keys import Keys

MAC = "aa:bb:cc:dd:ee:01"


def keeper(
    etcd: EtcdClient, keys: Keys, tmp_path: Path, machine: str = "a" * 32, ip: str = "10.0.0.5"
) -> SubnetKeeper:
    return SubnetKeeper(
        etcd,
        keys,
        machine,
        IPv4Address(ip),
        vtep_mac=MAC,
        subnet_file=tmp_path / machine / "subnet.env",
    )


async def configure(etcd: EtcdClient, keys: Keys, config: dict[str, object]) -> None:
    await etcd.put(keys.network_config, json.dumps(config).encode())


async def test_leases_a_subnet_on_the_machine_lease(
    etcd: EtcdClient, keys: Keys, tmp_path: Path
) -> None:
    await configure(etcd, keys, {"Network": "10.244.0.0/16"})
    lease = await etcd.lease_grant(30)
    got = await keeper(etcd, keys, tmp_path).acquire(lease)
    assert got.lease.subnet.prefixlen == 24
    assert got.lease.subnet.subnet_of(IPv4Network("10.244.0.0/16"))
    assert not got.reclaimed
    name = f"{got.lease.subnet.network_address}-24"
    kv = await etcd.get(keys.subnet(name))
    assert kv is not None
    assert kv.lease == lease
    assert json.loads(kv.value) == {
        "PublicIP": "10.0.0.5",
        "BackendType": "vxlan",
        "BackendData": {"VNI": 1, "VtepMAC": MAC},
    }
    env = (tmp_path / ("a" * 32) / "subnet.env").read_text()
    gateway = got.lease.subnet.network_address + 1
    assert f"FLANNEL_SUBNET={gateway}/24\n" in env
    assert "FLANNEL_NETWORK=10.244.0.0/16\n" in env
    assert "FLANNEL_MTU=1450\n" in env
    # The lease key dies with the machine's lease.
    await etcd.lease_revoke(lease)
    assert await etcd.get(keys.subnet(name)) is None


async def test_host_gw_lease_has_no_backend_data(
    etcd: EtcdClient, keys: Keys, tmp_path: Path
) -> None:
    await configure(etcd, keys, {"Network": "10.244.0.0/16", "Backend": {"Type": "host-gw"}})
    got = await keeper(etcd, keys, tmp_path).acquire(await etcd.lease_grant(30))
    (stored,) = await list_subnet_leases(etcd, keys)
    assert stored == got.lease
    assert stored.as_json()["BackendData"] == {}
    assert "FLANNEL_MTU=1500\n" in (tmp_path / ("a" * 32) / "subnet.env").read_text()


async def test_same_machine_lease_gets_its_subnet_back(
    etcd: EtcdClient, keys: Keys, tmp_path: Path
) -> None:
    await configure(etcd, keys, {"Network": "10.244.0.0/16"})
    lease = await etcd.lease_grant(30)
    first = await keeper(etcd, keys, tmp_path).acquire(lease)
    (tmp_path / ("a" * 32) / "subnet.env").unlink()  # even without the file
    again = await keeper(etcd, keys, tmp_path).acquire(lease)
    assert again.reclaimed
    assert again.lease == first.lease
    assert len(await list_subnet_leases(etcd, keys)) == 1


async def test_remembered_subnet_is_reclaimed_when_free(
    etcd: EtcdClient, keys: Keys, tmp_path: Path
) -> None:
    await configure(etcd, keys, {"Network": "10.244.0.0/16"})
    lease = await etcd.lease_grant(30)
    first = await keeper(etcd, keys, tmp_path).acquire(lease)
    await etcd.lease_revoke(lease)  # the machine died; its file stays
    assert read_subnet_file(tmp_path / ("a" * 32) / "subnet.env") == first.lease.subnet
    # The remembered one is used even though the machine id would point elsewhere.
    other_id = "c" * 32
    (tmp_path / other_id).mkdir()
    (tmp_path / ("a" * 32) / "subnet.env").rename(tmp_path / other_id / "subnet.env")
    got = await keeper(etcd, keys, tmp_path, other_id).acquire(await etcd.lease_grant(30))
    assert got.lease.subnet == first.lease.subnet


async def test_remembered_subnet_taken_by_another_is_left_to_it(
    etcd: EtcdClient, keys: Keys, tmp_path: Path
) -> None:
    await configure(etcd, keys, {"Network": "10.244.0.0/16"})
    holder = await keeper(etcd, keys, tmp_path).acquire(await etcd.lease_grant(30))
    other_id = "c" * 32
    (tmp_path / other_id).mkdir()
    gateway = holder.lease.subnet.network_address + 1
    (tmp_path / other_id / "subnet.env").write_text(f"FLANNEL_SUBNET={gateway}/24\n")
    got = await keeper(etcd, keys, tmp_path, other_id, "10.0.0.6").acquire(
        await etcd.lease_grant(30)
    )
    assert got.lease.subnet != holder.lease.subnet
    kv = await etcd.get(keys.subnet(f"{holder.lease.subnet.network_address}-24"))
    assert kv is not None
    assert json.loads(kv.value)["PublicIP"] == "10.0.0.5"


async def test_many_machines_at_once_never_share_a_subnet(
    etcd: EtcdClient, keys: Keys, tmp_path: Path
) -> None:
    # 16 subnets for 16 machines: every one must win a different subnet.
    await configure(
        etcd, keys, {"Network": "10.9.0.0/24", "SubnetLen": 28, "SubnetMin": "10.9.0.0"}
    )
    keepers = [keeper(etcd, keys, tmp_path, f"{i:032x}", f"10.0.1.{i + 1}") for i in range(16)]
    leases = [await etcd.lease_grant(30) for _ in keepers]
    got = await asyncio.gather(
        *(k.acquire(lease) for k, lease in zip(keepers, leases, strict=True))
    )
    subnets = {g.lease.subnet for g in got}
    assert len(subnets) == 16
    assert len(await list_subnet_leases(etcd, keys)) == 16
    # The seventeenth finds the network full: a clear error, nothing written.
    late = keeper(etcd, keys, tmp_path, "f" * 32, "10.0.1.99")
    with pytest.raises(NetworkFull, match=r"10\.9\.0\.0/24 is full"):
        await late.acquire(await etcd.lease_grant(30))
    assert len(await list_subnet_leases(etcd, keys)) == 16
    assert not (tmp_path / ("f" * 32) / "subnet.env").exists()


@pytest.mark.parametrize(
    ("config", "field"),
    [
        (b'{"Network": "10.244.0.0/16",', "not JSON"),
        (b'{"Network": "10.244.0.0/30"}', "SubnetLen"),
        (b'{"Network": "10.244.0.0/16", "SubnetLen": 12}', "SubnetLen"),
        (b'{"Network": "10.244.0.0/16", "Backend": {"Type": "udp"}}', "Backend.Type"),
    ],
)
async def test_bad_config_is_refused_and_nothing_written(
    etcd: EtcdClient, keys: Keys, tmp_path: Path, config: bytes, field: str
) -> None:
    await etcd.put(keys.network_config, config)
    with pytest.raises(NetworkConfigError, match=field):
        await keeper(etcd, keys, tmp_path).acquire(await etcd.lease_grant(30))
    assert await list_subnet_leases(etcd, keys) == []
    assert not (tmp_path / ("a" * 32) / "subnet.env").exists()


async def test_no_config_is_a_clear_error(etcd: EtcdClient, keys: Keys, tmp_path: Path) -> None:
    with pytest.raises(NoNetworkConfig, match="network/config"):
        await keeper(etcd, keys, tmp_path).acquire(await etcd.lease_grant(30))
