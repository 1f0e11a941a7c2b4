"""`fleetctl restart [--block-attempts=N] UNIT...`: stop then start units, one after another.

fleet's semantics (fleetctl/restart.go), unit by unit in argument order (a rolling restart):
* no arguments: `No units given` on stderr, exit 0. Units are looked up first, then units
  missing from the registry are created from local files as `start` does (`Unit X inactive`),
  and only the units that were already in the registry are restarted, as in fleet;
* a unit whose current state is `inactive`: `Unable to restart unit X in state inactive` on
  stderr, and the next unit (the exit code stays 0, as in fleet);
* `loaded`: it is started (`Unit X launched on M.../IP`);
* `launched`: it is set to `loaded` and waited for until systemd has stopped it (`Unit X loaded
  on M.../IP`), then set to `launched` and waited for (`Unit X launched on M.../IP`) and until
  systemd reports it active, as `start` waits. fleet waited for `launched` both times, a slip
  that only its slow agent hid (see fleetd's `stop_grace` for how fleet's own client is served);
* the first failure ends the command with exit 1;
* global units: fleet ran `systemctl restart` over SSH where it knew a machine, which for a
  global unit it never did. pyfleet restarts them through the API: `loaded`, then, once no
  machine reports them active, `launched`: `Triggered global unit X restart`, not waited for.
"""

from __future__ import annotations

from collections.abc import Sequence

import typer

from fleetctl.bulk import fetch_states, fetch_units
from fleetctl.client import FleetctlError
from fleetctl.commands.common import (
    BlockAttemptsOption,
    UnitsArgument,
    block_attempts,
    create_units,
    no_units_given,
    unit_names,
    wait_units,
)
from fleetctl.commands.start import check_systemd
from fleetctl.models import Unit
from fleetctl.session import Session
from fleetctl.wait import NOT_YET, Observation, wait_for, windows_for
from fleetd.core.states import Command, JobState


def restart(
    ctx: typer.Context,
    units: UnitsArgument = None,
    block_attempts_flag: BlockAttemptsOption = 0,
) -> None:
    """Instruct systemd to rolling restart one or more units in the cluster."""
    session = Session.of(ctx)
    attempts = block_attempts(False, block_attempts_flag)

    def run_restart() -> int:
        out = session.out
        if not units:
            return no_units_given(session)
        known = fetch_units(session.client, unit_names(units))
        found = [unit for unit in known.values() if unit is not None]
        try:
            create_units(session, units, Command.START, False, attempts)
        except FleetctlError as exc:
            out.error(f"Error creating units: {exc}")
            return 1
        global_units = []
        for unit in found:
            if unit.is_global:
                global_units.append(unit)
            elif unit.current_state == JobState.INACTIVE:
                out.error(f"Unable to restart unit {unit.name} in state {JobState.INACTIVE}")
            elif unit.current_state == JobState.LOADED:
                out.debug(f"Unit({unit.name}) already {JobState.LOADED}, starting.")
                if start_and_wait(session, unit.name, attempts):
                    return 1
            else:
                if set_and_wait(session, unit.name, JobState.LOADED, attempts):
                    return 1
                if start_and_wait(session, unit.name, attempts):
                    return 1
                out.debug(f"Unit({unit.name}) was restarted.")
        return restart_global(session, global_units, attempts)

    session.run(run_restart)


def set_and_wait(session: Session, name: str, state: JobState, attempts: int) -> int:
    """fleet's `setUnitStateAndWait`, waiting for `state` itself; the exit code."""
    try:
        session.client.set_unit_target_state(name, state)
    except FleetctlError as exc:
        session.out.error(f"Error setting target state for unit {name}: {exc}")
        return 1
    return wait_units(session, [name], "restart", state, attempts)


def start_and_wait(session: Session, name: str, attempts: int) -> int:
    """`launched`, then systemd active on its machine, as `start` waits; the exit code."""
    if set_and_wait(session, name, JobState.LAUNCHED, attempts):
        return 1
    unit = session.client.unit(name)
    if unit is None:
        session.out.error(f"Error waiting for unit states: unit {name} does not exist")
        return 1
    return check_systemd(session, [unit], attempts)


def restart_global(session: Session, units: Sequence[Unit], attempts: int) -> int:
    """Stop each global unit everywhere, then launch it again; not waited for after that."""
    if not units:
        return 0
    names = [unit.name for unit in units]
    client = session.client
    try:
        for name in names:
            client.set_unit_target_state(name, JobState.LOADED)

        def observe(pending: list[str]) -> dict[str, Observation]:
            states = fetch_states(client, pending)
            return {
                name: Observation(done=True)
                if all(state.active_state == "inactive" for state in states[name])
                else NOT_YET
                for name in pending
            }

        failures = wait_for(
            names,
            observe,
            windows=windows_for(attempts),
            timeout_message=lambda name: f"timed out waiting for global unit {name} to stop",
            on_done=lambda name: None,
        )
        for name in names:
            client.set_unit_target_state(name, JobState.LAUNCHED)
    except FleetctlError as exc:
        session.out.error(f"Error restarting global units {' '.join(names)} err:{exc}")
        return 1
    for name in names:
        session.out.say(f"Triggered global unit {name} restart")
        session.out.unit(name, triggered="restart", **{"global": True})
    for message in failures.values():
        session.out.error(f"Error restarting global units: {message}")
    return 1 if failures else 0
