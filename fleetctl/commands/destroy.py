"""`fleetctl destroy UNIT...`: remove units from the cluster, stopping them where they run.

Deletes each named unit; a unit that does not exist is skipped silently, and when none of them
existed fleet's `Units not found in registry` goes to stderr (exit 0). By default it then
waits until each deleted unit is gone: out of the registry *and* no machine reporting a state
for it (stopped and unloaded), printing `Destroyed X` as each goes. `--no-block` prints
`Destroyed X` right after the delete. fleet had this test inverted (it waited only with
`--no-block`); pyfleet waits when asked to block. Exit 0, or 1 if a delete or a wait failed.

The deletes go out concurrently (`fleetctl.bulk`, at most `MAX_IN_FLIGHT` at a time); their
results, and the `Destroyed X` lines of `--no-block`, are printed in name order, fleet's order.
"""

from __future__ import annotations

import typer

from fleetctl.bulk import each
from fleetctl.client import FleetctlError
from fleetctl.commands.common import (
    NO_BLOCK,
    BlockAttemptsOption,
    NoBlockOption,
    UnitsArgument,
    block_attempts,
    no_units_given,
    unit_names,
)
from fleetctl.session import Session
from fleetctl.wait import wait_for_destroyed


def destroy(
    ctx: typer.Context,
    units: UnitsArgument = None,
    block_attempts_flag: BlockAttemptsOption = 0,
    no_block: NoBlockOption = False,
) -> None:
    """Destroy one or more units in the cluster."""
    session = Session.of(ctx)
    attempts = block_attempts(no_block, block_attempts_flag)

    def run_destroy() -> int:
        out = session.out
        if not units:
            return no_units_given(session)
        code = 0
        deleted = []
        for name, existed in each(session.client.destroy_unit, sorted(unit_names(units))):
            if isinstance(existed, FleetctlError):
                out.error(f"Error destroying units: {existed}")
                out.unit(name, error=str(existed))
                code = 1
            elif existed:
                deleted.append(name)
        if code == 0 and not deleted:
            out.note("Units not found in registry")
            return 0

        def gone(name: str) -> None:
            out.say(f"Destroyed {name}")
            out.unit(name, destroyed=True)

        if attempts == NO_BLOCK:
            for name in deleted:
                gone(name)
            return code
        with out.progress(len(deleted), f"destroy: waiting for {len(deleted)} units") as advance:

            def gone_advance(name: str) -> None:
                gone(name)
                advance()

            failures = wait_for_destroyed(session.client, deleted, attempts, gone_advance)
        for name, message in failures.items():
            out.error(f"Error waiting for units: {message}")
            out.unit(name, error=message)
        return 1 if failures else code

    session.run(run_destroy)
