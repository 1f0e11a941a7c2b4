"""Engine leader election on an etcd lease, and the fence that guards every engine write.

Every fleetd with an engine campaigns: it grants a lease (kept alive on its own task) and tries to
create `engine/leader` on it in a transaction that succeeds only if the key is absent. The winner's
term is identified by the key's create revision; every engine write is a transaction that compares
that revision (`Term.fence`), so a deposed leader (lease expired, key re-created by another
engine) cannot write anything. Losers watch the key and campaign again when it goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import structlog

from fleetd import __version__
from fleetd.registry.client import Compare, EtcdClient, Put
from fleetd.registry.codec import LeaderRecord, decode_leader, encode_leader
from fleetd.registry.errors import EtcdError
from fleetd.registry.keys import Keys
from fleetd.registry.lease import Lease
from fleetd.runtime.backoff import Backoff

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Term:
    """One stretch of leadership: the lease it lives on and the revision that fences writes."""

    lease: Lease
    revision: int
    leader_key: str

    def fence(self) -> Compare:
        """A txn guard that holds only while this term lasts."""
        return Compare.create_revision(self.leader_key, "==", self.revision)


class Election:
    """Campaign for `engine/leader` until this fleetd leads."""

    def __init__(self, client: EtcdClient, keys: Keys, machine_id: str, *, ttl: int) -> None:
        self._client = client
        self._key = keys.leader
        self._machine_id = machine_id
        self._ttl = ttl
        self.leader: str | None = None  # the machine id of the leader last seen
        # set when a lease of ours died of missed keep-alives or etcd failed us: an outage, which
        # also expired the machines' leases; the next term then holds their placements a while
        self.outage_seen = False

    async def campaign(self) -> Term:
        """Block until this fleetd holds the leader key; transient etcd errors are retried."""
        backoff = Backoff(initial=0.2, maximum=5.0)
        while True:
            lease: Lease | None = None
            try:
                lease = await Lease.grant(self._client, self._ttl)
                lease.start()
                term = await self._try_lead(lease)
                if term is not None:
                    return term
            except EtcdError as exc:
                self.outage_seen = True
                delay = backoff.next_delay()
                log.warning("engine election: etcd error, retrying", error=str(exc), retry_in=delay)
                await asyncio.sleep(delay)
            if lease is not None:
                if lease.lost_reason not in ("", "revoked"):
                    self.outage_seen = True
                await lease.revoke()

    async def _try_lead(self, lease: Lease) -> Term | None:
        """Lead on `lease` or wait until the present leader goes; None when the lease was lost."""
        record = encode_leader(LeaderRecord(self._machine_id, __version__))
        while lease.alive:
            absent = Compare.create_revision(self._key, "==", 0)
            result = await self._client.txn([absent], [Put(self._key, record, lease=lease.id)])
            if result.succeeded:
                self._observe(self._machine_id)
                return Term(lease, result.revision, self._key)
            current = await self._client.get(self._key)
            if current is None:
                continue
            if current.lease == lease.id:  # our own earlier write whose answer was lost
                self._observe(self._machine_id)
                return Term(lease, current.create_revision, self._key)
            self._observe(decode_leader(self._key, current.value).machine_id)
            await self._wait_gone(current.mod_revision, lease)
        return None

    async def _wait_gone(self, seen_revision: int, lease: Lease) -> None:
        """Return when the leader key is deleted after `seen_revision`, or our lease is lost."""
        watching = asyncio.create_task(self._first_delete(seen_revision))
        lost = asyncio.create_task(lease.wait_lost())
        try:
            done, _ = await asyncio.wait({watching, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (watching, lost):
                task.cancel()
            await asyncio.gather(watching, lost, return_exceptions=True)
        for task in done:
            task.result()  # an etcd error from the watch goes to the caller's retry

    async def _first_delete(self, seen_revision: int) -> None:
        stream = self._client.watch(self._key, start_revision=seen_revision + 1)
        async with contextlib.aclosing(stream):
            async for changes in stream:
                if any(e.kind == "delete" and e.kv.key == self._key for e in changes.events):
                    return

    def _observe(self, leader: str) -> None:
        if leader != self.leader:
            log.info("engine leader changed", previous=self.leader, leader=leader)
            self.leader = leader
