"""Blocking: poll the API until units reach a state, in fleet's attempt windows.

Role: the `wait_for_*` functions behind `--block-attempts` / `--no-block`. One *attempt* is a
window of `ATTEMPT_WINDOW` seconds (fleet: 2s) in which every pending unit is polled every
`POLL_INTERVAL` seconds (fleet: 250ms); all units are waited for together. The first polls come
sooner (`FIRST_POLL_INTERVAL`, doubling), between the start and the first regular poll: a
unit that starts in 100 ms is seen then, not a quarter second later, a slow one costs three
extra polls, and the regular polls (and so the windows) keep fleet's 250 ms grid.

Rules (`wait_for`, the one loop every waiter shares):
* `windows=N` gives up after N windows with the waiter's timeout message;
* `windows=None` ("block forever", `--block-attempts=0`) waits on, *unless* the last poll of a
  window says the wait is stuck (an `Observation.stuck` reason, such as the engine's stored
  unplaceable reasons): then it fails after that window, with the reason. This is pyfleet's fix
  for fleet#1348, where `start` of an unplaceable unit hung forever without a word;
* a stuck reason also replaces the plain timeout message when N windows run out;
* `Observation.fatal` fails a unit at once (systemd reports the unit failed).

Each poll reads all pending units at once (`fleetctl.bulk`): one paged list of units or states
when many are pending, else one GET per unit, `MAX_IN_FLIGHT` at a time. A poll that fails is a
poll without news for every unit it covers.

Invariants: time comes only from the module-level `clock` (tests install a fake one that
advances on `sleep`); `POLL_INTERVAL` and `ATTEMPT_WINDOW` are read at each call, so tests may
patch them; units that reach their state in the same poll are reported in the order the names
were given, and failures come back in that order.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from fleetctl.bulk import fetch_states, fetch_units
from fleetctl.client import FleetClient, FleetctlError
from fleetctl.models import Unit, UnitState
from fleetd.core.states import JobState

POLL_INTERVAL = 0.25
FIRST_POLL_INTERVAL = 0.03
ATTEMPT_WINDOW = 2.0

TRANSITIONAL_STATES = frozenset({"activating", "reloading", "deactivating"})


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


clock: Clock = SystemClock()


@dataclass(frozen=True, slots=True)
class Observation:
    """One poll of one unit: reached (`done`), hopeless (`stuck`), or failed (`fatal`)."""

    done: bool = False
    stuck: str | None = None
    fatal: str | None = None


NOT_YET = Observation()

Observer = Callable[[list[str]], Mapping[str, Observation]]


def windows_for(block_attempts: int) -> int | None:
    """fleet's block attempts as windows: N > 0 gives N, anything else waits forever."""
    return block_attempts if block_attempts > 0 else None


def wait_for(
    names: Sequence[str],
    observe: Observer,
    *,
    windows: int | None,
    timeout_message: Callable[[str], str],
    on_done: Callable[[str], None],
) -> dict[str, str]:
    """Poll `observe` until every name is done or failed; return failures by name.

    Polls are `POLL_INTERVAL` apart after the first few; window k ends at the first poll at or
    after k windows' time from the start, when every unit still pending is judged.
    """
    pending = list(dict.fromkeys(names))
    last: dict[str, Observation] = {}
    failures: dict[str, str] = {}
    started = clock.monotonic()
    window = 0
    delay = FIRST_POLL_INTERVAL
    while pending:
        seen = observe(list(pending))
        for name in list(pending):
            last[name] = observation = seen.get(name, NOT_YET)
            if observation.done:
                pending.remove(name)
                on_done(name)
            elif observation.fatal:
                pending.remove(name)
                failures[name] = observation.fatal
        if pending and clock.monotonic() - started >= (window + 1) * ATTEMPT_WINDOW:
            window += 1
            for name in list(pending):
                stuck = last[name].stuck
                if windows is None and stuck:
                    failures[name] = stuck
                elif windows is not None and window >= windows:
                    failures[name] = stuck or timeout_message(name)
                else:
                    continue
                pending.remove(name)
        if pending:
            clock.sleep(_next_sleep(clock.monotonic() - started, delay))
            delay *= 2
    return {name: failures[name] for name in names if name in failures}


def _next_sleep(elapsed: float, delay: float) -> float:
    """Until the next poll: `delay`, but never past the next multiple of `POLL_INTERVAL` since the
    start, so the early polls are extra and the regular ones keep fleet's grid."""
    interval = POLL_INTERVAL
    to_grid = (math.floor(elapsed / interval) + 1) * interval - elapsed
    if to_grid < interval * 1e-6:  # on a grid point, give or take a rounding error
        to_grid += interval
    return min(delay, to_grid)


def observe_unit(name: str, unit: Unit | None, wanted: str) -> Observation:
    """Whether `unit` has reached `wanted`, or why it never will."""
    if unit is None:
        return Observation(stuck=f"unit {name} does not exist")
    if unit.observed_state == wanted:
        return Observation(done=True)
    if unit.unplaceable_reasons and wanted != JobState.INACTIVE:
        return Observation(
            stuck=f"unit {name} cannot be placed: {'; '.join(unit.unplaceable_reasons)}"
        )
    return NOT_YET


