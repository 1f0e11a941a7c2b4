"""A lease kept alive on its own asyncio task, and the one authority on whether it still holds.

`Lease.grant` asks etcd for a lease; `start()` (or `async with lease`) runs its
keep-alive: one LeaseKeepAlive stream, a ping every ttl/3 counted from when the
previous acknowledged ping was sent, so two pings may be lost or delayed before
the lease is in danger.

Invariants:

- `alive` is computed from the clock on every read: it turns False as soon as
  the TTL has run out since the last ping etcd acknowledged was sent, even if
  the keep-alive task has been starved and has not noticed yet. Code that acts
  as the lease's owner checks `alive` (or races `wait_lost`) before acting.
- etcd decides whether the lease is lost, not a local timer alone: etcd never
  renews a lease whose TTL has run out (it revokes it and answers TTL 0), so a
  ping acknowledged with a TTL > 0 proves the lease never lapsed, however late
  the reply is read. The lease is lost when etcd answers TTL <= 0, or when a
  ping sent once the local deadline has passed gets no answer. So a stall of
  the event loop (CPU work, a descheduled process) past the local deadline
  loses the lease only if etcd let it go too; if not, `alive`, False during
  the stall, turns True again with etcd's answer.
- A ping waits for its reply for the client's timeout of loop time it could
  use: a stretch in which CPU work held the loop is not counted, because a
  reply that came in meanwhile is read only once the loop runs again.
- Lost is final. Once lost, the task ends; etcd may still keep the lease a
  little longer, but its holder must act as if not. Grant a new lease to carry on.
- Transient errors (etcd restarting, stream broken) only make the task
  reconnect with a short backoff; they do not lose the lease by themselves.
- `revoke()` stops the task, marks the lease lost, then revokes it in etcd on a
  best-effort basis (errors are logged, never raised).
"""

from __future__ import annotations

import asyncio
import time
from types import TracebackType
from typing import Any, Self

import structlog

from fleetd.registry.client import EtcdClient, LeaseKeepAliveStream
from fleetd.registry.errors import EtcdError, EtcdUnavailable, LeaseNotFound
from fleetd.runtime.logs import ThrottledLog

log = structlog.get_logger(__name__)

RETRY_MIN = 0.05  # first reconnect delay after a failed ping, seconds
RETRY_MAX = 1.0
PING_STEP = 0.05
"""Seconds between two looks at a pending ping (a look more than this late is not charged)."""
PING_LIMIT = 24 * 3600.0
"""The deadline handed to the ping itself: never the one that decides (see `_ping`)."""
LATE_REPORT_INTERVAL = 60.0
LAST_PING_LIMIT = 1.0
"""Seconds the keep-alive `detach(last_ping=True)` sends on the way out may take."""
CANCEL_GRACE = 1.0
"""Seconds a cancelled ping or keep-alive task gets to end. A gRPC stream write can outlive its
cancellation; waiting for it without a bound would hang whoever stops the lease (an agent being
stopped, fleetd shutting down), so it is left to end on its own."""


