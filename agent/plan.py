"""The agent's planner: from this machine's schedule and what systemd has, to the steps that fix it.

`plan_agent(desired, current, unit_files)` is pure and deterministic. Its inputs:

* `desired`: this machine's schedule, unit name -> `Placement` (hash and desired state);
* `current`: the units in the units directory (`/run/fleet/units/`), unit name -> `LocalUnit`:
  the hash of the file there, systemd's load/active/sub states, and whether the agent started
  the unit at that hash (its launch intent; `None` when no record of it survives);
* `unit_files`: unit file text by hash, for the units that must be written.

Rules (fleet's agent reconciler, with `steps_towards` for the state moves):

* not desired (or desired `inactive`) but present -> `UnloadUnit` (stop, unlink, remove);
* desired, absent -> `WriteUnit`, `LinkUnit`, and `StartUnit` when it should be launched;
* present with another hash -> `UnloadUnit`, then as if absent (how `--replace` takes effect);
* present with the same hash -> the steps from its current job state to the desired one:
  a file systemd has not loaded is linked again, a loaded unit is started, a launched unit
  stopped. A unit is never restarted because the agent restarted: a running unit with the same
  hash gives no task (re-adoption). A launched unit that failed or finished stays as it is:
  the agent started it once at this hash, and it does not try again in a loop.
* a `ReloadSystemd` (one `daemon-reload`) follows the writes and links of units systemd may
  hold an old definition of: units already in the units directory (a changed file, a link made
  again) and units unloaded since the last reload (`unloaded`; all units when that is not
  known). Nothing else needs one, which saves a `daemon-reload` (it re-reads every unit: 0.2 s
  with 160 units, more with more) on the path of every new unit and every unload:
  - systemd (since v246) loads a unit it does not hold from its linked file when a job asks
    for it, re-reading the unit directories when their timestamps changed, so a start after
    the link finds a new file;
  - an unloaded unit is stopped, reset, unlinked and its file removed: systemd drops it from
    memory on its own (garbage collection of an inactive unit nothing refers to). One that
    another unit still refers to stays in memory with its old definition, which is why a
    unit unloaded since the last reload counts as known when it is installed again.

Tasks come in fleet's order: unloads, then writes and links, the reload, stops, starts; by unit
name within each group. A desired unit whose text is not in `unit_files` gets no task (it waits
for a later pass), and a name that could not be a file of the units directory is never planned.

Invariants (property-tested): applying the plan gives the desired state; planning again after
applying gives no task.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from fleetd.core.model import Placement
from fleetd.core.names import unit_file_name_problem
from fleetd.core.states import JobState, Step, steps_towards

NOT_LOADED_STATES = frozenset({"not-found", "stub", ""})
"""systemd load states meaning the unit file is not linked into systemd (it has to be loaded)."""

RUNNING_STATES = frozenset({"active", "activating", "deactivating", "reloading", "refreshing"})
"""systemd active states of a unit that has been started and has not finished."""


@dataclass(frozen=True, slots=True)
class LocalUnit:
    """A unit file in the units directory and systemd's view of it.

    `hash` is the SHA-1 of the file's bytes (the fleet hash of the unit the agent wrote).
    `launched` is the agent's launch intent: True when it started the unit at this hash and has
    not stopped it since, False when it has not, None when no record survives (then it is
    inferred from the active state).
    """

    name: str
    hash: str
    load_state: str = "loaded"
    active_state: str = "inactive"
    sub_state: str = "dead"
    launched: bool | None = None


def is_launched(unit: LocalUnit) -> bool:
    """Whether the agent started the unit at its hash (inferred from systemd without a record)."""
    if unit.launched is not None:
        return unit.launched
    return unit.active_state in RUNNING_STATES or unit.active_state == "failed"


def local_job_state(unit: LocalUnit) -> JobState:
    """The job state a present unit is in: inactive (not loaded), loaded or launched.

    A unit systemd has not loaded is inactive unless it still runs (its link was removed under
    it): it then counts as launched, so that linking it again does not start it a second time.
    """
    launched = is_launched(unit)
    if unit.load_state in NOT_LOADED_STATES and not launched:
        return JobState.INACTIVE
    return JobState.LAUNCHED if launched else JobState.LOADED


@dataclass(frozen=True, slots=True)
class WriteUnit:
    """Write `text` (whose hash is `hash`) to `<units directory>/<unit>`."""

    unit: str
    hash: str
    text: str
    reason: str


@dataclass(frozen=True, slots=True)
class LinkUnit:
    """Link the unit file into systemd as a runtime unit (`LinkUnitFiles`, runtime, force)."""

    unit: str
    reason: str


@dataclass(frozen=True, slots=True)
class ReloadSystemd:
    """One `daemon-reload`, so systemd reads the files written, linked or removed before it."""

    reason: str


@dataclass(frozen=True, slots=True)
class StopUnit:
    """Stop the unit (whose file has hash `hash`); it stays loaded."""

    unit: str
    hash: str
    reason: str


@dataclass(frozen=True, slots=True)
class StartUnit:
    """Start the unit (`StartUnit`, mode `replace`), whose file has hash `hash`."""

    unit: str
    hash: str
    reason: str


@dataclass(frozen=True, slots=True)
class UnloadUnit:
    """Stop the unit, reset its failed state, unlink it and remove its file."""

    unit: str
    reason: str


AgentTask = WriteUnit | LinkUnit | ReloadSystemd | StopUnit | StartUnit | UnloadUnit


def task_name(task: AgentTask) -> str:
    """A short name for logs: `write`, `link`, `reload`, `stop`, `start`, `unload`."""
    return _TASK_NAMES[type(task)]


_TASK_NAMES: dict[type, str] = {
    WriteUnit: "write",
    LinkUnit: "link",
    ReloadSystemd: "reload",
    StopUnit: "stop",
    StartUnit: "start",
    UnloadUnit: "unload",
}


def _short(hash_: str) -> str:
    return hash_[:7] or "(none)"


@dataclass(slots=True)
class _Plan:
    unloads: list[UnloadUnit]
    loads: list[WriteUnit | LinkUnit]
    stops: list[StopUnit]
    starts: list[StartUnit]

    def tasks(self, known: Callable[[str], bool]) -> list[AgentTask]:
        """The tasks in fleet's order; `known(name)` says whether systemd may hold an old
        definition of the unit in memory: only a write or a link of such a unit needs a reload."""
        stale = {task.unit for task in self.loads if known(task.unit)}
        reload: list[ReloadSystemd] = []
        if stale:
            noun = "unit" if len(stale) == 1 else "units"
            reload = [ReloadSystemd(f"{len(stale)} {noun} changed or linked again")]
        return [*self.unloads, *self.loads, *reload, *self.stops, *self.starts]


def _converge(plan: _Plan, placement: Placement, unit: LocalUnit) -> None:
    """Tasks for a present unit whose file already has the desired hash."""
    state = local_job_state(unit)
    if unit.load_state in NOT_LOADED_STATES and state is JobState.LAUNCHED:
        why = f"unit runs but systemd has no file for it (load state {unit.load_state!r})"
        plan.loads.append(LinkUnit(unit.name, why))
    for step in steps_towards(state, placement.desired):
        if step is Step.LOAD:
            why = f"unit file in place but not loaded by systemd (load state {unit.load_state!r})"
            plan.loads.append(LinkUnit(unit.name, why))
        elif step is Step.START:
            why = f"desired {placement.desired}, current {state}"
            plan.starts.append(StartUnit(unit.name, placement.hash, why))
        elif step is Step.STOP:
            why = f"desired {placement.desired}, current {state}"
            plan.stops.append(StopUnit(unit.name, placement.hash, why))


def _install(plan: _Plan, placement: Placement, text: str, reason: str) -> None:
    """Tasks that write, load and (if launched) start a unit that is absent or was unloaded."""
    name = placement.unit
    plan.loads.append(WriteUnit(name, placement.hash, text, reason))
    plan.loads.append(LinkUnit(name, reason))
    if placement.desired is JobState.LAUNCHED:
        plan.starts.append(StartUnit(name, placement.hash, f"{reason}; desired launched"))


def plan_agent(
    desired: Mapping[str, Placement],
    current: Mapping[str, LocalUnit],
    unit_files: Mapping[str, str],
    unloaded: Collection[str] | None = None,
) -> list[AgentTask]:
    """The tasks that take this machine's units from `current` to `desired`; see the module doc.

    `unloaded` names the units unloaded since systemd's last reload (None: not known, as after
    the agent started), whose old definitions systemd may still hold."""
    plan = _Plan([], [], [], [])
    for name in sorted(desired.keys() | current.keys()):
        if unit_file_name_problem(name) is not None:
            continue
        want = desired.get(name)
        have = current.get(name)
        if want is not None and want.desired is JobState.INACTIVE:
            want = None
        if want is None:
            if have is not None:
                plan.unloads.append(UnloadUnit(name, "no longer scheduled on this machine"))
            continue
        if have is not None and have.hash == want.hash:
            _converge(plan, want, have)
            continue
        text = unit_files.get(want.hash)
        if text is None:
            continue  # the unit file is not at hand yet: leave the unit as it is
        if have is None:
            _install(plan, want, text, "scheduled on this machine")
        else:
            change = f"unit file changed ({_short(have.hash)} -> {_short(want.hash)})"
            plan.unloads.append(UnloadUnit(name, change))
            _install(plan, want, text, change)
    if unloaded is None:
        return plan.tasks(lambda name: True)
    return plan.tasks(lambda name: name in current or name in unloaded)
