"""`fleetctl start UNIT...`: create units if needed, schedule them and start them.

Sets each unit's desired state to `launched` (skipping units already there), waits for
`Unit X launched on M.../IP`, then for systemd to report each unit loaded and active on its
machine. `--no-block` prints `Triggered unit X start` and waits for nothing; global units print
`Triggered global unit X start`. A unit that cannot be placed fails with the engine's reasons
instead of hanging (fleet#1348). Exit 0 or 1.

The systemd check differs from fleet's on purpose: fleet failed after one 2s window even when
told to block forever, so a unit slow to start made `start` fail after it had launched. Here it
uses the same attempts as the state wait; blocking forever, it waits while systemd reports the
unit activating, fails after a window in which it is neither active nor activating, and fails
at once when systemd reports it failed.
"""

from __future__ import annotations

import typer

from fleetctl.commands.common import (
    NO_BLOCK,
    BlockAttemptsOption,
    NoBlockOption,
    ReplaceOption,
    UnitsArgument,
    block_attempts,
    create_and_retarget,
    no_units_given,
    wait_triggered,
)
from fleetctl.models import Unit
from fleetctl.session import Session
from fleetctl.wait import wait_for_systemd_active
from fleetd.core.states import Command, JobState


def start(
    ctx: typer.Context,
    units: UnitsArgument = None,
    block_attempts_flag: BlockAttemptsOption = 0,
    no_block: NoBlockOption = False,
    replace: ReplaceOption = False,
) -> None:
    """Instruct systemd to start one or more units in the cluster, first submitting and loading
    them if necessary."""
    session = Session.of(ctx)
    attempts = block_attempts(no_block, block_attempts_flag)

    def run_start() -> int:
        if not units:
            return no_units_given(session)
        triggered = create_and_retarget(
            session, units, Command.START, JobState.LAUNCHED, replace=replace, attempts=attempts
        )
        if triggered is None:
            return 1
        launched: dict[str, Unit] = {}
        if wait_triggered(
            session, triggered, "start", JobState.LAUNCHED, attempts, reached=launched
        ):
            return 1
        if attempts == NO_BLOCK:
            return 0
        waiting = [launched[unit.name] for unit in triggered if not unit.is_global]
        return check_systemd(session, waiting, attempts)

    session.run(run_start)


def check_systemd(session: Session, launched: list[Unit], attempts: int) -> int:
    """Wait for systemd to run each launched unit (as the launch wait last saw it, with its
    machine) on its machine; the exit code."""
    failures = wait_for_systemd_active(session.client, launched, attempts)
    for name, message in failures.items():
        session.out.error(f"Error waiting for systemd unit states, err: {message}")
        session.out.unit(name, error=message)
    return 1 if failures else 0
