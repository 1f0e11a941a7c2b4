"""`fleetctl load UNIT...`: create units if needed, then schedule them without starting them.

Sets each unit's desired state to `loaded` (skipping units already there), then waits for
`Unit X loaded on M.../IP`, or prints `Triggered unit X load` with `--no-block`. Global units
print `Triggered global unit X load` and are not waited for. A unit that cannot be placed fails
the wait with the engine's reasons (fleet#1348). Exit 0 or 1.
"""

from __future__ import annotations

import typer

from fleetctl.commands.common import (
    BlockAttemptsOption,
    NoBlockOption,
    ReplaceOption,
    UnitsArgument,
    block_attempts,
    create_and_retarget,
    no_units_given,
    wait_triggered,
)
from fleetctl.session import Session
from fleetd.core.states import Command, JobState


def load(
    ctx: typer.Context,
    units: UnitsArgument = None,
    block_attempts_flag: BlockAttemptsOption = 0,
    no_block: NoBlockOption = False,
    replace: ReplaceOption = False,
) -> None:
    """Schedule one or more units in the cluster, first submitting them if necessary."""
    session = Session.of(ctx)
    attempts = block_attempts(no_block, block_attempts_flag)

    def run_load() -> int:
        if not units:
            return no_units_given(session)
        triggered = create_and_retarget(
            session, units, Command.LOAD, JobState.LOADED, replace=replace, attempts=attempts
        )
        if triggered is None:
            return 1
        return wait_triggered(session, triggered, "load", JobState.LOADED, attempts)

    session.run(run_load)
