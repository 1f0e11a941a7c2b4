"""A lease kept alive on its own asyncio task, and the one authority on whether it still holds.

`Lease.grant` asks etcd for a lease; `start()` (or `async with lease`) runs its
keep-alive: one LeaseKeepAlive stream, a ping every ttl/3, so two pings may be
lost or delayed by a busy event loop before the lease is in danger.

Invariants:

- `alive` is computed from the clock on every read: it turns False as soon as
  the TTL has run out since the last ping etcd acknowledged, even if the
  keep-alive task has been starved and has not noticed yet. Code that acts
  as the lease's owner checks `alive` (or races `wait_lost`) before acting.
- Lost is final. Once a reply says TTL <= 0, or no ping has been acknowledged
  for a whole TTL, the lease is lost for good and the task ends; etcd may
  still keep the lease a little longer, but its holder must act as if not.
  Grant a new lease to carry on.
- Transient errors (etcd restarting, stream broken) only make the task
  reconnect with a short backoff; they do not lose the lease by themselves.
- `revoke()` stops the task, marks the lease lost, then revokes it in etcd on a
  best-effort basis (errors are logged, never raised).
"""

from __future__ import annotations

import asyncio
import time
from types import TracebackType
from typing import Self

import structlog

from fleetd.registry.client import EtcdClient
from fleetd.registry.errors import EtcdError, LeaseNotFound

log = structlog.get_logger(__name__)

RETRY_MIN = 0.05  # first reconnect delay after a failed ping, seconds
RETRY_MAX = 1.0


class Lease:
    """A granted lease whose keep-alive runs on its own asyncio task.

    One LeaseKeepAlive bidi stream, a ping every ttl/3.
    """

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

    async def detach(self) -> None:
        """Stop keeping the lease alive without revoking it: etcd drops it after its TTL unless
        a new owner re-attaches in time (an agent restarting within the TTL does)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])

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
        interval = self.ttl / 3
        retry = RETRY_MIN
        failing = False
        try:
            while True:
                remaining = self._expires_at - time.monotonic()
                if remaining <= 0:
                    self._mark_lost(f"no keep-alive acknowledged for {self.ttl}s")
                    return
                sent_at = time.monotonic()
                try:
                    ttl = await stream.ping(self.id, timeout=min(remaining, self._client.timeout))
                except EtcdError as err:
                    if not failing:
                        log.warning("lease keep-alive failing", lease=self.id, error=str(err))
                        failing = True
                    delay, retry = retry, min(retry * 2, RETRY_MAX, interval)
                else:
                    if ttl <= 0:
                        self._mark_lost("etcd reports the lease expired")
                        return
                    self._expires_at = sent_at + ttl
                    if failing:
                        log.info("lease keep-alive recovered", lease=self.id, ttl=ttl)
                        failing = False
                    delay, retry = interval, RETRY_MIN
                await asyncio.sleep(max(0.0, min(delay, self._expires_at - time.monotonic())))
        except Exception:
            log.exception("lease keep-alive crashed", lease=self.id)
            self._mark_lost("keep-alive crashed")
        finally:
            stream.close()
