"""Lease keep-alive against a real etcd: it holds, it is revoked, it is lost when etcd is gone."""

from __future__ import annotations

import asyncio
import time

import pytest
from structlog.testing import capture_logs

from devtools.etcd_server import EtcdServer
from fleetd.registry.client import EtcdClient
from fleetd.registry.lease import Lease
from tests.engine.cluster import wait_until

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


async def test_past_its_local_deadline_a_lease_is_lost_only_if_etcd_says_so(
    etcd: EtcdClient, key_prefix: str
) -> None:
    """As after a stall of the event loop: the local deadline has passed, and the next ping
    decides. etcd still holds this lease, so it is kept; etcd has dropped that one, so it is
    lost. (It used to be lost on the local clock alone, without asking etcd.)"""
    held_id = await etcd.lease_grant(30)
    await etcd.put(key_prefix + "member", b"here", lease=held_id)
    with capture_logs() as logs:
        async with Lease(etcd, held_id, 30, time.monotonic() - 1) as held:
            assert not held.alive  # nobody may act on it until etcd has answered

            async def alive_again() -> bool:
                return held.alive

            await wait_until(alive_again, "etcd's answer to the overdue keep-alive", within=10)
            assert held.lost_reason == ""
            assert await etcd.get(key_prefix + "member") is not None
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == [
        "lease held: etcd acknowledged a keep-alive sent after its local deadline"
    ]

    dropped_id = await etcd.lease_grant(30)
    await etcd.lease_revoke(dropped_id)
    dropped = Lease(etcd, dropped_id, 30, time.monotonic() - 1)
    dropped.start()
    await asyncio.wait_for(dropped.wait_lost(), 10)
    assert dropped.lost_reason == "etcd reports the lease expired"


async def test_grant_refuses_a_ttl_below_one_second(etcd: EtcdClient) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        await Lease.grant(etcd, 0)


async def test_the_lease_holds_while_cpu_work_starves_the_event_loop(
    etcd: EtcdClient, etcd_server: EtcdServer, key_prefix: str
) -> None:
    """CPU work that gives the loop back only every 0.2 s, four times the keep-alive client's
    request timeout, for two TTLs: etcd receives every keep-alive, so the lease must hold.

    It used to be lost ("no keep-alive acknowledged for 4s", with etcd fine): each reply came
    in while the loop was blocked, and the ping's own timer, due by then, cancelled the read
    and threw the reply away. A ping takes some ten turns of the loop, 2 s here, within the TTL.
    """
    ttl = 4
    asked_at = time.monotonic()
    lease_id = await etcd.lease_grant(ttl)
    await etcd.put(key_prefix + "member", b"here", lease=lease_id)
    starved = await EtcdClient.connect([etcd_server.endpoint], timeout=0.05)
    try:
        with capture_logs() as logs:
            async with Lease(starved, lease_id, ttl, asked_at + ttl) as lease:
                busy_until = time.monotonic() + 2 * ttl
                while time.monotonic() < busy_until:
                    time.sleep(0.2)  # noqa: ASYNC251 - CPU work holding the loop
                    await asyncio.sleep(0)
                assert lease.lost_reason == ""
                assert lease.alive
                assert await etcd.lease_ttl(lease_id) > 0
                assert await etcd.get(key_prefix + "member") is not None
    finally:
        await starved.close()
    assert not [e for e in logs if e["event"] == "lease lost"]


class StubbornStream:
    """A keep-alive stream whose ping outlives its cancellation, as a gRPC write can, until
    `release` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.pinging = asyncio.Event()

    async def ping(self, lease_id: int, *, timeout: float | None = None) -> int:  # noqa: ASYNC109 - the real signature
        self.pinging.set()
        while not self.release.is_set():
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                continue  # ignores the cancellation
        return 30

    def close(self) -> None:
        pass


class StubbornClient:
    timeout = 5.0

    def __init__(self) -> None:
        self.stream = StubbornStream()

    def lease_keepalive(self) -> StubbornStream:
        return self.stream


async def test_stopping_a_lease_whose_ping_ignores_cancellation_does_not_hang() -> None:
    """A gRPC stream call can outlive its cancellation; stopping the lease then waited forever
    (a stopped agent hung in CI). It now gives the ping `CANCEL_GRACE` and leaves it."""
    client = StubbornClient()
    lease = Lease(client, 1, 30, time.monotonic() + 30)  # type: ignore[arg-type]
    lease.start()
    try:
        await asyncio.wait_for(client.stream.pinging.wait(), 5)
        with capture_logs() as logs:
            detaching = asyncio.create_task(lease.detach())
            done, _ = await asyncio.wait([detaching], timeout=10)  # a deadline: it used to hang
            assert done == {detaching}
        events = {e["event"] for e in logs}
        assert "lease keep-alive ping did not end when cancelled; leaving it" in events
        # the keep-alive task waits out the ping's grace while detach waits for it: either may
        # end first, so detach may say it left the task too
        assert events <= {
            "lease keep-alive ping did not end when cancelled; leaving it",
            "lease keep-alive did not end when cancelled; leaving it",
        }
    finally:
        client.stream.release.set()  # let the stubborn ping end: nothing is left running
        await asyncio.sleep(0.1)


async def test_a_lease_left_with_a_last_ping_has_its_whole_ttl_again(etcd: EtcdClient) -> None:
    ttl = 6
    kept = await Lease.grant(etcd, ttl)
    left = await Lease.grant(etcd, ttl)  # neither kept alive: both run down

    async def aged() -> bool:
        return await etcd.lease_ttl(left.id) <= ttl - 3

    await wait_until(aged, "the leases three seconds into their TTL", within=10)
    await left.detach(last_ping=True)
    await kept.detach()
    assert await etcd.lease_ttl(left.id) >= ttl - 1  # refreshed on the way out
    assert await etcd.lease_ttl(kept.id) <= ttl - 3  # left as it was
