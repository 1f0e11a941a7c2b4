"""`fleetctl list-units`: one row per unit state (unit x machine), from `GET /state`.

Columns (`--fields`, default `unit,machine,active,sub`): `unit`, `machine` (`113f16a7.../IP`,
full id with `--full`), `active`, `sub`, `load` (systemd's states), `hash` (7 hex digits,
40 with `--full`) and pyfleet's `address` (the unit's pod on the cluster network, while the
unit is active); `-` for empty values; fleet's tab layout. Exit 0, or 1 on a bad field or an
API error.
"""

from __future__ import annotations

from typing import Annotated

import typer

from fleetctl.client import FleetctlError
from fleetctl.commands.tables import NoLegendOption, parse_fields, print_rows, retrieval_failed
from fleetctl.models import UnitState
from fleetctl.output import hash_legend, or_empty
from fleetctl.session import Session

FIELDS = ("active", "address", "hash", "load", "machine", "sub", "unit")
DEFAULT_FIELDS = "unit,machine,active,sub"


def list_units(
    ctx: typer.Context,
    fields: Annotated[
        str, typer.Option("--fields", help=f"Columns to print, from: {','.join(FIELDS)}.")
    ] = DEFAULT_FIELDS,
    full: Annotated[
        bool, typer.Option("--full", "-l", help="Do not ellipsize machine IDs and hashes.")
    ] = False,
    no_legend: NoLegendOption = False,
) -> None:
    """List the current state of units in the cluster."""
    session = Session.of(ctx)

    def cell(name: str, state: UnitState) -> str:
        match name:
            case "machine":
                return session.legend(state.machine_id, full) if state.machine_id else "-"
            case "hash":
                return hash_legend(state.hash, full)
        return or_empty(value(name, state))

    def run_list_units() -> int:
        try:
            columns = parse_fields(fields, FIELDS)
        except FleetctlError as exc:
            session.out.error(str(exc))
            return 1
        try:
            states = session.client.unit_states()
            print_rows(
                session,
                key="states",
                fields=columns,
                rows=states,
                cell=cell,
                value=value,
                legend=not no_legend,
            )
        except FleetctlError as exc:
            return retrieval_failed(session, "list of unit states", exc)
        return 0

    session.run(run_list_units)


def value(name: str, state: UnitState) -> str:
    """The full value of a field (for JSON, and the cells that print it as is)."""
    return {
        "unit": state.name,
        "machine": state.machine_id,
        "active": state.active_state,
        "sub": state.sub_state,
        "load": state.load_state,
        "hash": state.hash,
        "address": state.pod_address,
    }[name]
