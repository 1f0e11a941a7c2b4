"""The engine: campaign, and while leading, plan from the view and apply in fenced batches.

Every fleetd with an engine campaigns for leadership. Only the leader keeps a watch-fed
`ClusterView` and reconciles: one `ReconcileLoop` pass reads the view's snapshot, plans with the
pure `plan_engine`, and writes the tasks through `apply_engine_tasks`. Passes run on every view
change (coalesced) and on a slow safety tick; each pass is bounded by the leader lease's TTL. A tick
finds nothing to do without planning when the view has not changed since a plan that had nothing
to do (the planner is pure, so the same view gives the same empty plan). For `departure_grace`
seconds after a term that began because of an etcd outage (this engine's lease died of missed
keep-alives, or etcd failed its calls), placements on machines that vanished are held, not moved:
the outage expired every machine's lease at once, and their agents are re-registering.

A pass plans incrementally (`plan_engine_delta`) from the board kept after the term's previous
plan and the names the view saw change, which gives the full planner's tasks at the cost of what
changed; it plans in full at the start of a term, while departed machines are held, after a
write that may have been cut short, and whenever the incremental planner cannot be sure.

Leadership ends when the lease is lost or a fenced write fails; the engine then stops acting,
drops its view and campaigns again. The view is read afresh at the start of each term (a term
begins with a full plan anyway): a standby engine that kept it fed would decode every unit file
and placement written in the cluster, on every machine, for a takeover that rarely comes (on the
rig, a third of an agent machine's CPU while units start). Before planning, a pass waits until
the view has seen the engine's own previous writes, so it never plans from a view that predates
them.
"""

from __future__ import annotations

import asyncio
import math
import time

import structlog

from fleetd.core.engine_delta import PlanState, plan_engine_delta
from fleetd.core.engine_plan import plan_engine_full
from fleetd.core.engine_tasks import ClearUnplaceable, EngineTask, MarkUnplaceable, Schedule
from fleetd.engine.executor import Deposed, apply_engine_tasks
from fleetd.engine.leader import Election, Term
from fleetd.engine.view import ClusterView
from fleetd.registry.client import EtcdClient
from fleetd.registry.keys import Keys
from fleetd.runtime.loop import ReconcileLoop
from fleetd.runtime.metrics import Metrics, unserved

log = structlog.get_logger(__name__)

# a full plan of this many units or more runs off the event loop (about 50 ms of planning)
FULL_PLAN_IN_THREAD = 2000


def leader_ttl(reconcile_interval: float) -> int:
    """fleet's lease length: five reconcile intervals, and never under 2 seconds."""
    return max(2, math.ceil(5 * reconcile_interval))


_TASK_KINDS = {
    Schedule: "schedule",
    MarkUnplaceable: "mark_unplaceable",
    ClearUnplaceable: "clear_unplaceable",
}


def task_kind(task: EngineTask) -> str:
    """The metrics label of an engine task."""
    return _TASK_KINDS.get(type(task), "unschedule")


