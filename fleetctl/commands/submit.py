"""`fleetctl submit UNIT...`: store units in the registry without scheduling them.

Creates each unit that is not in the registry yet (from its local file or template), waits for
it to report `inactive` and prints `Unit X inactive`. Units already there are left alone,
unless `--replace` is given and the local file differs. Exit 0, or 1 with
`Error creating units: ...`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from fleetctl.client import FleetctlError
from fleetctl.commands.common import (
    BLOCK_FOREVER,
    ReplaceOption,
    UnitsArgument,
    create_units,
    no_units_given,
)
from fleetctl.session import Session
from fleetd.core.states import Command

SIGNING_DEPRECATED = "WARNING: The signed/verified units feature is DEPRECATED and cannot be used."


def submit(
    ctx: typer.Context,
    units: UnitsArgument = None,
    replace: ReplaceOption = False,
    sign: Annotated[bool, typer.Option("--sign", hidden=True)] = False,
) -> None:
    """Upload one or more units to the cluster without starting them."""
    session = Session.of(ctx)

    def run_submit() -> int:
        if sign:
            session.out.warn(SIGNING_DEPRECATED)
        if not units:
            return no_units_given(session)
        try:
            create_units(session, units, Command.SUBMIT, replace, BLOCK_FOREVER)
        except FleetctlError as exc:
            session.out.error(f"Error creating units: {exc}")
            return 1
        return 0

    session.run(run_submit)
