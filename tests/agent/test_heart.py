"""The heart on a real etcd: the machine record on a kept-alive lease, re-attached after a restart
within the TTL, registered again after the lease is lost, and patient while etcd is away."""

from __future__ import annotations

import random

import structlog

from agent.heart import Heart
from devtools.etcd_server import EtcdServer
from fleetd.core.model import Machine
from fleetd.registry.client import EtcdClient
from fleetd.registry.codec import decode_machine
from fleetd.registry.keys import Keys
from fleetd.runtime.backoff import Backoff
from tests.agent.helpers import MACHINE, background
from tests.engine.cluster import wait_until

WEB = Machine(MACHINE, {"role": "web"}, "10.0.0.5")


def fast() -> Backoff:
    return Backoff(initial=0.01, maximum=0.1, rng=random.Random(7))


async def test_registers_the_machine_on_a_lease(etcd: EtcdClient, keys: Keys) -> None:
    heart = Heart(etcd, keys, WEB, ttl=5, version="9.9")
    async with background(heart.run()):
        lease = await heart.wait_lease()
        kv = await etcd.get(keys.machine(MACHINE))
        assert kv is not None
        assert kv.lease == lease.id
        assert decode_machine(kv.key, kv.value) == WEB
        assert b'"version":"9.9"' in kv.value
        assert 0 < await etcd.lease_ttl(lease.id) <= 5
        assert (heart.leases, heart.reattached) == (1, 0)
    # Stopped: the lease is left to run out (or to be re-attached), not revoked.
    assert await etcd.lease_ttl(lease.id) > 0
    assert await etcd.get(keys.machine(MACHINE)) is not None
    await etcd.lease_revoke(lease.id)


async def test_a_restart_within_the_ttl_reattaches_and_the_record_never_goes(
    etcd: EtcdClient, keys: Keys
) -> None:
    first = Heart(etcd, keys, WEB, ttl=10)
    async with background(first.run()):
        lease = await first.wait_lease()
    before = await etcd.get(keys.machine(MACHINE))
    assert before is not None
    second = Heart(etcd, keys, WEB, ttl=10)
    async with background(second.run()):
        assert (await second.wait_lease()).id == lease.id
        assert second.reattached == 1
        after = await etcd.get(keys.machine(MACHINE))
        assert after == before  # same lease, same record: not even rewritten
    changed = Machine(MACHINE, {"role": "db"}, "10.0.0.5")
    third = Heart(etcd, keys, changed, ttl=10)
    async with background(third.run()):
        assert (await third.wait_lease()).id == lease.id
        kv = await etcd.get(keys.machine(MACHINE))
        assert kv is not None
        assert decode_machine(kv.key, kv.value).metadata == {"role": "db"}
        assert kv.create_revision == before.create_revision  # rewritten in place, never deleted
    await etcd.lease_revoke(lease.id)


async def test_a_lost_lease_is_replaced(etcd: EtcdClient, keys: Keys) -> None:
    heart = Heart(etcd, keys, WEB, ttl=3, backoff=fast())
    with structlog.testing.capture_logs() as logs:
        async with background(heart.run()):
            lost = await heart.wait_lease()
            await etcd.lease_revoke(lost.id)  # as if it had expired

            async def registered_again() -> bool:
                kv = await etcd.get(keys.machine(MACHINE))
                return kv is not None and kv.lease not in (0, lost.id)

            await wait_until(registered_again, "the machine to be registered on a new lease")
            assert (await heart.wait_lease()).id != lost.id
            assert heart.leases == 2
            await etcd.lease_revoke((await heart.wait_lease()).id)
    assert "machine lease lost, registering again" in [e["event"] for e in logs]


async def test_waits_for_etcd(private_etcd: EtcdServer, key_prefix: str) -> None:
    client = await EtcdClient.connect([private_etcd.endpoint], timeout=1.0)
    keys = Keys(key_prefix)
    try:
        private_etcd.kill()
        heart = Heart(client, keys, WEB, ttl=5, backoff=fast())
        with structlog.testing.capture_logs() as logs:
            async with background(heart.run()) as task:

                async def retried() -> bool:
                    return any(
                        e["event"] == "cannot register the machine in etcd, retrying" for e in logs
                    )

                await wait_until(retried, "the heart to log that it retries")
                assert not task.done()
                private_etcd.start()
                lease = await heart.wait_lease()
                kv = await client.get(keys.machine(MACHINE))
                assert kv is not None
                assert kv.lease == lease.id
    finally:
        await client.close()
