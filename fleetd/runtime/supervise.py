"""Structured concurrency for the daemons: named components in one TaskGroup, bounded shutdown.

`run_components` runs each component (agent, engine, API, ...) as a task of one
`asyncio.TaskGroup` and returns or raises once they are all gone:

* `stop` set (SIGTERM/SIGINT via `install_signal_handlers`): every component is cancelled and
  `run_components` returns once they have finished.
* A component raises: the TaskGroup cancels its siblings and the failure propagates as an
  `ExceptionGroup`, so the process dies loudly and systemd restarts it. The failing component is
  logged by name.
* A component returns on its own, without being cancelled: that is a failure too
  (`ComponentExited`), because a daemon with a silently finished part is not doing its job.

Invariant: shutdown is bounded. After stop (or a crash) the components get `shutdown_timeout`
seconds to finish; one that ignores cancellation is logged by name and abandoned, and
`run_components` carries on. The caller should exit the process soon after, since an abandoned
task keeps running until the event loop closes.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Mapping

import structlog

log = structlog.get_logger(__name__)

Component = Callable[[], Awaitable[None]]

# Abandoned component groups, referenced here so they are not garbage-collected mid-flight.
_abandoned: set[asyncio.Task[None]] = set()


class ComponentExited(RuntimeError):
    """A component returned before it was cancelled."""


async def _run_component(name: str, component: Component, exited: asyncio.Event) -> None:
    try:
        await component()
    except Exception:
        log.error("component failed", component=name, exc_info=True)
        exited.set()
        raise
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        return  # it caught the cancellation and finished cleanly: a graceful stop
    log.error("component returned before stop was requested", component=name)
    exited.set()
    raise ComponentExited(f"component {name!r} returned before stop was requested")


async def _run_group(
    components: Mapping[str, Component], tasks: dict[str, asyncio.Task[None]], exited: asyncio.Event
) -> None:
    async with asyncio.TaskGroup() as group:
        for name, component in components.items():
            coroutine = _run_component(name, component, exited)
            tasks[name] = group.create_task(coroutine, name=f"component:{name}")


async def run_components(
    components: Mapping[str, Component], *, stop: asyncio.Event, shutdown_timeout: float = 10.0
) -> None:
    """Run `components` until `stop` is set or one of them fails; see the module docstring."""
    tasks: dict[str, asyncio.Task[None]] = {}
    exited = asyncio.Event()
    group = asyncio.create_task(_run_group(components, tasks, exited), name="fleetd-components")
    waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(exited.wait())]
    try:
        await asyncio.wait([group, *waiters], return_when=asyncio.FIRST_COMPLETED)
    finally:  # also when the caller cancels us: shut down, bounded, before the error propagates
        for waiter in waiters:
            waiter.cancel()
        if not group.done():
            reason = "stop requested" if stop.is_set() else "cancelled"
            reason = "a component exited" if exited.is_set() else reason
            log.info("stopping components", reason=reason, components=sorted(tasks))
            group.cancel()
            await _wait_bounded(group, tasks, shutdown_timeout)
    if group.done():
        if not group.cancelled():
            group.result()  # raises the ExceptionGroup of the components that failed
        return
    errors = [
        error
        for task in tasks.values()
        if task.done() and not task.cancelled() and (error := task.exception()) is not None
    ]
    if errors:
        raise BaseExceptionGroup("fleetd components failed", errors)


async def _wait_bounded(
    group: asyncio.Task[None], tasks: Mapping[str, asyncio.Task[None]], grace: float
) -> None:
    done, _ = await asyncio.wait([group], timeout=grace)
    if done:
        return
    for name, task in sorted(tasks.items()):
        if not task.done():
            log.error("component ignored cancellation, abandoning it", component=name, grace=grace)
    _abandoned.add(group)
    group.add_done_callback(_forget)


def _forget(group: asyncio.Task[None]) -> None:
    _abandoned.discard(group)
    if not group.cancelled():
        group.exception()  # already reported by run_components: keep asyncio from logging it


def install_signal_handlers(stop: asyncio.Event) -> None:
    """Set `stop` on SIGTERM or SIGINT. Call it from the running event loop."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _on_signal, signum, stop)


def _on_signal(signum: int, stop: asyncio.Event) -> None:
    log.info("signal received, stopping", signal=signal.Signals(signum).name)
    stop.set()
