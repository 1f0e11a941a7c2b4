"""The agent: runs on this machine, through systemd, what the engine scheduled here.

`Agent.run()` runs five (six) parts in one task group:

* the heart (`agent.heart`): `machines/<id>` on a kept-alive lease, re-attached after a restart;
* the schedule watch: `schedule/<own id>/` and nothing else (a `PrefixWatcher`, which resumes
  from its last revision after an outage and re-reads after a compaction);
* a `ReconcileLoop` pass on every schedule change, on every systemd change to a unit of ours, and
  on a slow safety tick: snapshot (`local_units`), pure plan (`plan_agent`), execute
  (`apply_agent_tasks`);
* a follower of the `UnitManager`'s change feed that triggers the loop;
* the state publisher (`agent.publisher`), which holds back the units a pass is about to start
  until their start job has run (or ended);
* the container network (`agent.network.agent`), given a kernel: this machine's subnet lease
  and its routes to the other machines, once `network/config` is set.

Invariants:
* The agent acts only on a schedule it has read. Before the first read nothing is planned; when
  etcd is unreachable or slow it keeps planning from the last schedule it saw. It never takes
  "etcd is away" for "nothing is scheduled", so an outage stops nothing. When etcd is back, the
  watch resumes, and the units that were moved elsewhere meanwhile are stopped and unloaded.
* Restarting the agent restarts no unit: the plan from a fresh snapshot leaves a running unit
  with the scheduled hash alone, and the heart re-attaches to the machine's lease.
* A schedule entry whose name could escape the units directory is refused (logged, never
  written); an entry that cannot be decoded is logged and the last good one kept.
* The snapshot's systemd states are re-read only for the units systemd signalled about since
  they were last read (and for new files); all of them at start, after a reload or a
  reconnection, and at least once per safety tick. systemd signals every change of a unit's
  states, so the others are as they were read, and a thousand units that start at once do not
  make every pass read a thousand states.
* A pass plans against the newest schedule it has: when more entries arrived while it read unit
  files from etcd (the engine writes a burst in several transactions), it takes them too (up to
  `CATCH_UP` times), so a burst is one pass and one `daemon-reload`, not several.
* Unit file text comes from `units/<name>` in etcd, checked against the scheduled hash, and is
  cached by hash; a unit whose stored file no longer has the scheduled hash waits for the engine.
  The records a pass needs are read up to 128 in one call (a failover's hundreds are a few
  calls, not hundreds).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from pathlib import Path

import structlog

from agent.executor import STOP_TIMEOUT, apply_agent_tasks, local_units
from agent.heart import Heart
from agent.intents import INTENTS_FILE, LaunchIntents
from agent.network.agent import NetworkAgent
from agent.network.executor import NetworkKernel
from agent.network.netlink import NetlinkKernel
from agent.plan import LocalUnit, ReloadSystemd, StartUnit, UnloadUnit, plan_agent
from agent.publisher import StatePublisher
from agent.systemd.dbus import DbusUnitManager
from agent.systemd.files import SYSTEM_DROPINS, default_container_program
from agent.systemd.port import ChangeFeed, UnitManager, UnitStatus
from fleetd import __version__
from fleetd.core.model import AGENT_LEASE_TTL, Machine, Placement
from fleetd.core.names import unit_file_name_problem
from fleetd.core.pod_address import POD_ADDRESS_DIR
from fleetd.core.states import JobState
from fleetd.registry.client import EtcdClient, KeyValue
from fleetd.registry.codec import CodecError, decode_placement, decode_unit
from fleetd.registry.errors import EtcdError
from fleetd.registry.keys import Keys
from fleetd.registry.watch import Changes, PrefixWatcher, Snapshot
from fleetd.runtime.loop import ReconcileLoop
from fleetd.runtime.metrics import Metrics, unserved

log = structlog.get_logger(__name__)

RECONCILE_INTERVAL = 30.0  # the safety tick; changes are acted on as they come
FETCH_BATCH = EtcdClient.MAX_TXN_OPS  # unit records read in one etcd call
FETCHES_IN_FLIGHT = 4  # such calls at once (a failover reads hundreds of records)
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
CATCH_UP = 3
"""How many times a pass takes the newer schedule that arrived while it read unit files."""


class UnitFilesUnavailable(Exception):
    """Some scheduled unit files could not be read from etcd; the pass is retried."""


class Agent:
    """One machine's agent; see the module docstring."""

    def __init__(
        self,
        client: EtcdClient,
        keys: Keys,
        manager: UnitManager,
        machine: Machine,
        *,
        ttl: int = AGENT_LEASE_TTL,
        reconcile_interval: float = RECONCILE_INTERVAL,
        stop_timeout: float = STOP_TIMEOUT,
        version: str = __version__,
        intents: LaunchIntents | None = None,
        metrics: Metrics | None = None,
        network_kernel: NetworkKernel | None = None,
        forwarding_file: Path | None = None,
        pod_addresses: Path | None = None,
    ) -> None:
        self._client = client
        self.metrics = metrics if metrics is not None else unserved()
        self._keys = keys
        self._manager = manager
        self.machine = machine
        self._stop_timeout = stop_timeout
        self.heart = Heart(client, keys, machine, ttl=ttl, version=version)
        self.publisher = StatePublisher(
            client, keys, machine.id, manager, self.heart, pod_addresses=pod_addresses
        )
        self.network = (
            NetworkAgent(
                client, keys, machine, self.heart, network_kernel, forwarding_file=forwarding_file
            )
            if network_kernel is not None
            else None
        )
        self.intents = (
            intents
            if intents is not None
            else LaunchIntents(manager.units_directory / INTENTS_FILE)
        )
        self.loop = ReconcileLoop("agent", self._pass, interval=reconcile_interval)
        self.schedule: dict[str, Placement] | None = None  # None until read once
        self.schedule_revision = 0
        self.schedule_changes = 0  # schedule reads that changed it, so far
        self._prefix = keys.schedule_of(machine.id)
        self._refused: set[str] = set()  # schedule keys refused (logged once each)
        self._texts: dict[str, str] = {}  # unit file text by hash
        # units unloaded since systemd's last reload by this agent (None: not known yet)
        self._unloaded: set[str] | None = None
        self._ours: set[str] = set()  # names desired or present at the last pass
        self._states: dict[str, UnitStatus] = {}  # systemd's states of the local units, as read
        self._unread: set[str] = set()  # units systemd signalled about since the last read
        self._read_all = True  # every state must be read again (start, reload, reconnection)
        self._read_all_at = -math.inf  # monotonic time of the last full read

    async def run(self) -> None:
        """Run every part until cancelled; units keep running after it ends."""
        log.info(
            "agent starting", machine=self.machine.id, units=str(self._manager.units_directory)
        )
        with self._manager.subscribe() as feed:
            async with asyncio.TaskGroup() as group:
                group.create_task(self.heart.run(), name="agent:heart")
                group.create_task(self.publisher.run(), name="agent:publisher")
                group.create_task(self._watch_schedule(), name="agent:schedule")
                group.create_task(self._follow(feed), name="agent:systemd-changes")
                group.create_task(self.loop.run(), name="agent:reconcile")
                if self.network is not None:
                    group.create_task(self.network.run(), name="agent:network")

    # ---- inputs

    async def _watch_schedule(self) -> None:
        async for batch in PrefixWatcher(self._client, self._prefix):
            match batch:
                case Snapshot(revision, kvs):
                    schedule: dict[str, Placement] = {}
                    for kv in kvs:
                        self._take(schedule, kv, self.schedule or {})
                    self.schedule = schedule
                    changed = True
                case Changes(revision, events):
                    if self.schedule is None:  # a watch from revision 0 starts with a snapshot
                        continue
                    schedule = dict(self.schedule)
                    for event in events:
                        if event.kind == "put":
                            self._take(schedule, event.kv, schedule)
                        else:
                            schedule.pop(self._keys.name_under(self._prefix, event.kv.key), None)
                    changed = bool(events)
                    self.schedule = schedule
            self.schedule_revision = revision
            if changed:
                self.schedule_changes += 1
                self.loop.trigger()

    def _take(
        self, schedule: dict[str, Placement], kv: KeyValue, last: dict[str, Placement]
    ) -> None:
        """Add one schedule entry to `schedule`, unless it is refused or unreadable."""
        name = self._keys.name_under(self._prefix, kv.key)
        problem = unit_file_name_problem(name)
        if problem is not None:
            if kv.key not in self._refused:
                self._refused.add(kv.key)
                log.error("refusing a schedule entry", key=kv.key, problem=problem)
            return
        try:
            schedule[name] = decode_placement(kv.key, kv.value, self.machine.id, name)
        except CodecError as exc:
            log.error("unreadable schedule entry, keeping the last good one", error=str(exc))
            if name in last:
                schedule[name] = last[name]

    async def _follow(self, feed: ChangeFeed) -> None:
        while True:
            changed = await feed.next()
            if changed.everything:
                self._read_all = True
            else:
                self._unread |= changed.names
            if changed.touches(self._ours):
                self.loop.trigger()

    # ---- one pass

    async def _pass(self) -> None:
        if self.schedule is None:
            return  # not read yet: acting now would take "unknown" for "nothing scheduled"
        desired, seen = dict(self.schedule), self.schedule_changes
        current = await self._read_local_units()
        self._ours = desired.keys() | current.keys()
        unreadable = await self._fetch_unit_files(desired, current)
        for _ in range(CATCH_UP):  # the schedule grew while the files were read: take it all
            if self.schedule_changes == seen:
                break
            desired, seen = dict(self.schedule), self.schedule_changes
            self._ours = desired.keys() | current.keys()
            unreadable = await self._fetch_unit_files(desired, current)
        tasks = plan_agent(desired, current, self._texts, self._unloaded)
        if tasks:
            unloads = {task.unit for task in tasks if isinstance(task, UnloadUnit)}
            if self._unloaded is not None:
                self._unloaded |= unloads
            starting = {task.unit for task in tasks if isinstance(task, StartUnit)}
            self.publisher.hold(starting)  # their first published state is their start's
            try:
                await apply_agent_tasks(
                    self._manager,
                    tasks,
                    self.intents,
                    stop_timeout=self._stop_timeout,
                    metrics=self.metrics,
                    on_started=self.publisher.started,
                )
            finally:
                self.publisher.release(starting)
            if any(isinstance(task, ReloadSystemd) for task in tasks):
                self._unloaded = set()  # the reload came after this plan's unloads
        wanted = {placement.hash for placement in desired.values()}
        self._texts = {h: text for h, text in self._texts.items() if h in wanted}
        if unreadable:
            raise UnitFilesUnavailable(
                f"{unreadable} scheduled unit file(s) could not be read from etcd"
            )

    async def _read_local_units(self) -> dict[str, LocalUnit]:
        """The snapshot: every unit file, with the states of those that may have changed read
        again (see the module docstring), and the launch intents."""
        files = await self._manager.list_unit_files()
        now = time.monotonic()
        read_all = self._read_all or now - self._read_all_at >= self.loop.interval
        names = {n for n in files if read_all or n in self._unread or n not in self._states}
        self._read_all, self._unread = False, set()
        try:
            fresh = await self._manager.unit_states(sorted(names)) if names else {}
        except BaseException:
            self._read_all |= read_all
            self._unread |= names
            raise
        if read_all:
            self._read_all_at = now
        self._states = {name: fresh.get(name) or self._states[name] for name in files}
        return local_units(files, self._states, self.intents)

    async def _fetch_unit_files(
        self, desired: dict[str, Placement], current: dict[str, LocalUnit]
    ) -> int:
        """Read the unit files the plan will need; returns how many reads etcd failed."""
        needed = [
            placement
            for name, placement in sorted(desired.items())
            if placement.desired is not JobState.INACTIVE
            and placement.hash not in self._texts
            and (name not in current or current[name].hash != placement.hash)
        ]
        if not needed:
            return 0
        batches = [needed[i : i + FETCH_BATCH] for i in range(0, len(needed), FETCH_BATCH)]
        limit = asyncio.Semaphore(FETCHES_IN_FLIGHT)

        async def fetch(batch: list[Placement]) -> int:
            async with limit:
                return await self._fetch(batch)

        return sum(await asyncio.gather(*map(fetch, batches)))

    async def _fetch(self, placements: list[Placement]) -> int:
        """Cache the texts of the unit files of `placements`, read in one call; returns how many
        could not be read (all of them when etcd failed the call)."""
        keys = [self._keys.unit(placement.unit) for placement in placements]
        try:
            kvs = await self._client.get_many(keys)
        except EtcdError as exc:
            units = [placement.unit for placement in placements]
            log.warning("cannot read unit files from etcd", units=units, error=str(exc))
            return len(placements)
        for placement, key in zip(placements, keys, strict=True):
            self._keep_text(placement, kvs.get(key))
        return 0

    def _keep_text(self, placement: Placement, kv: KeyValue | None) -> None:
        """Cache the text of `placement`'s unit file from its record `kv`, if it has the
        scheduled hash."""
        if kv is None:
            log.debug("scheduled unit has no unit record yet", unit=placement.unit)
            return
        try:
            record = decode_unit(kv.key, kv.value)
        except CodecError as exc:
            log.error("unreadable unit record", unit=placement.unit, error=str(exc))
            return
        if record.hash != placement.hash:
            log.debug(
                "unit changed since it was scheduled, waiting for the engine",
                unit=placement.unit,
                scheduled=placement.hash,
                stored=record.hash,
            )
            return
        text = record.unit_file.serialize()
        if hashlib.sha1(text.encode("utf-8")).hexdigest() != placement.hash:
            log.error("unit record does not match its hash", unit=placement.unit)
            return
        self._texts[placement.hash] = text


async def run_agent_on_systemd(
    client: EtcdClient,
    keys: Keys,
    machine: Machine,
    *,
    units_directory: Path,
    ttl: int,
    bus_address: str | None = None,
    metrics: Metrics | None = None,
) -> None:
    """fleetd's agent component: connect to systemd (retrying, logged), then run the agent.

    The machine registers only once systemd answers: a host whose systemd cannot be reached
    should not attract units. A lost bus later is reconnected without stopping the agent.
    """
    manager = DbusUnitManager(
        units_directory,
        bus_address=bus_address,
        dropins=SYSTEM_DROPINS,
        container_program=default_container_program(),
    )
    async with asyncio.TaskGroup() as group:
        group.create_task(manager.run(), name="agent:dbus")
        await manager.wait_connected()
        agent = Agent(
            client,
            keys,
            manager,
            machine,
            ttl=ttl,
            metrics=metrics,
            network_kernel=NetlinkKernel(),
            forwarding_file=IP_FORWARD,
            pod_addresses=POD_ADDRESS_DIR,
        )
        group.create_task(agent.run(), name="agent:main")
