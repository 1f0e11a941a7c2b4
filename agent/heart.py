"""The machine's presence: `machines/<id>` on a lease of `agent_ttl`, kept alive on its own task.

`Heart.run()` keeps this machine registered for as long as it runs:

1. Re-attach or grant. If `machines/<id>` exists on a lease that etcd still keeps alive (a
   previous fleetd of this machine, restarted within the TTL), the heart takes that lease over
   (one keep-alive ping both refreshes it and tells its TTL) instead of granting a new one: the
   record, and the unit states on the same lease, never disappear, so the engine never sees the
   machine leave (fleet#1086). Otherwise it grants a fresh lease of `ttl` seconds.
2. Write the record on the lease, unless the stored record is already the same.
3. Keep the lease alive (a `Lease` task, a ping every third of the TTL) until it is lost, then
   start over. etcd errors are logged and retried with backoff; the heart never gives up.

Stopping the heart does not revoke the lease: a stopped fleetd leaves its units running and its
machine present until the TTL runs out, so a restarted fleetd can re-attach. It refreshes the
lease once more on the way out, so the restart has the whole TTL, not what was left of it.
Leaving the cluster on purpose is an explicit drain, not a side effect of a restart.

Others wait for a live lease with `wait_lease()` (the state publisher writes on it).
"""

from __future__ import annotations

import asyncio
import time

import structlog

from fleetd import __version__
from fleetd.core.model import AGENT_LEASE_TTL, Machine
from fleetd.registry.client import EtcdClient
from fleetd.registry.codec import encode_machine
from fleetd.registry.errors import EtcdError
from fleetd.registry.keys import Keys
from fleetd.registry.lease import Lease
from fleetd.runtime.backoff import Backoff

log = structlog.get_logger(__name__)


class Heart:
    """Keeps `machines/<id>` on a live lease; see the module docstring."""

    def __init__(
        self,
        client: EtcdClient,
        keys: Keys,
        machine: Machine,
        *,
        ttl: int = AGENT_LEASE_TTL,
        version: str = __version__,
        backoff: Backoff | None = None,
    ) -> None:
        if ttl < 1:
            raise ValueError("the machine lease TTL is at least 1 second")
        self._client = client
        self._keys = keys
        self.machine = machine
        self.ttl = ttl
        self._record = encode_machine(machine, version)
        self._backoff = backoff if backoff is not None else Backoff(initial=0.2, maximum=5.0)
        self._changed = asyncio.Condition()
        self.lease: Lease | None = None
        self.leases = 0  # leases held so far (re-attached or granted)
        self.reattached = 0  # how many of them were re-attached

    async def wait_lease(self) -> Lease:
        """The current lease, once there is a live one."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.lease is not None and self.lease.alive)
        assert self.lease is not None
        return self.lease

    async def run(self) -> None:
        """Keep the machine registered until cancelled; the lease is then left, not revoked."""
        try:
            while True:
                lease = await self._register()
                await self._announce(lease)
                await lease.wait_lost()
                log.warning(
                    "machine lease lost, registering again",
                    machine=self.machine.id,
                    lease=lease.id,
                    reason=lease.lost_reason,
                )
                await self._announce(None)
        finally:
            held, self.lease = self.lease, None
            if held is not None:  # a restarting fleetd gets the lease's whole TTL to re-attach
                await held.detach(last_ping=True)

    async def _announce(self, lease: Lease | None) -> None:
        self.lease = lease
        async with self._changed:
            self._changed.notify_all()

    async def _register(self) -> Lease:
        """A live lease with the machine record on it; retries until etcd lets it."""
        while True:
            try:
                lease = await self._lease()
            except EtcdError as exc:
                delay = self._backoff.next_delay()
                log.warning(
                    "cannot register the machine in etcd, retrying",
                    machine=self.machine.id,
                    error=str(exc),
                    retry_in=round(delay, 2),
                )
                await asyncio.sleep(delay)
                continue
            self._backoff.reset()
            return lease

    async def _lease(self) -> Lease:
        key = self._keys.machine(self.machine.id)
        stored = await self._client.get(key)
        found = None
        if stored is not None and stored.lease:
            found = await self._reattach(stored.lease)
        reattached = found is not None
        lease = found if found is not None else await self._grant()
        lease.start()
        try:
            if not reattached or stored is None or stored.value != self._record:
                await self._client.put(key, self._record, lease=lease.id)
        except BaseException:
            await lease.detach()  # a granted lease nobody uses expires by itself
            raise
        self.leases += 1
        self.reattached += reattached
        log.info(
            "machine registered",
            machine=self.machine.id,
            lease=lease.id,
            ttl=lease.ttl,
            reattached=reattached,
            public_ip=self.machine.primary_ip,
        )
        return lease

    async def _grant(self) -> Lease:
        asked_at = time.monotonic()
        lease_id = await self._client.lease_grant(self.ttl)
        return Lease(self._client, lease_id, self.ttl, asked_at + self.ttl)

    async def _reattach(self, lease_id: int) -> Lease | None:
        """Take over `lease_id` if etcd still keeps it; None when it is gone."""
        stream = self._client.lease_keepalive()
        try:
            asked_at = time.monotonic()
            ttl = await stream.ping(lease_id)
        finally:
            stream.close()
        if ttl <= 0:
            return None
        return Lease(self._client, lease_id, ttl, asked_at + ttl)
