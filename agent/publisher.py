"""Publishes the states of this machine's units to `states/<machine>/<unit>`, on the heart's lease.

Driven by the `UnitManager`'s change feed, not by polling: a notification marks its unit dirty
and triggers a `ReconcileLoop` pass, which looks at the files of the dirty units only (not at the
whole units directory) and reads systemd's states of every dirty unit in one call
and writes what changed in transactions of up to 128 operations, a few of them in flight at once
(a thousand units that change together are 8 transactions, not a thousand writes in turn). A
burst of notifications before a pass is one pass, and a state that equals the published one is
not written again, so a burst of changes to a unit is one write. A slow safety tick re-checks
every unit.

What is published, for each unit file in the units directory: `UnitStateRecord(loadState,
activeState, subState, hash, since)`, where `hash` is the file's hash and `since` the time the
publisher saw the unit enter this state, plus, while the unit is `active`, its pod's address
(`podAddress`) when fleet-pod handed one over (`agent.pod_addresses`, a dict lookup per unit):
fleet-pod writes it after systemd reports the unit active, so a change to the pod-address
directory marks its unit dirty and triggers a pass, as a change feed notification does.

A unit the agent is about to start is held (`hold`): the publisher leaves it dirty and does not
read it. Once its start job is queued (`started`), a state is published only when it is no longer
`inactive` (`activating`, `active`, `failed`, ...), and in any case when the job has ended; a
unit whose start did not come is released as it is (`release`). So a new unit's first published
state is the one its start gives it, not `not-found` or `loaded`/`inactive`/`dead` on the way
there: one state write per started unit instead of about two (516 for 300 units on the rig), and
no read that makes systemd load a unit its start is about to load.

A unit whose file is gone (unloaded) has its state deleted. Everything is written on the heart's
current lease: when the lease changes (lost, then granted again), the publisher reads what is
stored, and writes again whatever is not on the new lease; after a re-attach it finds its states
on the same lease and writes nothing.

Failures (etcd away, systemd away) fail the pass: the dirty units stay dirty and the loop retries
with backoff; a unit that keeps running keeps its last published state meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection
from pathlib import Path

import structlog

from agent.heart import Heart
from agent.pod_addresses import PodAddresses
from agent.systemd.port import ChangeFeed, Job, UnitManager
from fleetd.core.names import unit_file_name_problem
from fleetd.registry.client import Delete, EtcdClient, Put
from fleetd.registry.codec import CodecError, UnitStateRecord, decode_state, encode_state
from fleetd.registry.keys import Keys
from fleetd.runtime.loop import ReconcileLoop

log = structlog.get_logger(__name__)

MAX_TXN_OPS = 128
TXNS_IN_FLIGHT = 4
SAFETY_INTERVAL = 60.0


def _same(a: UnitStateRecord, b: UnitStateRecord) -> bool:
    """Equal apart from `since`."""
    return (a.load_state, a.active_state, a.sub_state, a.hash, a.load_error, a.pod_address) == (
        b.load_state,
        b.active_state,
        b.sub_state,
        b.hash,
        b.load_error,
        b.pod_address,
    )


class StatePublisher:
    """Keeps `states/<machine>/` equal to systemd's view of the local units; see the docstring."""

    def __init__(
        self,
        client: EtcdClient,
        keys: Keys,
        machine_id: str,
        manager: UnitManager,
        heart: Heart,
        *,
        interval: float = SAFETY_INTERVAL,
        clock: Callable[[], float] = time.time,
        pod_addresses: Path | None = None,
    ) -> None:
        """`pod_addresses`: fleet-pod's handoff directory (`POD_ADDRESS_DIR` of
        `fleetd.core.pod_address` on a host, given by `run_agent_on_systemd`); None: none."""
        self._client = client
        self._keys = keys
        self._machine_id = machine_id
        self._manager = manager
        self._heart = heart
        self._clock = clock
        self._prefix = keys.state(machine_id, "")
        self._published: dict[str, UnitStateRecord] = {}  # what etcd holds on `_lease_id`
        self._stale: set[str] = set()  # names stored but not on the current lease
        self._lease_id = 0
        self._dirty: set[str] = set()
        self._everything = True
        self._local: set[str] = set()  # unit files seen by the last pass
        self._held: set[str] = set()  # units the agent is about to start: not published yet
        self._starting: set[str] = set()  # start job queued, not ended: published unless inactive
        self.pod_addresses = PodAddresses(pod_addresses) if pod_addresses is not None else None
        self.loop = ReconcileLoop("publisher", self._pass, interval=interval)
        self.writes = 0  # states put or deleted so far

    @property
    def published(self) -> dict[str, UnitStateRecord]:
        return dict(self._published)

    async def run(self) -> None:
        """Follow the change feed and publish until cancelled."""
        if self.pod_addresses is not None:
            self.pod_addresses.scan()  # known before the first pass: no state without them
        with self._manager.subscribe() as feed:
            async with asyncio.TaskGroup() as group:
                group.create_task(self.loop.run(), name="publisher:loop")
                group.create_task(self._follow(feed), name="publisher:feed")
                group.create_task(self._follow_lease(), name="publisher:lease")
                if self.pod_addresses is not None:
                    group.create_task(
                        self.pod_addresses.run(self._addresses_changed),
                        name="publisher:pod-addresses",
                    )

    async def _follow_lease(self) -> None:
        """A pass for every new lease: the states on the old one went with it."""
        while True:
            lease = await self._heart.wait_lease()
            if lease.id != self._lease_id:
                self.loop.trigger()
            await lease.wait_lost()

    async def _follow(self, feed: ChangeFeed) -> None:
        while True:
            changed = await feed.next()
            ours = {name for name in changed.names if self._is_ours(name)}
            self._dirty |= ours
            if changed.everything:
                self._everything = True
            if changed.everything or ours:
                self.loop.trigger()

    def hold(self, names: Collection[str]) -> None:
        """Do not read or publish `names`: the agent is about to start them."""
        self._held.update(names)

    def started(self, name: str, job: Job | None) -> None:
        """The agent asked systemd to start `name`: `job` is queued (None: systemd refused)."""
        if job is None:
            self.release([name])
            return
        self._held.discard(name)
        self._starting.add(name)
        # not read now: the job has rarely run yet (it would read `inactive`); systemd's signal
        # when it runs, or the job's end, marks the unit again
        self._dirty.discard(name)

        def ended() -> None:
            self._starting.discard(name)
            self._dirty.add(name)
            self.loop.trigger()

        job.when_done(ended)

    def release(self, names: Collection[str]) -> None:
        """Publish those of `names` still held as they are: their start did not come."""
        released = self._held.intersection(names)
        if released:
            self._held -= released
            self._dirty |= released
            self.loop.trigger()

    def _addresses_changed(self, names: set[str]) -> None:
        ours = {name for name in names if self._is_ours(name)}
        if ours:
            self._dirty |= ours
            self.loop.trigger()

    def _is_ours(self, name: str) -> bool:
        """Whether `name` is a unit of ours (systemd also signals about its own units)."""
        if name in self._local or name in self._published or name in self._stale:
            return True
        if unit_file_name_problem(name) is not None:
            return False
        return (self._manager.units_directory / name).is_file()

    async def _pass(self) -> None:
        lease = await self._heart.wait_lease()
        if lease.id != self._lease_id:
            await self._adopt(lease.id)
        everything, dirty = self._everything, self._dirty - self._held
        self._everything, self._dirty = False, self._dirty & self._held
        try:
            await self._publish(lease.id, everything, dirty)
        except BaseException:
            self._everything |= everything
            self._dirty |= dirty
            raise

    async def _adopt(self, lease_id: int) -> None:
        """Read what is stored for this machine; keep what is on `lease_id`, redo the rest."""
        kvs, _ = await self._client.get_prefix(self._prefix)
        published: dict[str, UnitStateRecord] = {}
        stale: set[str] = set()
        for kv in kvs:
            name = kv.key[len(self._prefix) :]
            try:
                record = decode_state(kv.key, kv.value)
            except CodecError:
                stale.add(name)
                continue
            if kv.lease == lease_id:
                published[name] = record
            else:
                stale.add(name)
        self._published, self._stale = published, stale
        self._lease_id = lease_id
        self._everything = True

    async def _publish(self, lease_id: int, everything: bool, dirty: set[str]) -> None:
        if everything:
            files = await self._manager.list_unit_files()
            self._local = set(files)
            names = set(files) | set(self._published) | self._stale
            held = names & self._held
            self._dirty |= held  # published once released
            names -= held
        else:  # only the dirty units' files: a stat each, not the whole directory
            files = await self._manager.list_unit_files(dirty)
            self._local = (self._local - dirty) | set(files)
            names = dirty & (set(files) | set(self._published) | self._stale)
        if not names:
            return
        local = sorted(n for n in names if n in files)
        states = await self._manager.unit_states(local) if local else {}
        now = self._clock()
        writes: list[tuple[str, Put | Delete, UnitStateRecord | None]] = []
        for name in sorted(names):
            key = self._keys.state(self._machine_id, name)
            if name not in files:
                if name in self._published or name in self._stale:
                    writes.append((name, Delete(key), None))
                continue
            status = states[name]
            if name in self._starting and status.active_state == "inactive":
                continue  # its start job is still queued: published when it ran or ended
            addresses = self.pod_addresses if status.active_state == "active" else None
            record = UnitStateRecord(
                status.load_state,
                status.active_state,
                status.sub_state,
                files[name],
                now,
                status.load_error,
                addresses.get(name) if addresses is not None else "",
            )
            old = self._published.get(name)
            if old is not None and _same(old, record):
                continue
            writes.append((name, Put(key, encode_state(record), lease=lease_id), record))
        batches = [writes[i : i + MAX_TXN_OPS] for i in range(0, len(writes), MAX_TXN_OPS)]
        slots = asyncio.Semaphore(TXNS_IN_FLIGHT)

        async def commit(batch: list[tuple[str, Put | Delete, UnitStateRecord | None]]) -> None:
            async with slots:
                await self._client.txn([], [op for _, op, _ in batch])
            self._written(batch)

        outcomes = await asyncio.gather(*map(commit, batches), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    def _written(self, batch: list[tuple[str, Put | Delete, UnitStateRecord | None]]) -> None:
        """Note what one committed transaction wrote."""
        for name, _, written in batch:
            self._stale.discard(name)
            if written is None:
                self._published.pop(name, None)
                log.debug("unit state removed", unit=name)
            else:
                self._published[name] = written
                log.debug(
                    "unit state published",
                    unit=name,
                    state=f"{written.active_state}/{written.sub_state}",
                )
        self.writes += len(batch)
