"""Read the local units, and apply the agent's planned tasks through the `UnitManager`.

`read_local_units` is the agent's snapshot of this machine: the unit files in the units
directory, systemd's states of them (one call for all), and the launch intents; `local_units`
puts the same snapshot together from states read earlier (the agent re-reads only the units
systemd signalled about).

`apply_agent_tasks` performs a plan stage by stage, in the plan's order (unloads, writes and
links, the reload, stops, starts), logging each task with its reason (a unit's write and link as
one line, `load`, fleet's name for the pair: a thousand new units are two thousand lines in the
journal, not three thousand):

* within a stage, each unit's tasks run in order (a unit file is linked after it is written),
  and up to `in_flight` units at once, started in the plan's order: systemd handles concurrent
  jobs, and the D-Bus adapter caps the calls in flight and sends links and unlinks asked for
  together in one call. A start or stop returns once systemd has queued the job, and unloads
  wait for their own stop jobs at the same time, not one after another;
* the first failure ends the pass: no further unit of its stage is started (those already under
  way finish), no later stage runs, and the failure is raised (the reconcile loop retries the
  pass with backoff). With `in_flight=1` everything runs one task at a time, in the plan's order.

What each task does:

* write: the file, and the intent "not launched" at its hash;
* link, reload: the port call of the same name;
* start: `StartUnit`, without waiting for the job (a slow unit must not hold up the others); the
  launch intent is recorded once systemd has queued the job. A start that systemd refuses (a
  bad unit file, a masked unit) is logged with systemd's reason and recorded as launched too: it
  is not retried until the unit's file or desired state changes, and it does not block the
  starts after it. The published state shows what systemd made of the unit;
* stop: `StopUnit`, then the intent "not launched";
* unload: stop, and wait (up to `stop_timeout`) until the unit is no longer running (a stop job
  `done`; after any other result, systemd's state says); only then reset its failed state,
  unlink it and remove its file (fleet#1216: never remove the file of a unit that may still
  run); the intent is forgotten. The stop is marked `unloading`, so nothing asks systemd about
  the unit once it stopped: asking would load it again (see `agent.systemd.port`).

Launch intents are saved in batches within a stage (`LaunchIntents.batched`) and at its end.
Each stage ends with one log line: its name, its number of tasks and its seconds (where a slow
pass spends its time).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import structlog

from agent.intents import LaunchIntents
from agent.plan import (
    AgentTask,
    LinkUnit,
    LocalUnit,
    ReloadSystemd,
    StartUnit,
    StopUnit,
    UnloadUnit,
    WriteUnit,
    task_name,
)
from agent.systemd.port import (
    JOB_DONE,
    Job,
    SystemdError,
    UnitManager,
    UnitRefused,
    UnitStatus,
)
from fleetd.runtime.metrics import Metrics, unserved

log = structlog.get_logger(__name__)

STOP_TIMEOUT = 120.0  # seconds an unload waits for its unit to stop (systemd's default is 90)
STOPPED_STATES = frozenset({"inactive", "failed"})
IN_FLIGHT = 64
"""Units a stage works on at once."""

_STAGES: dict[type, str] = {
    UnloadUnit: "unload",
    WriteUnit: "load",
    LinkUnit: "load",
    ReloadSystemd: "reload",
    StopUnit: "stop",
    StartUnit: "start",
}
_SIDE_BY_SIDE = frozenset({"unload", "load", "stop", "start"})
_TASK_ERRORS = (SystemdError, OSError, ValueError)


class UnitDidNotStop(SystemdError):
    """An unload found its unit still running after the stop: the file stays."""


async def read_local_units(manager: UnitManager, intents: LaunchIntents) -> dict[str, LocalUnit]:
    """The units in the units directory with their systemd states and launch intents."""
    files = await manager.list_unit_files()
    states = await manager.unit_states(sorted(files)) if files else {}
    return local_units(files, states, intents)


def local_units(
    files: Mapping[str, str], states: Mapping[str, UnitStatus], intents: LaunchIntents
) -> dict[str, LocalUnit]:
    """The snapshot the planner takes: each unit file (name -> hash) with its systemd states
    (`states` has every name of `files`) and its launch intent."""
    local: dict[str, LocalUnit] = {}
    for name, hash_ in files.items():
        status = states[name]
        local[name] = LocalUnit(
            name,
            hash_,
            status.load_state,
            status.active_state,
            status.sub_state,
            intents.launched(name, hash_),
        )
    return local


@dataclass(frozen=True, slots=True)
class _Context:
    """What performing any task needs."""

    manager: UnitManager
    intents: LaunchIntents
    stop_timeout: float
    metrics: Metrics
    on_started: Callable[[str, Job | None], None]


async def apply_agent_tasks(
    manager: UnitManager,
    tasks: Sequence[AgentTask],
    intents: LaunchIntents,
    *,
    stop_timeout: float = STOP_TIMEOUT,
    in_flight: int = IN_FLIGHT,
    metrics: Metrics | None = None,
    on_started: Callable[[str, Job | None], None] = lambda unit, job: None,
) -> None:
    """Perform `tasks` stage by stage; raise the first failure (later stages are not run).
    Each task is counted in `metrics` (`agent_unit_operations`), and each failure or refusal.
    `on_started(unit, job)` is called once systemd has queued a unit's start job (`job`), or
    refused to start it (None)."""
    if in_flight < 1:
        raise ValueError("in_flight must be at least 1")
    counted = metrics if metrics is not None else unserved()
    context = _Context(manager, intents, stop_timeout, counted, on_started)
    for stage, group in itertools.groupby(tasks, key=lambda task: _STAGES[type(task)]):
        stage_tasks = list(group)
        began = time.monotonic()
        with intents.batched():
            if stage in _SIDE_BY_SIDE and len(stage_tasks) > 1:
                await _side_by_side(context, stage_tasks, in_flight)
            else:
                for task in stage_tasks:
                    await _perform(context, task)
        seconds = round(time.monotonic() - began, 3)
        log.info("agent stage done", stage=stage, tasks=len(stage_tasks), seconds=seconds)


async def _side_by_side(context: _Context, tasks: list[AgentTask], in_flight: int) -> None:
    """Run the tasks of each unit in order, and at most `in_flight` units at once, started in the
    order of the plan; after a failure no unit is started, and the first failure is raised once
    the units under way are done."""
    chains: dict[str | None, list[AgentTask]] = {}
    for task in tasks:
        chains.setdefault(getattr(task, "unit", None), []).append(task)
    slots = asyncio.Semaphore(in_flight)
    failures: list[BaseException] = []

    async def run(chain: list[AgentTask]) -> None:
        try:
            loading = _loads(chain)
            if loading is not None:  # write and link: one line, as fleet's LoadUnit task
                log.info("agent task", task="load", unit=loading.unit, reason=loading.reason)
            for task in chain:
                await _perform(context, task, logged=loading is None)
        except _TASK_ERRORS as exc:
            failures.append(exc)
        finally:
            slots.release()

    async with asyncio.TaskGroup() as group:
        for chain in chains.values():
            await slots.acquire()
            if failures:
                slots.release()
                break
            group.create_task(run(chain))
    if failures:
        raise failures[0]


def _loads(chain: list[AgentTask]) -> WriteUnit | None:
    """The write of a unit's chain that writes and links it (fleet's LoadUnit), else None."""
    match chain:
        case [WriteUnit() as write, LinkUnit(unit)] if unit == write.unit:
            return write
    return None


async def _perform(context: _Context, task: AgentTask, *, logged: bool = True) -> None:
    """Log one task with its reason (unless `logged` is False: the caller did), count it and
    perform it; a failure is logged, counted and raised."""
    unit = getattr(task, "unit", None)
    operation = task_name(task)
    if logged:
        log.info("agent task", task=operation, unit=unit, reason=task.reason)
    metrics = context.metrics
    metrics.agent_unit_operations.labels(operation).inc()
    try:
        if not await _apply(context, task):
            metrics.agent_unit_operation_failures.labels(operation).inc()
    except _TASK_ERRORS as exc:
        metrics.agent_unit_operation_failures.labels(operation).inc()
        log.warning(
            "agent task failed, leaving the rest of the plan for the next pass",
            task=task_name(task),
            unit=unit,
            error=str(exc),
        )
        raise


async def _apply(context: _Context, task: AgentTask) -> bool:
    """Perform `task`; False when systemd refused it without it being an error to retry."""
    manager, intents = context.manager, context.intents
    match task:
        case WriteUnit(unit, hash_, text, _):
            await manager.write_unit_file(unit, text)
            intents.record(unit, hash_, launched=False)
        case LinkUnit(unit, _):
            await manager.link_unit(unit)
        case ReloadSystemd():
            await manager.reload()
        case StopUnit(unit, hash_, _):
            await manager.stop_unit(unit)
            intents.record(unit, hash_, launched=False)
        case StartUnit(unit, hash_, _):
            try:
                job = await manager.start_unit(unit)
            except UnitRefused as exc:
                log.error(
                    "systemd refused to start the unit; not retrying until it changes",
                    unit=unit,
                    error=exc.message,
                    error_name=exc.error_name,
                )
                intents.record(unit, hash_, launched=True)
                context.on_started(unit, None)
                return False
            intents.record(unit, hash_, launched=True)
            context.on_started(unit, job)
        case UnloadUnit(unit, _):
            await _unload(manager, unit, intents, context.stop_timeout)
    return True


async def _unload(
    manager: UnitManager, unit: str, intents: LaunchIntents, stop_timeout: float
) -> None:
    job = await manager.stop_unit(unit, unloading=True)
    try:
        async with asyncio.timeout(stop_timeout):
            result = await job.result()
    except TimeoutError:
        raise UnitDidNotStop(f"{unit} is still stopping after {stop_timeout}s") from None
    if result != JOB_DONE:  # `done` is a stopped unit; anything else: ask what became of it
        status = (await manager.unit_states([unit]))[unit]
        if status.active_state not in STOPPED_STATES:
            raise UnitDidNotStop(
                f"{unit} is {status.active_state} after its stop job ({result}): keeping its file"
            )
    intents.forget(unit)
    # A failed unit keeps its state until reset; any other is already collected (no error).
    # Resetting costs systemd nothing, asking whether the unit failed would load it again.
    await manager.reset_failed(unit)
    await manager.unlink_unit(unit)
    await manager.remove_unit_file(unit)
