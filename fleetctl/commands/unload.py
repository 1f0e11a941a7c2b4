"""`fleetctl unload UNIT...`: unschedule units, stopping them first if they run.

Only units already in the registry count (none: `Units not found in registry`, exit 0, as for
`stop`). Non-global units whose current state is already `inactive` are skipped. The rest get
desired state `inactive` and are waited for (`Unit X inactive`); stderr ends with
`Successfully unloaded units [a b].`.
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


def unload(
    ctx: typer.Context,
    units: UnitsArgument = None,
    block_attempts_flag: BlockAttemptsOption = 0,
    no_block: NoBlockOption = False,
) -> None:
    """Unschedule one or more units in the cluster."""
    session = Session.of(ctx)
    attempts = block_attempts(no_block, block_attempts_flag)

    def run_unload() -> int:
        out = session.out
        if not units:
            return no_units_given(session)
        found = registry_units(session, units)
        if not found:
            return 0
        unloading = []
        for unit in found:
            if not unit.is_global and unit.current_state == JobState.INACTIVE:
                out.debug(f"Target state of Unit({unit.name}) already inactive, skipping.")
            else:
                unloading.append(unit)
        return retarget_units(
            session,
            unloading,
            JobState.INACTIVE,
            verb="unload",
            done="unloaded",
            attempts=attempts,
        )

    session.run(run_unload)
