"""Lease keep-alive against a real etcd: it holds, it is revoked, it is lost when etcd is gone."""

from __future__ import annotations

import asyncio
import time

import pytest
from structlog.testing import capture_logs

from devtools.etcd_server import EtcdServer
from fleetd.registry.client import EtcdClient
from fleetd.registry.lease import Lease

TTL = 2


async def test_kept_alive_key_outlives_three_ttls_even_with_a_busy_loop(
    etcd: EtcdClient, key_prefix: str
) -> None:
    key = key_prefix + "member"
    async with await Lease.grant(etcd, TTL) as lease:
        await etcd.put(key, b"here", lease=lease.id)
        deadline = time.monotonic() + 3 * TTL
        checks = 0
        while time.monotonic() < deadline:
            checks += 1
            if checks == 3:
                # Block the event loop for almost half a TTL: pings every ttl/3 absorb it.
                time.sleep(0.45 * TTL)  # noqa: ASYNC251 - deliberately starving the loop
            assert lease.alive
            kv = await etcd.get(key)
            assert kv is not None, f"key expired after {checks} checks"
            assert kv.lease == lease.id
            await asyncio.sleep(TTL / 4)
        assert await etcd.lease_ttl(lease.id) > 0
    assert not lease.alive
    assert await etcd.get(key) is None  # leaving the block revoked the lease


async def test_revoke_deletes_the_keys_and_reports_lost(etcd: EtcdClient, key_prefix: str) -> None:
    lease = await Lease.grant(etcd, TTL)
    lease.start()
    await etcd.put(key_prefix + "a", b"", lease=lease.id)
    assert lease.alive

    await lease.revoke()
    assert not lease.alive
    assert lease.lost_reason == "revoked"
    await asyncio.wait_for(lease.wait_lost(), 0.1)
    assert await etcd.get(key_prefix + "a") is None
    assert await etcd.lease_ttl(lease.id) == -1
    await lease.revoke()  # twice is harmless


async def test_lease_revoked_behind_its_back_is_reported_lost(
    etcd: EtcdClient, key_prefix: str
) -> None:
    lease = await Lease.grant(etcd, 30)
    lease.start()
    try:
        await etcd.lease_revoke(lease.id)
        await asyncio.wait_for(lease.wait_lost(), 30 / 3 + 2)
        assert not lease.alive
        assert "expired" in lease.lost_reason
    finally:
        await lease.revoke()


async def test_lease_is_lost_when_etcd_is_gone_longer_than_the_ttl(
    private_etcd: EtcdServer,
) -> None:
    client = await EtcdClient.connect([private_etcd.endpoint], timeout=1.0)
    try:
        lease = await Lease.grant(client, TTL)
        lease.start()
        await client.put("/member", b"", lease=lease.id)
        private_etcd.kill()
        killed_at = time.monotonic()

        await asyncio.wait_for(lease.wait_lost(), TTL + 2)
        assert not lease.alive
        assert time.monotonic() - killed_at <= TTL + 0.5
        assert "no keep-alive" in lease.lost_reason

        # Lost is final: etcd coming back does not revive it.
        private_etcd.start()
        assert not lease.alive
        await lease.revoke()
    finally:
        await client.close()


async def test_keepalive_reconnects_after_a_restart_shorter_than_the_ttl(
    private_etcd: EtcdServer,
) -> None:
    ttl = 3
    client = await EtcdClient.connect([private_etcd.endpoint], timeout=1.0)
    try:
        with capture_logs() as logs:
            async with await Lease.grant(client, ttl) as lease:
                await client.put("/member", b"", lease=lease.id)
                private_etcd.restart()  # graceful: SIGTERM, then start on the same data
                # Past one full TTL after the restart, only a re-established keep-alive
                # can have kept the lease (etcd restores leases with a fresh TTL).
                deadline = time.monotonic() + ttl + 1
                while time.monotonic() < deadline:
                    assert lease.alive, lease.lost_reason
                    await asyncio.sleep(ttl / 6)
                assert await client.get("/member") is not None
                assert await client.lease_ttl(lease.id) > 0
    finally:
        await client.close()
    events = [e["event"] for e in logs if e["event"].startswith("lease keep-alive")]
    assert events == ["lease keep-alive failing", "lease keep-alive recovered"]


async def test_grant_refuses_a_ttl_below_one_second(etcd: EtcdClient) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        await Lease.grant(etcd, 0)
