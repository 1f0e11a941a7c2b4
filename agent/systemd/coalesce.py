"""Group commit: one-item requests made at the same time become one call that takes them all.

systemd's `DisableUnitFiles` looks through every link in the runtime unit directory on each call,
so unlinking a thousand units one call each costs a thousand scans (87 ms a call with 800 links
on the rig), while one call for all of them costs one. `Coalescer` lets callers keep asking for
one unit each: requests that arrive while a call is in flight wait for it to end and then go
together into the next call.

Invariants:
* At most one call is in flight per `Coalescer`, with at most `max_batch` items.
* `submit(item)` returns once a call that included `item` succeeded, or raises that call's error.
  When a call of several items fails, each of its items is tried again alone, so a caller gets
  the error of its own item, and one bad item fails no other.
* A request whose caller was cancelled is still sent with its batch; its result is dropped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")

MAX_BATCH = 256


class Coalescer(Generic[T]):
    """Sends the items of concurrent `submit` calls in as few calls of `send` as it can."""

    def __init__(
        self, send: Callable[[list[T]], Awaitable[object]], *, max_batch: int = MAX_BATCH
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._send = send
        self._max_batch = max_batch
        self._pending: list[tuple[T, asyncio.Future[None]]] = []
        self._sender: asyncio.Task[None] | None = None
        self.calls = 0  # calls of `send` made so far

    async def submit(self, item: T) -> None:
        """Send `item` with whatever else is waiting; returns once a call with it succeeded."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((item, done))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._drain(), name="systemd:coalesce")
        await done

    async def _drain(self) -> None:
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            try:
                await self._call(batch)
            finally:  # cancelled: nobody will answer these any more
                for _, done in batch:
                    if not done.done():
                        done.cancel()

    async def _call(self, batch: list[tuple[T, asyncio.Future[None]]]) -> None:
        try:
            self.calls += 1
            await self._send([item for item, _ in batch])
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0][1], exc)
                return
            for item, done in batch:  # alone, so each gets its own answer
                try:
                    self.calls += 1
                    await self._send([item])
                except Exception as alone:
                    _settle(done, alone)
                else:
                    _settle(done, None)
            return
        for _, done in batch:
            _settle(done, None)


def _settle(done: asyncio.Future[None], error: Exception | None) -> None:
    if done.done():  # its caller was cancelled
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)
