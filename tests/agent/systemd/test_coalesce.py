"""Group commit of one-item requests: few calls, one in flight, errors of one's own item only."""

from __future__ import annotations

import asyncio

import pytest

from agent.systemd.coalesce import Coalescer


class Recorder:
    """A `send` that records its calls, can hold them at a gate, and refuses `bad` items."""

    def __init__(self, bad: frozenset[str] = frozenset()) -> None:
        self.calls: list[list[str]] = []
        self.bad = bad
        self.gate = asyncio.Event()
        self.gate.set()
        self.in_flight = 0
        self.most_in_flight = 0

    async def send(self, items: list[str]) -> None:
        self.calls.append(items)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self.gate.wait()
        finally:
            self.in_flight -= 1
        refused = [item for item in items if item in self.bad]
        if refused:
            raise ValueError(f"refused {refused}")


async def settle() -> None:
    """Let every task that can run, run (a few turns of the event loop)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_requests_made_during_a_call_go_together_into_the_next() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    coalescer = Coalescer(recorder.send)
    first = asyncio.create_task(coalescer.submit("a"))
    await settle()
    assert recorder.calls == [["a"]]  # sent at once
    rest = [asyncio.create_task(coalescer.submit(f"u{i}")) for i in range(50)]
    await settle()
    assert recorder.calls == [["a"]]  # the others wait for the call in flight
    recorder.gate.set()
    await asyncio.gather(first, *rest)
    assert recorder.calls == [["a"], [f"u{i}" for i in range(50)]]
    assert recorder.most_in_flight == 1
    assert coalescer.calls == 2


async def test_batches_are_capped() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    coalescer = Coalescer(recorder.send, max_batch=3)
    tasks = [asyncio.create_task(coalescer.submit(f"u{i}")) for i in range(8)]
    await asyncio.sleep(0)
    recorder.gate.set()
    await asyncio.gather(*tasks)
    assert [len(call) for call in recorder.calls] == [3, 3, 2]


async def test_a_failed_batch_is_retried_one_item_at_a_time() -> None:
    recorder = Recorder(bad=frozenset({"b"}))
    recorder.gate.clear()
    coalescer = Coalescer(recorder.send)
    tasks = {name: asyncio.create_task(coalescer.submit(name)) for name in ("a", "b", "c")}
    await asyncio.sleep(0)
    recorder.gate.set()
    results = await asyncio.gather(*tasks.values(), return_exceptions=True)
    outcome = dict(zip(tasks, results, strict=True))
    assert outcome["a"] is None
    assert outcome["c"] is None
    assert isinstance(outcome["b"], ValueError)
    assert "refused ['b']" in str(outcome["b"])
    assert recorder.calls == [["a", "b", "c"], ["a"], ["b"], ["c"]]


async def test_a_single_failure_is_the_callers_own() -> None:
    coalescer = Coalescer(Recorder(bad=frozenset({"x"})).send)
    with pytest.raises(ValueError, match="refused"):
        await coalescer.submit("x")
    await coalescer.submit("y")  # the coalescer carries on


async def test_a_cancelled_caller_does_not_disturb_the_others() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    coalescer = Coalescer(recorder.send)
    first = asyncio.create_task(coalescer.submit("a"))
    await settle()
    gone = asyncio.create_task(coalescer.submit("b"))
    kept = asyncio.create_task(coalescer.submit("c"))
    await settle()
    gone.cancel()
    recorder.gate.set()
    await asyncio.gather(first, kept)
    assert gone.cancelled()
    assert recorder.calls == [["a"], ["b", "c"]]


def test_max_batch_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        Coalescer(Recorder().send, max_batch=0)
