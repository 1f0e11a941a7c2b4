"""`fleetctl cat UNIT`: print a unit file as the registry holds it.

Prints the unit's options in fleet's serialization, with no newline added (fleet printed the
serialized text verbatim). Exactly one argument: `One unit file must be provided`, exit 1.
A missing unit: `Unit X not found`, exit 1.
"""

from __future__ import annotations

import typer

from fleetctl.client import FleetctlError
from fleetctl.commands.common import UnitsArgument
from fleetctl.session import Session
from fleetd.core.names import mangle_unit_name


def cat(ctx: typer.Context, units: UnitsArgument = None) -> None:
    """Output the contents of a submitted unit."""
    session = Session.of(ctx)

    def run_cat() -> int:
        out = session.out
        if not units or len(units) != 1:
            out.error("One unit file must be provided")
            return 1
        name = mangle_unit_name(units[0])
        try:
            unit = session.client.unit(name)
        except FleetctlError as exc:
            out.error(f"Error retrieving Unit {name}: {exc}")
            return 1
        if unit is None:
            out.error(f"Unit {name} not found")
            return 1
        text = unit.unit_file.serialize()
        out.write(text)
        out.put("unit", unit.to_json())
        out.put("unitFile", text)
        return 0

    session.run(run_cat)