class Engine:
    """One engine candidate; acts only while it leads."""

    def __init__(
        self,
        client: EtcdClient,
        keys: Keys,
        machine_id: str,
        *,
        reconcile_interval: float = 2.0,
        ttl: int | None = None,
        departure_grace: float = 0.0,
        metrics: Metrics | None = None,
    ) -> None:
        self._client = client
        self.metrics = metrics if metrics is not None else unserved()
        self._keys = keys
        self.machine_id = machine_id
        self.reconcile_interval = reconcile_interval
        self.ttl = ttl if ttl is not None else leader_ttl(reconcile_interval)
        self.departure_grace = departure_grace
        self._hold_until = 0.0
        self.view = ClusterView(client, keys, on_change=self._on_change)
        self.election = Election(client, keys, machine_id, ttl=self.ttl)
        self.term: Term | None = None
        self.passes_with_writes = 0
        self._loop: ReconcileLoop | None = None
        self._deposed = asyncio.Event()
        self.leading = asyncio.Event()  # set while this engine leads
        self._written: dict[str, int] = {}
        self._settled: tuple[int, bool] | None = None
        self._kept: PlanState | None = None  # the board after this term's last plan
        self.full_passes = 0
        self.delta_passes = 0

    @property
    def is_leader(self) -> bool:
        return self.term is not None and self.term.lease.alive and not self._deposed.is_set()

    async def run(self) -> None:
        """Campaign, and lead whenever elected, until cancelled."""
        while True:
            term = await self.election.campaign()
            log.info("engine leading", machine=self.machine_id, term=term.revision)
            try:
                await self._lead(term)
                if term.lease.lost_reason not in ("", "revoked"):
                    self.election.outage_seen = True
            finally:
                self.metrics.engine_leader.set(0)
                self.leading.clear()
                self.term = None
                self._loop = None
                await asyncio.shield(term.lease.revoke())
            log.warning("engine lost leadership", machine=self.machine_id, term=term.revision)

    async def _lead(self, term: Term) -> None:
        """Reconcile while `term` lasts; return when it ends."""
        self._deposed.clear()
        self._written = {}
        self._settled = None
        self._kept = None
        self.term = term
        self.leading.set()
        self.metrics.engine_leader.set(1)
        running_loop = asyncio.get_running_loop()
        self._hold_until = 0.0
        if self.election.outage_seen and self.departure_grace > 0:
            # etcd was away: it expired every machine's lease along with ours; their agents are
            # re-registering, so their units are not moved for `departure_grace` seconds
            self.election.outage_seen = False
            self._hold_until = running_loop.time() + self.departure_grace
            running_loop.call_later(self.departure_grace, self._on_change)
            log.info(
                "holding departed machines' units after an etcd outage",
                seconds=self.departure_grace,
            )

        loop = ReconcileLoop("engine", lambda: self._pass(term), interval=self.reconcile_interval)
        self._loop = loop
        feeding = asyncio.create_task(self.view.run(), name="engine:view")
        reconciling = asyncio.create_task(loop.run(), name="engine:reconcile")
        lost = asyncio.create_task(term.lease.wait_lost())
        deposed = asyncio.create_task(self._deposed.wait())
        tasks = (feeding, reconciling, lost, deposed)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.view.forget()
        failed = None if feeding.cancelled() else feeding.exception()
        if failed is not None:
            raise failed  # the view itself failed (not etcd, which it waits out): fleetd stops

    def _on_change(self) -> None:
        if self._loop is not None:
            self._loop.trigger()

    async def _pass(self, term: Term) -> None:
        async with asyncio.timeout(self.ttl):
            await self.view.wait_ready()
            await self.view.wait_for(self._written)
            hold = asyncio.get_running_loop().time() < self._hold_until
            settled = (self.view.generation, hold)
            if settled == self._settled:
                return  # nothing changed since a plan that had nothing to do
            started = time.perf_counter()
            try:
                await self._plan_and_write(term, hold, settled)
            finally:
                self.metrics.engine_pass_seconds.observe(time.perf_counter() - started)

    async def _plan_and_write(self, term: Term, hold: bool, settled: tuple[int, bool]) -> None:
        unplaceable = set(self.view.unplaceable)
        tasks = await self._plan(hold)
        if not tasks:
            self._settled = settled
            self.metrics.engine_unplaceable_units.set(len(unplaceable))
            return
        try:
            written = await apply_engine_tasks(self._client, self._keys, term.fence(), tasks)
        except Deposed as exc:
            self._kept = None
            log.warning("engine write refused", error=str(exc))
            self._deposed.set()
            return
        except BaseException:
            self._kept = None  # some batches may not have been written: plan fully next
            raise
        self._written = written
        self.passes_with_writes += 1
        self._count_written(tasks, unplaceable)

    def _count_written(self, tasks: list[EngineTask], unplaceable: set[str]) -> None:
        """Count the tasks a pass wrote; `unplaceable`: the units with reasons before it."""
        counts: dict[str, int] = {}
        for task in tasks:
            kind = task_kind(task)
            counts[kind] = counts.get(kind, 0) + 1
            if isinstance(task, MarkUnplaceable):
                unplaceable.add(task.unit)
            elif isinstance(task, ClearUnplaceable):
                unplaceable.discard(task.unit)
        for kind, count in counts.items():
            self.metrics.engine_tasks.labels(kind).inc(count)
        self.metrics.engine_placements.inc(counts.get("schedule", 0))
        self.metrics.engine_unplaceable_units.set(len(unplaceable))

    async def _plan(self, hold: bool) -> list[EngineTask]:
        """This pass's tasks: from the kept board and what changed when it can, else in full.

        A full plan of a large cluster runs in a worker thread on a copy of the view, so the
        event loop (the API, the agent, the keep-alives) carries on meanwhile; what changes in
        the view during it is in the change log for the next pass.
        """
        snapshot = self.view.snapshot()
        changes = self.view.take_changes()
        if self._kept is not None and not hold:
            delta = plan_engine_delta(snapshot, self._kept, changes)
            if delta is not None:
                self.delta_passes += 1
                self.metrics.engine_passes.labels("delta").inc()
                return delta
        if len(snapshot.units) >= FULL_PLAN_IN_THREAD:
            snapshot = self.view.copy_snapshot()
            tasks, board = await asyncio.to_thread(plan_engine_full, snapshot, hold_departed=hold)
        else:
            tasks, board = plan_engine_full(snapshot, hold_departed=hold)
        # while held, the board leaves out placements on departed machines: not a state to keep
        self._kept = None if hold else PlanState.after(snapshot, board, tasks)
        self.full_passes += 1
        self.metrics.engine_passes.labels("full").inc()
        return tasks