REFUSED_LOAD_STATES = frozenset({"bad-setting", "error", "masked", "not-found"})


def _refused_by_systemd(name: str, states: Sequence[UnitState] | None) -> Observation | None:
    """A placed, loaded unit that systemd will never start (its file was refused or masked):
    nothing would end the wait for `launched`, so say why instead."""
    for state in states or ():
        if state.load_state in REFUSED_LOAD_STATES:
            return Observation(
                fatal=f"unit {name} cannot be started: systemd reports load state "
                f"{state.load_state} on {state.machine_id[:8]}"
            )
    return None


def _loaded_not_launched(units: Mapping[str, Unit | None], wanted: str) -> list[str]:
    """The units a wait for `launched` sees loaded: the ones whose systemd state may explain
    why they do not start."""
    if wanted != JobState.LAUNCHED:
        return []
    return [
        name
        for name, unit in units.items()
        if unit is not None and unit.observed_state == JobState.LOADED
    ]


def wait_for_unit_states(
    client: FleetClient,
    names: Sequence[str],
    wanted: str,
    block_attempts: int,
    on_reached: Callable[[Unit], None],
) -> dict[str, str]:
    """Wait until each unit's current state (desired state for global units) is `wanted`."""
    latest: dict[str, Unit] = {}

    def observe(pending: list[str]) -> dict[str, Observation]:
        try:
            units = fetch_units(client, pending)
        except FleetctlError:
            return {}  # a failed poll is a poll without news; the window decides
        latest.update({name: unit for name, unit in units.items() if unit is not None})
        seen = {name: observe_unit(name, unit, wanted) for name, unit in units.items()}
        loaded = [name for name in _loaded_not_launched(units, wanted) if seen[name] is NOT_YET]
        if loaded:
            try:
                states: Mapping[str, list[UnitState]] = fetch_states(client, loaded)
            except FleetctlError:
                states = {}
            for name in loaded:
                seen[name] = _refused_by_systemd(name, states.get(name)) or NOT_YET
        return seen

    return wait_for(
        names,
        observe,
        windows=windows_for(block_attempts),
        timeout_message=lambda name: f"timed out waiting for unit {name} to report state {wanted}",
        on_done=lambda name: on_reached(latest[name]),
    )


def observe_systemd(name: str, states: list[UnitState], seconds: float) -> Observation:
    """Whether systemd runs `name` (loaded and active) on its machine; `seconds` is how long
    the caller will have waited when a stuck reason is reported."""
    if any(s.load_state == "loaded" and s.active_state == "active" for s in states):
        return Observation(done=True)
    failed = [s for s in states if s.active_state == "failed"]
    if failed:
        return Observation(fatal=f"Unit {name} failed: systemd reports {_describe(failed[0])}")
    if any(s.active_state in TRANSITIONAL_STATES for s in states):
        return NOT_YET
    seen = f"systemd reports {_describe(states[0])}" if states else "no state reported"
    return Observation(stuck=f"Failed to find an active unit {name} within {seconds:g}s ({seen})")


def _describe(state: UnitState) -> str:
    return f"{state.load_state or '-'}/{state.active_state or '-'}/{state.sub_state or '-'}"


def wait_for_systemd_active(
    client: FleetClient, units: Sequence[Unit], block_attempts: int
) -> dict[str, str]:
    """Wait until systemd reports each unit loaded and active on its target machine.

    With a block-forever wait, a unit still activating keeps the wait going, a unit that is
    neither active nor on its way after one window fails (fleet's 2s check, without failing
    slow starters), and a failed unit fails at once.
    """
    machine_of = {unit.name: unit.machine_id for unit in units}
    windows = windows_for(block_attempts)
    seconds = (windows or 1) * ATTEMPT_WINDOW

    def observe(pending: list[str]) -> dict[str, Observation]:
        try:
            states = fetch_states(client, pending, machine_of)
        except FleetctlError:
            return {}
        return {name: observe_systemd(name, states[name], seconds) for name in pending}

    return wait_for(
        [unit.name for unit in units],
        observe,
        windows=windows,
        timeout_message=lambda name: f"Failed to find an active unit {name} within {seconds:g}s",
        on_done=lambda name: None,
    )


def wait_for_destroyed(
    client: FleetClient,
    names: Sequence[str],
    block_attempts: int,
    on_gone: Callable[[str], None],
) -> dict[str, str]:
    """Wait until each unit is gone from the registry and no machine reports a state for it."""

    def observe(pending: list[str]) -> dict[str, Observation]:
        try:
            units = fetch_units(client, pending)
            left = [name for name, unit in units.items() if unit is None]
            states = fetch_states(client, left)
        except FleetctlError:
            return {}
        return {name: Observation(done=name in states and not states[name]) for name in pending}

    return wait_for(
        names,
        observe,
        windows=windows_for(block_attempts),
        timeout_message=lambda name: f"timed out waiting for unit {name} to be destroyed",
        on_done=on_gone,
    )
