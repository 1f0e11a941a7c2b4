"""`fleetctl stop UNIT...`: stop launched units, leaving them loaded on their machines.

Only units already in the registry count; when none of the names is there, stderr says
`Units not found in registry` and the exit code is 0. A non-global unit whose current state is
`inactive` cannot be stopped: `Unable to stop unit X in state inactive`, exit 1. pyfleet checks
every unit before changing any (fleet had set the earlier units' state by then). Units already
`loaded` are skipped. The rest get desired state `loaded` and are waited for; stderr ends with
`Successfully stopped units [a b].`.
"""

from __future__ import annotations

import typer

from fleetctl.commands.common import (
    BlockAttemptsOption,
    NoBlockOption,
    UnitsArgument,
    block_attempts,
    no_units_given,
    registry_units,
    retarget_units,
)
from fleetctl.session import Session
from fleetd.core.states import JobState


def stop(
    ctx: typer.Context,
    units: UnitsArgument = None,
    block_attempts_flag: BlockAttemptsOption = 0,
    no_block: NoBlockOption = False,
) -> None:
    """Instruct systemd to stop one or more units in the cluster."""
    session = Session.of(ctx)
    attempts = block_attempts(no_block, block_attempts_flag)

    def run_stop() -> int:
        out = session.out
        if not units:
            return no_units_given(session)
        found = registry_units(session, units)
        if not found:
            return 0
        for unit in found:
            if not unit.is_global and unit.current_state == JobState.INACTIVE:
                out.error(f"Unable to stop unit {unit.name} in state {JobState.INACTIVE}")
                return 1
        stopping = []
        for unit in found:
            if not unit.is_global and unit.current_state == JobState.LOADED:
                out.debug(f"Unit({unit.name}) already {JobState.LOADED}, skipping.")
            else:
                stopping.append(unit)
        return retarget_units(
            session, stopping, JobState.LOADED, verb="stop", done="stopped", attempts=attempts
        )

    session.run(run_stop)
