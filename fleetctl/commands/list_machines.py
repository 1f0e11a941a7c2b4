"""`fleetctl list-machines`: one row per live machine, from `GET /machines`.

Columns (`--fields`, default `machine,ip,metadata`): `machine` (`113f16a7...`, no IP here; the
full id with `--full`), `ip`, `metadata` (`k=v` sorted by key, joined by commas). An API error
prints fleet's `Error retrieving list of active machines from fleet API (...)` and a line of
possible causes, exit 1.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from fleetctl.client import FleetctlError
from fleetctl.commands.tables import NoLegendOption, parse_fields, print_rows, retrieval_failed
from fleetctl.models import Machine
from fleetctl.output import machine_id_legend, metadata_legend, or_empty
from fleetctl.session import Session

FIELDS = ("ip", "machine", "metadata")
DEFAULT_FIELDS = "machine,ip,metadata"


def cell(name: str, machine: Machine, full: bool) -> str:
    match name:
        case "machine":
            return machine_id_legend(machine.id, full)
        case "ip":
            return or_empty(machine.primary_ip)
    return metadata_legend(machine.metadata)


def value(name: str, machine: Machine) -> Any:
    match name:
        case "machine":
            return machine.id
        case "ip":
            return machine.primary_ip
    return dict(machine.metadata)


def list_machines(
    ctx: typer.Context,
    fields: Annotated[
        str, typer.Option("--fields", help=f"Columns to print, from: {','.join(FIELDS)}.")
    ] = DEFAULT_FIELDS,
    full: Annotated[bool, typer.Option("--full", "-l", help="Do not ellipsize fields.")] = False,
    no_legend: NoLegendOption = False,
) -> None:
    """Enumerate the current hosts in the cluster."""
    session = Session.of(ctx)

    def run_list_machines() -> int:
        try:
            columns = parse_fields(fields, FIELDS)
        except FleetctlError as exc:
            session.out.error(str(exc))
            return 1
        try:
            machines = session.client.machines()
        except FleetctlError as exc:
            return retrieval_failed(session, "list of active machines", exc, hint=True)
        print_rows(
            session,
            key="machines",
            fields=columns,
            rows=machines,
            cell=lambda name, machine: cell(name, machine, full),
            value=value,
            legend=not no_legend,
        )
        return 0

    session.run(run_list_machines)
