"""ReconcileLoop: start pass, coalesced triggers, safety tick, failure backoff, cancellation.

No test sleeps and hopes: each waits for a recorded condition under a deadline.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable

import pytest
import structlog

from fleetd.runtime.backoff import Backoff
from fleetd.runtime.loop import ReconcileLoop

DEADLINE = 5.0  # generous: only a hang or a bug gets near it


class Progress:
    """Wakes waiters whenever a pass starts or ends, so tests wait on events, not on time.

    The loop updates its counters in the same step in which a pass returns or raises, before it
    next yields, so a waiter woken at a pass's end sees them already updated.
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Wait until `condition()` holds; fail after DEADLINE seconds."""
        async with asyncio.timeout(DEADLINE):
            while not condition():
                self._event.clear()
                await self._event.wait()


class FakeClock:
    """A clock the test moves by hand; it also wakes waiters whenever the loop reads it."""

    def __init__(self) -> None:
        self.now = 0.0
        self.reads = 0
        self._read = asyncio.Event()

    def __call__(self) -> float:
        self.reads += 1
        self._read.set()
        return self.now

    async def wait_for_reads(self, count: int) -> None:
        target = self.reads + count
        async with asyncio.timeout(DEADLINE):
            while self.reads < target:
                self._read.clear()
                await self._read.wait()


class FixedBackoff(Backoff):
    """Always waits `initial`, so the retry time is known."""

    def next_delay(self) -> float:
        return self.initial


def quick_backoff() -> Backoff:
    return Backoff(initial=0.001, maximum=0.002, rng=random.Random(0))


class Recorder:
    """A reconcile function that records each pass and can be held inside a pass."""

    def __init__(self) -> None:
        self.calls: list[int] = []  # the trigger count seen at the start of each pass
        self.triggers = 0
        self.hold: dict[int, asyncio.Event] = {}  # pass number (1-based) -> release event
        self.fail_first = 0
        self.progress = Progress()

    async def __call__(self) -> None:
        self.calls.append(self.triggers)
        self.progress.notify()
        number = len(self.calls)
        try:
            if number in self.hold:
                await self.hold[number].wait()
            if number <= self.fail_first:
                raise RuntimeError(f"pass {number} failed")
        finally:
            self.progress.notify()

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        await self.progress.wait_until(condition)


@pytest.fixture
async def running() -> AsyncIterator[Callable[[ReconcileLoop], asyncio.Task[None]]]:
    """Start loops as tasks and cancel whatever is left at the end of the test."""
    tasks: list[asyncio.Task[None]] = []

    def start(loop: ReconcileLoop) -> asyncio.Task[None]:
        tasks.append(asyncio.create_task(loop.run()))
        return tasks[-1]

    yield start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_runs_a_pass_at_start(running: Callable[[ReconcileLoop], asyncio.Task[None]]) -> None:
    recorder = Recorder()
    loop = ReconcileLoop("start", recorder, interval=3600)
    running(loop)
    await recorder.wait_until(lambda: loop.passes == 1)
    assert recorder.calls == [0]
    assert (loop.failures, loop.last_error, loop.pending) == (0, None, False)


async def test_a_burst_of_triggers_during_a_pass_causes_exactly_one_more_pass(
    running: Callable[[ReconcileLoop], asyncio.Task[None]],
) -> None:
    recorder = Recorder()
    recorder.hold = {1: asyncio.Event(), 2: asyncio.Event()}
    loop = ReconcileLoop("burst", recorder, interval=3600)

    def trigger() -> None:
        recorder.triggers += 1
        loop.trigger()

    running(loop)
    await recorder.wait_until(lambda: len(recorder.calls) == 1)  # inside the first pass
    for _ in range(100):
        trigger()
    assert loop.pending
    recorder.hold[1].set()
    await recorder.wait_until(lambda: len(recorder.calls) == 2)  # inside the second pass
    assert not loop.pending, "the burst must be consumed by one pass, not queued"
    recorder.hold[2].set()
    await recorder.wait_until(lambda: loop.passes == 2)
    trigger()  # a marker: the next pass must be the one it asked for
    await recorder.wait_until(lambda: loop.passes == 3)
    assert recorder.calls == [0, 100, 101]


async def test_triggers_between_passes_coalesce_too(
    running: Callable[[ReconcileLoop], asyncio.Task[None]],
) -> None:
    recorder = Recorder()
    loop = ReconcileLoop("idle-burst", recorder, interval=3600)
    running(loop)
    await recorder.wait_until(lambda: loop.passes == 1)
    for _ in range(50):
        recorder.triggers += 1
        loop.trigger()
    await recorder.wait_until(lambda: loop.passes == 2)
    recorder.triggers += 1
    loop.trigger()
    await recorder.wait_until(lambda: loop.passes == 3)
    assert recorder.calls == [0, 50, 51]


async def test_the_interval_runs_passes_without_triggers(
    running: Callable[[ReconcileLoop], asyncio.Task[None]],
) -> None:
    recorder = Recorder()
    loop = ReconcileLoop("tick", recorder, interval=0.001)
    running(loop)
    await recorder.wait_until(lambda: loop.passes >= 3)
    assert set(recorder.calls) == {0}  # no trigger was involved


async def test_the_tick_follows_the_clock_and_each_pass_restarts_it(
    running: Callable[[ReconcileLoop], asyncio.Task[None]],
) -> None:
    clock, recorder = FakeClock(), Recorder()
    loop = ReconcileLoop("tick", recorder, interval=0.0625, clock=clock)
    running(loop)
    await recorder.wait_until(lambda: loop.passes == 1)
    assert loop.last_pass_at == 0.0
    clock.now = 0.03125
    loop.trigger()
    await recorder.wait_until(lambda: loop.passes == 2)
    assert loop.last_pass_at == 0.03125
    clock.now = 0.0625  # when the first tick was due, before the triggered pass restarted it
    await clock.wait_for_reads(3)  # the loop has looked at the clock again and stayed idle
    assert loop.passes == 2
    clock.now = 0.09375  # one interval after the triggered pass
    await recorder.wait_until(lambda: loop.passes == 3)
    assert loop.last_pass_at == 0.09375


async def test_triggers_do_not_cut_a_backoff_short(
    running: Callable[[ReconcileLoop], asyncio.Task[None]],
) -> None:
    clock, recorder = FakeClock(), Recorder()
    recorder.fail_first = 1
    backoff = FixedBackoff(initial=0.0625, maximum=0.0625)
    loop = ReconcileLoop("patient", recorder, interval=3600, backoff=backoff, clock=clock)
    with structlog.testing.capture_logs():
        running(loop)
        await recorder.wait_until(lambda: loop.failures == 1)
    for _ in range(10):
        loop.trigger()
    await clock.wait_for_reads(3)  # the loop has looked at the clock again and kept waiting
    assert (loop.passes, loop.pending) == (1, True)
    clock.now = 0.0625  # the backoff delay has passed: the retry serves the triggers
    await recorder.wait_until(lambda: loop.passes == 2)
    assert (loop.failures, loop.last_error, loop.pending) == (1, None, False)


async def test_a_failing_pass_is_logged_retried_and_the_loop_lives_on(
    running: Callable[[ReconcileLoop], asyncio.Task[None]],
) -> None:
    recorder = Recorder()
    recorder.fail_first = 2
    recorder.hold = {3: asyncio.Event()}
    loop = ReconcileLoop("flaky", recorder, interval=3600, backoff=quick_backoff())
    with structlog.testing.capture_logs() as logs:
        task = running(loop)
        await recorder.wait_until(
            lambda: len(recorder.calls) == 3
        )  # the retries came without triggers
    assert (loop.passes, loop.failures) == (2, 2)
    assert isinstance(loop.last_error, RuntimeError)
    assert str(loop.last_error) == "pass 2 failed"
    recorder.hold[3].set()
    await recorder.wait_until(lambda: loop.passes == 3)
    assert loop.failures == 2
    assert loop.last_error is None
    assert not task.done()
    failures = [entry for entry in logs if entry["event"] == "reconcile pass failed"]
    assert [(entry["loop"], entry["failures"]) for entry in failures] == [
        ("flaky", 1),
        ("flaky", 2),
    ]
    assert all(entry["log_level"] == "warning" and entry["exc_info"] for entry in failures)


async def test_a_loop_that_always_fails_keeps_retrying(
    running: Callable[[ReconcileLoop], asyncio.Task[None]],
) -> None:
    recorder = Recorder()
    recorder.fail_first = 10**9
    loop = ReconcileLoop("broken", recorder, interval=3600, backoff=quick_backoff())
    with structlog.testing.capture_logs():
        task = running(loop)
        await recorder.wait_until(lambda: loop.failures >= 5)
    assert not task.done()
    assert loop.passes == loop.failures


async def test_cancellation_ends_run_while_idle(
    running: Callable[[ReconcileLoop], asyncio.Task[None]],
) -> None:
    recorder = Recorder()
    loop = ReconcileLoop("idle", recorder, interval=3600)
    task = running(loop)
    await recorder.wait_until(lambda: loop.passes == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()


async def test_cancellation_ends_run_during_a_pass(
    running: Callable[[ReconcileLoop], asyncio.Task[None]],
) -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def endless_pass() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    loop = ReconcileLoop("endless", endless_pass, interval=3600)
    task = running(loop)
    async with asyncio.timeout(DEADLINE):
        await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled.is_set()
    assert (loop.passes, loop.failures) == (0, 0)  # a cancelled pass is neither


def test_interval_must_be_positive() -> None:
    async def nothing() -> None:
        return None

    with pytest.raises(ValueError, match="interval must be > 0"):
        ReconcileLoop("bad", nothing, interval=0)
