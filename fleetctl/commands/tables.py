"""What the three `list-*` commands share: `--fields` parsing, fleet's flags, error lines.

Invariants: fields are validated before any request (`Invalid key in output format: "x"`,
exit 1); in JSON mode each row is an object keyed by the selected field names, with full values
(no truncation, no `-`: an empty value is `null`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeVar

import typer

from fleetctl.client import FleetConnectionError, FleetctlError
from fleetctl.session import Session
from fleetd.core.names import go_quote

Row = TypeVar("Row")

NoLegendOption = Annotated[
    bool, typer.Option("--no-legend", help="Do not print a legend (column headers).")
]


class FieldsError(FleetctlError):
    """A `--fields` value naming a field the command does not have."""


def parse_fields(value: str, valid: Sequence[str]) -> list[str]:
    """The comma-separated field names in `value`, each checked against `valid`."""
    if not value:
        raise FieldsError("Must define output format")
    fields = value.split(",")
    for name in fields:
        if name not in valid:
            raise FieldsError(f"Invalid key in output format: {go_quote(name)}")
    return fields


def print_rows(
    session: Session,
    *,
    key: str,
    fields: list[str],
    rows: Sequence[Row],
    cell: Callable[[str, Row], str],
    value: Callable[[str, Row], Any],
    legend: bool,
) -> None:
    """The table (text) or `key: [row objects]` (JSON)."""
    out = session.out
    if out.json:
        out.put(key, [{name: value(name, row) or None for name in fields} for row in rows])
    else:
        out.table(fields, [[cell(name, row) for name in fields] for row in rows], legend)


def retrieval_failed(session: Session, what: str, exc: FleetctlError, hint: bool = False) -> int:
    """fleet's `Error retrieving ... from fleet API (...)`, with a hint when unreachable."""
    session.out.error(f"Error retrieving {what} from fleet API ({exc})")
    if hint or isinstance(exc, FleetConnectionError):
        session.out.note(
            "Possible issues: etcd is unhealthy, fleetd is not running, or fleetd does not "
            f"serve its API at {session.settings.endpoint}"
        )
    return 1
