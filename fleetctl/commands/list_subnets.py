"""`fleetctl list-subnets`: one row per machine's subnet lease (pyfleet's, after flannel's
`network/subnets/` records), from `GET /fleet/v1/network/subnets`.

Columns (`--fields`, default `subnet,machine,ip,backend`): `subnet` (`10.244.3.0/24`),
`machine` (`113f16a7...`; the full id with `--full`; `-` when no live machine holds the lease),
`ip` (the machine's public IP), `backend` (`vxlan` or `host-gw`), `vtep` (vxlan's VTEP MAC).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from fleetctl.client import FleetctlError
from fleetctl.commands.tables import NoLegendOption, parse_fields, print_rows, retrieval_failed
from fleetctl.network import Subnet, subnets
from fleetctl.output import machine_id_legend, or_empty
from fleetctl.session import Session

FIELDS = ("backend", "ip", "machine", "subnet", "vtep")
DEFAULT_FIELDS = "subnet,machine,ip,backend"


def value(name: str, row: Subnet) -> Any:
    match name:
        case "subnet":
            return row.subnet
        case "machine":
            return row.machine_id
        case "ip":
            return row.public_ip
        case "backend":
            return row.backend_type
    return str(row.backend_data.get("VtepMAC", ""))


def cell(name: str, row: Subnet, full: bool) -> str:
    if name == "machine":
        return machine_id_legend(row.machine_id, full) if row.machine_id else "-"
    return or_empty(str(value(name, row)))


def list_subnets(
    ctx: typer.Context,
    fields: Annotated[
        str, typer.Option("--fields", help=f"Columns to print, from: {','.join(FIELDS)}.")
    ] = DEFAULT_FIELDS,
    full: Annotated[bool, typer.Option("--full", "-l", help="Do not ellipsize fields.")] = False,
    no_legend: NoLegendOption = False,
) -> None:
    """Enumerate the machines' subnet leases of the container network."""
    session = Session.of(ctx)

    def run_list_subnets() -> int:
        try:
            columns = parse_fields(fields, FIELDS)
        except FleetctlError as exc:
            session.out.error(str(exc))
            return 1
        try:
            rows = subnets(session.client)
        except FleetctlError as exc:
            return retrieval_failed(session, "list of subnets", exc)
        print_rows(
            session,
            key="subnets",
            fields=columns,
            rows=rows,
            cell=lambda name, row: cell(name, row, full),
            value=value,
            legend=not no_legend,
        )
        return 0

    session.run(run_list_subnets)
