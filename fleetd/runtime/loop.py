"""The one loop primitive: run a reconcile pass at start, on trigger, and on a safety tick.

Every periodic worker in fleetd (engine, agent, state publisher) is a `ReconcileLoop` around
its own `reconcile` coroutine, which does snapshot -> plan -> apply once.

Invariants:
* Passes never overlap: one task runs them one after another.
* Triggers coalesce: `trigger()` sets a flag, so any burst of triggers, before or during a pass,
  causes exactly one more pass.
* After a successful pass the next one runs on trigger, or `interval` seconds after the pass
  ended, whichever comes first (each pass restarts the tick).
* A pass that raises is logged and counted, and the next pass runs after a backoff delay; triggers
  do not cut that delay short (the retry serves them), so an event storm cannot turn a failing
  dependency into a hot loop. A success resets the backoff.
* Only cancellation ends `run()`; an `Exception` from a pass never does.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import structlog

from fleetd.runtime.backoff import Backoff

log = structlog.get_logger(__name__)


class ReconcileLoop:
    def __init__(
        self,
        name: str,
        reconcile: Callable[[], Awaitable[None]],
        *,
        interval: float,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"loop {name!r}: interval must be > 0, got {interval}")
        self.name = name
        self.interval = interval
        self._reconcile = reconcile
        self._backoff = backoff if backoff is not None else Backoff()
        self._clock = clock
        self._wakeup = asyncio.Event()
        self._pending = True  # the pass at start
        self.passes = 0  # passes finished, successful or not
        self.failures = 0  # passes that raised
        self.last_error: BaseException | None = None  # cleared by the next successful pass
        self.last_pass_at: float | None = None  # `clock()` when the last pass finished

    @property
    def pending(self) -> bool:
        """Whether a pass has been requested and has not started yet."""
        return self._pending

    def trigger(self) -> None:
        """Ask for one more pass soon. Call it from the event loop's thread only."""
        self._pending = True
        self._wakeup.set()

    async def run(self) -> None:
        """Run passes until cancelled."""
        deadline = self._clock()
        retrying = False  # after a failure, wait the backoff delay even if triggered
        while True:
            await self._wait(deadline, wake_on_trigger=not retrying)
            self._pending = False
            self._wakeup.clear()
            try:
                await self._reconcile()
            except Exception as error:  # CancelledError is a BaseException: it ends the loop
                delay = self._backoff.next_delay()
                self.failures += 1
                self.last_error = error
                retrying = True
                log.warning(
                    "reconcile pass failed",
                    loop=self.name,
                    failures=self.failures,
                    retry_in=round(delay, 3),
                    exc_info=error,
                )
            else:
                self._backoff.reset()
                self.last_error = None
                retrying = False
                delay = self.interval
            self.passes += 1
            self.last_pass_at = self._clock()
            deadline = self.last_pass_at + delay

    async def _wait(self, deadline: float, *, wake_on_trigger: bool) -> None:
        """Return at `deadline` (by `clock`), or earlier on a trigger if `wake_on_trigger`."""
        while (remaining := deadline - self._clock()) > 0:
            if wake_on_trigger and self._pending:
                return
            if wake_on_trigger:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
            else:
                await asyncio.sleep(remaining)
