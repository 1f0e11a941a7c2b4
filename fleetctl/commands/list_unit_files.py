"""`fleetctl list-unit-files`: one row per unit in the registry, from `GET /units`.

Columns (`--fields`, default `unit,hash,dstate,state,target`): `unit`; `hash` of the unit file
(7 hex digits, 40 with `--full`); `dstate` (desired state); `state` (current state, `-` for
global units); `target` (`113f16a7.../IP`, `global` for global units, `-` when unscheduled);
`tmachine` (deprecated alias of `target`, with a warning); `global` (`true`/`false`); `desc` (the
first `[Unit] Description`). No `-l` here, as in fleet: only `--full`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from fleetctl.client import FleetctlError
from fleetctl.commands.tables import NoLegendOption, parse_fields, print_rows, retrieval_failed
from fleetctl.models import Unit
from fleetctl.output import hash_legend, or_empty
from fleetctl.session import Session

FIELDS = ("desc", "dstate", "global", "hash", "state", "target", "tmachine", "unit")
DEFAULT_FIELDS = "unit,hash,dstate,state,target"
TMACHINE_DEPRECATED = 'WARNING: The "tmachine" field is deprecated. Use "target" instead'


def list_unit_files(
    ctx: typer.Context,
    fields: Annotated[
        str, typer.Option("--fields", help=f"Columns to print, from: {','.join(FIELDS)}.")
    ] = DEFAULT_FIELDS,
    full: Annotated[bool, typer.Option("--full", help="Do not ellipsize fields.")] = False,
    no_legend: NoLegendOption = False,
) -> None:
    """List the units that exist in the cluster."""
    session = Session.of(ctx)

    def cell(name: str, unit: Unit) -> str:
        match name:
            case "target" | "tmachine":
                if unit.is_global:
                    return "global"
                return session.legend(unit.machine_id, full) if unit.machine_id else "-"
            case "hash":
                return hash_legend(unit.unit_file.hash, full)
        return or_empty(value(name, unit))

    def run_list_unit_files() -> int:
        try:
            columns = parse_fields(fields, FIELDS)
        except FleetctlError as exc:
            session.out.error(str(exc))
            return 1
        if "tmachine" in columns:
            session.out.warn(TMACHINE_DEPRECATED)
        try:
            units = session.client.units()
            print_rows(
                session,
                key="unitFiles",
                fields=columns,
                rows=units,
                cell=cell,
                value=value,
                legend=not no_legend,
            )
        except FleetctlError as exc:
            return retrieval_failed(session, "list of units", exc)
        return 0

    session.run(run_list_unit_files)


def value(name: str, unit: Unit) -> str:
    """The full value of a field (for JSON, and the cells that print it as is)."""
    match name:
        case "unit":
            return unit.name
        case "hash":
            return unit.unit_file.hash
        case "dstate":
            return unit.desired_state
        case "state":
            return "" if unit.is_global else unit.current_state
        case "target" | "tmachine":
            return "global" if unit.is_global else unit.machine_id
        case "global":
            return "true" if unit.is_global else "false"
        case "desc":
            return unit.description
    raise AssertionError(name)
