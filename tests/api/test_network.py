"""The network routes on the real app and a real etcd: the configuration set and shown, a bad
one refused with the field named and nothing written, and the subnet leases with their
machines; a write whose answer etcd lost gets its true status."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Network
from typing import Any

import httpx
import pytest

from fleetd.core.network import SubnetLease
from fleetd.registry.client import EtcdClient
from fleetd.registry.keys import Keys
from tests.registry.hooks import lost


async def test_set_and_show_the_config(
    api: httpx.AsyncClient, etcd: EtcdClient, keys: Keys
) -> None:
    missing = await api.get("/fleet/v1/network/config")
    assert missing.status_code == 404
    assert "no network configuration" in missing.json()["error"]["message"]
    body = {"Network": "10.244.0.0/16", "Backend": {"Type": "host-gw"}}
    put = await api.put("/fleet/v1/network/config", content=json.dumps(body))
    assert put.status_code == 200
    kv = await etcd.get(keys.network_config)
    assert kv is not None
    assert json.loads(kv.value) == body
    shown = (await api.get("/fleet/v1/network/config")).json()
    assert shown["config"] == body
    assert shown["effective"]["SubnetLen"] == 24
    assert shown["effective"]["SubnetMax"] == "10.244.255.0"


async def test_a_bad_config_is_refused_naming_the_field(
    api: httpx.AsyncClient, etcd: EtcdClient, keys: Keys
) -> None:
    await etcd.put(keys.network_config, b'{"Network": "10.244.0.0/16"}')
    for body, field in [
        ('{"Network": "10.244.0.0/16", "SubnetLen": 12}', "SubnetLen"),
        ('{"Network": "10.244.0.0/30"}', "SubnetLen"),
        ('{"Network": "10.244.0.0/33"}', "Network"),
        ('{"Network": "10.244.0.0/16", "Backend": {"Type": "udp"}}', "Backend.Type"),
        ('{"SubnetLen": 24}', "Network"),
        ("{not json", "not JSON"),
    ]:
        answer = await api.put("/fleet/v1/network/config", content=body)
        assert answer.status_code == 400, body
        assert field in answer.json()["error"]["message"], body
    kv = await etcd.get(keys.network_config)
    assert kv is not None
    assert json.loads(kv.value) == {"Network": "10.244.0.0/16"}


async def test_a_stored_bad_config_is_shown_with_its_error(
    api: httpx.AsyncClient, etcd: EtcdClient, keys: Keys
) -> None:
    await etcd.put(keys.network_config, b'{"Network": "10.244.0.0/16", "SubnetLen": 40}')
    shown = (await api.get("/fleet/v1/network/config")).json()
    assert "SubnetLen" in shown["error"]
    assert "effective" not in shown


async def test_subnets_with_their_machines(
    api: httpx.AsyncClient, etcd: EtcdClient, keys: Keys
) -> None:
    lease = await etcd.lease_grant(30)
    await etcd.put(keys.machine("m1"), b'{"id": "m1"}', lease=lease)
    one = SubnetLease(
        IPv4Network("10.244.9.0/24"), IPv4Address("192.168.0.1"), "vxlan", 1, "02:00:00:00:00:01"
    )
    two = SubnetLease(IPv4Network("10.244.10.0/24"), IPv4Address("192.168.0.2"), "host-gw")
    await etcd.put(keys.subnet("10.244.9.0-24"), one.encode(), lease=lease)
    await etcd.put(keys.subnet("10.244.10.0-24"), two.encode())
    await etcd.put(keys.subnet("garbage"), b"{}")
    rows = (await api.get("/fleet/v1/network/subnets")).json()["subnets"]
    assert rows == [
        {
            "subnet": "10.244.9.0/24",
            "machineID": "m1",
            "publicIP": "192.168.0.1",
            "backendType": "vxlan",
            "backendData": {"VNI": 1, "VtepMAC": "02:00:00:00:00:01"},
        },
        {
            "subnet": "10.244.10.0/24",
            "machineID": "",
            "publicIP": "192.168.0.2",
            "backendType": "host-gw",
            "backendData": {},
        },
    ]


@pytest.mark.parametrize("applied", [True, False], ids=["applied-then-lost", "lost-before"])
async def test_a_config_whose_answer_etcd_lost_gets_its_true_status(
    api: httpx.AsyncClient,
    etcd: EtcdClient,
    keys: Keys,
    monkeypatch: pytest.MonkeyPatch,
    applied: bool,
) -> None:
    """The connection breaks as the write is sent, after etcd applied it or before it read it:
    the answer is the write's success, and it is stored once (it used to be a 503 even when
    etcd had applied it)."""
    await etcd.put(keys.network_config, b'{"Network": "10.244.0.0/16"}')
    real = etcd._unary
    hooked: list[str] = []

    async def unary(method: str, request: Any, *args: Any, **kwargs: Any) -> Any:
        writes = method == "Put" or (method == "Txn" and len(request.success) > 0)
        if writes and not hooked:
            hooked.append(method)
            if applied:
                await real(method, request, *args, **kwargs)
            raise lost()
        return await real(method, request, *args, **kwargs)

    monkeypatch.setattr(etcd, "_unary", unary)
    before = await etcd.get(keys.network_config)
    assert before is not None
    body = {"Network": "10.99.0.0/16", "Backend": {"Type": "vxlan"}}
    put = await api.put("/fleet/v1/network/config", content=json.dumps(body))
    assert hooked
    assert put.status_code == 200, put.text
    kv = await etcd.get(keys.network_config)
    assert kv is not None
    assert json.loads(kv.value) == body
    assert kv.version == before.version + 1  # written once
