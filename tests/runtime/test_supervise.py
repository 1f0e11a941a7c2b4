"""run_components: stop cancels everything, shutdown stays bounded, a crash propagates loudly."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
import structlog

from fleetd.runtime.supervise import ComponentExited, install_signal_handlers, run_components

DEADLINE = 5.0  # generous: only a hang or a bug gets near it
T = TypeVar("T")


class Component:
    """A component that runs until cancelled and records what happened to it."""

    def __init__(self, *, ignore_cancellation: bool = False) -> None:
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.finished = asyncio.Event()
        self.release = asyncio.Event()  # lets a component that ignores cancellation finish
        self.ignore_cancellation = ignore_cancellation

    async def __call__(self) -> None:
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            if not self.ignore_cancellation:
                raise
            await self.release.wait()
        finally:
            self.finished.set()


async def within_deadline(awaitable: Awaitable[T]) -> T:
    async with asyncio.timeout(DEADLINE):
        return await awaitable


async def all_started(*components: Component) -> None:
    await within_deadline(asyncio.gather(*(c.started.wait() for c in components)))


def crashing(error: Exception, after: Component) -> Callable[[], Awaitable[None]]:
    async def component() -> None:
        await after.started.wait()
        raise error

    return component


async def test_stop_cancels_every_component() -> None:
    agent, engine = Component(), Component()
    stop = asyncio.Event()
    run = asyncio.create_task(run_components({"agent": agent, "engine": engine}, stop=stop))
    await all_started(agent, engine)
    assert not run.done()
    stop.set()
    await within_deadline(run)
    assert run.result() is None
    assert agent.cancelled.is_set()
    assert engine.cancelled.is_set()
    assert agent.finished.is_set()
    assert engine.finished.is_set()


async def test_a_stop_set_before_start_still_stops_cleanly() -> None:
    agent = Component()
    stop = asyncio.Event()
    stop.set()
    await within_deadline(run_components({"agent": agent}, stop=stop))
    # Whether or not it got to start, no component is left running.
    assert agent.finished.is_set() or not agent.started.is_set()


async def test_a_component_ignoring_cancellation_is_abandoned_after_the_timeout() -> None:
    polite, stubborn = Component(), Component(ignore_cancellation=True)
    stop = asyncio.Event()
    components = {"api": polite, "stubborn": stubborn}
    with structlog.testing.capture_logs() as logs:
        run = asyncio.create_task(run_components(components, stop=stop, shutdown_timeout=0.05))
        await all_started(polite, stubborn)
        stop.set()
        await within_deadline(run)
    # run_components returned while the stubborn component is still running: shutdown is bounded.
    assert stubborn.cancelled.is_set()
    assert not stubborn.finished.is_set()
    assert polite.finished.is_set()
    abandoned = [e for e in logs if e["event"] == "component ignored cancellation, abandoning it"]
    assert [(e["component"], e["log_level"]) for e in abandoned] == [("stubborn", "error")]
    stubborn.release.set()  # let it end so the test leaves no task behind
    await within_deadline(stubborn.finished.wait())


async def test_a_crashing_component_propagates_and_takes_the_others_down() -> None:
    agent = Component()
    error = ValueError("etcd said no")
    stop = asyncio.Event()
    with structlog.testing.capture_logs() as logs, pytest.raises(ExceptionGroup) as caught:
        await within_deadline(
            run_components({"agent": agent, "engine": crashing(error, after=agent)}, stop=stop)
        )
    assert caught.value.exceptions == (error,)
    assert agent.cancelled.is_set()
    assert agent.finished.is_set()
    failed = [e for e in logs if e["event"] == "component failed"]
    assert [(e["component"], e["log_level"]) for e in failed] == [("engine", "error")]
    assert not stop.is_set()


async def test_a_crash_propagates_even_when_a_sibling_ignores_cancellation() -> None:
    stubborn = Component(ignore_cancellation=True)
    error = RuntimeError("boom")
    components: dict[str, Callable[[], Awaitable[None]]] = {
        "stubborn": stubborn,
        "bad": crashing(error, after=stubborn),
    }
    with structlog.testing.capture_logs(), pytest.raises(ExceptionGroup) as caught:
        await within_deadline(
            run_components(components, stop=asyncio.Event(), shutdown_timeout=0.05)
        )
    assert caught.value.exceptions == (error,)
    assert not stubborn.finished.is_set()
    stubborn.release.set()
    await within_deadline(stubborn.finished.wait())


async def test_a_component_that_returns_on_its_own_is_a_failure() -> None:
    agent = Component()

    async def quitter() -> None:
        await agent.started.wait()

    with structlog.testing.capture_logs(), pytest.raises(ExceptionGroup) as caught:
        await within_deadline(
            run_components({"agent": agent, "quitter": quitter}, stop=asyncio.Event())
        )
    (error,) = caught.value.exceptions
    assert isinstance(error, ComponentExited)
    assert "'quitter'" in str(error)
    assert agent.cancelled.is_set()


async def test_a_component_that_finishes_cleanly_when_cancelled_is_a_normal_stop() -> None:
    started = asyncio.Event()

    async def graceful() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return  # cleaned up and done

    stop = asyncio.Event()
    run = asyncio.create_task(run_components({"graceful": graceful}, stop=stop))
    await within_deadline(started.wait())
    stop.set()
    await within_deadline(run)
    assert run.result() is None


async def test_an_error_during_shutdown_propagates() -> None:
    started = asyncio.Event()

    async def messy() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            raise OSError("could not close the socket")

    stop = asyncio.Event()
    run = asyncio.create_task(run_components({"messy": messy}, stop=stop))
    await within_deadline(started.wait())
    stop.set()
    with structlog.testing.capture_logs(), pytest.raises(ExceptionGroup) as caught:
        await within_deadline(run)
    assert [type(e) for e in caught.value.exceptions] == [OSError]


async def test_cancelling_the_supervisor_stops_the_components_first() -> None:
    agent = Component()
    run = asyncio.create_task(run_components({"agent": agent}, stop=asyncio.Event()))
    await all_started(agent)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await within_deadline(run)
    assert agent.finished.is_set()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_signals_set_the_stop_event(signum: signal.Signals) -> None:
    stop = asyncio.Event()
    install_signal_handlers(stop)
    loop = asyncio.get_running_loop()
    try:
        os.kill(os.getpid(), signum)
        await within_deadline(stop.wait())
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        loop.remove_signal_handler(signal.SIGINT)