class Lease:
    """A granted lease whose keep-alive runs on its own asyncio task (see the module)."""

    def __init__(self, client: EtcdClient, lease_id: int, ttl: int, expires_at: float) -> None:
        self.id = lease_id
        self.ttl = ttl
        self._client = client
        self._expires_at = expires_at  # time.monotonic() by which etcd may drop the lease
        self._lost = asyncio.Event()
        self._lost_reason = ""
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def grant(cls, client: EtcdClient, ttl: int) -> Lease:
        """Grant a lease of `ttl` seconds (not yet kept alive: call `start`)."""
        if ttl < 1:
            raise ValueError("a lease TTL is at least 1 second")
        asked_at = time.monotonic()
        lease_id = await client.lease_grant(ttl)
        return cls(client, lease_id, ttl, asked_at + ttl)

    def start(self) -> None:
        """Start the keep-alive task."""
        if self._task is not None:
            raise RuntimeError(f"lease {self.id:x} is already being kept alive")
        if self._lost.is_set():
            raise RuntimeError(f"lease {self.id:x} is lost ({self._lost_reason})")
        self._task = asyncio.create_task(self._keep_alive(), name=f"lease-keepalive-{self.id:x}")

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.revoke()

    @property
    def alive(self) -> bool:
        """False once the lease is known lost or its TTL has run out unacknowledged."""
        return not self._lost.is_set() and time.monotonic() < self._expires_at

    @property
    def lost_reason(self) -> str:
        """Why the lease was lost; "" while it is not."""
        return self._lost_reason

    async def wait_lost(self) -> None:
        """Return once the lease is known lost (or revoked)."""
        await self._lost.wait()

    async def detach(self, *, last_ping: bool = False) -> None:
        """Stop keeping the lease alive without revoking it: etcd drops it after its TTL unless
        a new owner re-attaches in time (an agent restarting within the TTL does).

        `last_ping`: refresh a live lease once more on the way out, so that a new owner has its
        whole TTL to re-attach, not what was left of it since the last keep-alive (a third of
        it less, at worst). The ping gets `LAST_PING_LIMIT` seconds; failing, it is logged."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await _ended(task, "lease keep-alive", self.id)
        if last_ping and self.alive:
            await self._last_ping()

    async def _last_ping(self) -> None:
        stream = self._client.lease_keepalive()
        try:
            ttl = await self._ping(stream, budget=LAST_PING_LIMIT)
            log.debug("lease refreshed on the way out", lease=self.id, ttl=ttl)
        except EtcdError as err:
            log.info("lease not refreshed on the way out", lease=self.id, error=str(err))
        finally:
            stream.close()

    async def revoke(self) -> None:
        """Stop the keep-alive, mark the lease lost and revoke it in etcd (best effort)."""
        await self.detach()
        self._mark_lost("revoked")
        try:
            await self._client.lease_revoke(self.id)
        except LeaseNotFound:
            pass
        except EtcdError as err:
            log.warning(
                "lease revoke failed; etcd drops it after its TTL", lease=self.id, error=str(err)
            )

    def _mark_lost(self, reason: str) -> None:
        if not self._lost.is_set():
            self._lost_reason = reason
            self._lost.set()
            if reason != "revoked":
                log.warning("lease lost", lease=self.id, ttl=self.ttl, reason=reason)

    async def _keep_alive(self) -> None:
        stream = self._client.lease_keepalive()
        late = ThrottledLog(
            log,
            "lease keep-alive ran late: the event loop was blocked",
            interval=LATE_REPORT_INTERVAL,
            lease=self.id,
        )
        retry = RETRY_MIN
        failing = False
        try:
            while True:
                sent_at = time.monotonic()
                overdue = sent_at - self._expires_at  # > 0: this ping decides
                try:
                    ttl = await self._ping(stream)
                except EtcdError as err:
                    stream.close()  # the next ping opens a new stream
                    if overdue >= 0:
                        self._mark_lost(f"no keep-alive acknowledged for {self.ttl}s")
                        return
                    if not failing:
                        log.warning("lease keep-alive failing", lease=self.id, error=str(err))
                        failing = True
                    next_at = time.monotonic() + retry
                    retry = min(retry * 2, RETRY_MAX, self.ttl / 3)
                else:
                    if ttl <= 0:
                        self._mark_lost("etcd reports the lease expired")
                        return
                    self._expires_at = sent_at + ttl
                    if overdue >= 0:
                        log.warning(
                            "lease held: etcd acknowledged a keep-alive sent after its local "
                            "deadline",
                            lease=self.id,
                            late=round(overdue, 3),
                        )
                    if failing:
                        log.info("lease keep-alive recovered", lease=self.id, ttl=ttl)
                        failing = False
                    retry = RETRY_MIN
                    next_at = sent_at + ttl / 3  # from the send: a slow reply delays nothing
                wake_at = min(next_at, self._expires_at)
                await asyncio.sleep(max(0.0, wake_at - time.monotonic()))
                lateness = time.monotonic() - wake_at
                if lateness > self.ttl / 3:
                    late.note(late_ms=round(lateness * 1000))
        except Exception:
            log.exception("lease keep-alive crashed", lease=self.id)
            self._mark_lost("keep-alive crashed")
        finally:
            late.close()
            stream.close()

    async def _ping(self, stream: LeaseKeepAliveStream, budget: float | None = None) -> int:
        """Refresh the lease once; etcd's TTL in reply (<= 0: the lease is gone).

        Raises EtcdError, or EtcdUnavailable when no reply came within `budget` seconds (the
        client's timeout unless given) of loop time the ping could have used. The ping runs as a
        task of its own, and this waits for it in steps of `PING_STEP` without cancelling it: a
        reply that came in while CPU work held the loop completes the ping before the wait's timer
        is looked at (a timer inside the ping would cancel it first and throw the reply away), and a
        step that ends more than a step late is not charged, since the loop, not etcd, was the one
        too slow.
        """
        loop = asyncio.get_running_loop()
        pinging = asyncio.create_task(stream.ping(self.id, timeout=PING_LIMIT))
        limit = budget = self._client.timeout if budget is None else budget
        try:
            while budget > 0:
                step = min(PING_STEP, budget)
                started = loop.time()
                done, _ = await asyncio.wait({pinging}, timeout=step)
                if done:
                    return pinging.result()
                if loop.time() - started <= step + PING_STEP:
                    budget -= step
        finally:
            if not pinging.done():
                pinging.cancel()
                await _ended(pinging, "lease keep-alive ping", self.id)
        raise EtcdUnavailable(f"LeaseKeepAlive: no reply within {limit}s")


async def _ended(task: asyncio.Task[Any], what: str, lease: int) -> None:
    """Wait up to `CANCEL_GRACE` for a cancelled `task` to end; log it if it does not."""
    await asyncio.wait([task], timeout=CANCEL_GRACE)
    if task.done():
        if not task.cancelled():
            task.exception()  # retrieved, so asyncio does not report it again
    else:
        log.warning(f"{what} did not end when cancelled; leaving it", lease=lease)
