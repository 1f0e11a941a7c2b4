"""`fleetctl journal [--lines=N] [-f|--follow] [--output=MODE] UNIT`: a unit's journal, without SSH.

fleet ran `journalctl --unit UNIT -n N --output MODE [-f]` over SSH on the unit's machine. pyfleet
asks the API instead (`GET /fleet/v1/units/{name}/journal`): the fleetd that answers fetches the
entries from the fleetd of the unit's machine, so no node needs a shell or an SSH key.

Kept from fleet: the flags (`--lines` default 10, `--follow` and `-f`, `--output` default
`short`; `--ssh-port` and `--sudo` are accepted and unused), and the messages, on stderr with
exit 1: `One unit file must be provided.`, `Unit X does not exist.`, `Unable to retrieve journal
of global unit X.`, `Unit X does not appear to be running.`, `Error retrieving unit X: ...`.

Output modes, as journalctl words them: `short` (`Dec 03 12:00:01 node2 sh[71]: hello`),
`short-iso`, `short-precise`, `cat` (the message only), `json` (one entry per line, as
journalctl prints it) and `json-pretty`. `fleetctl --output json journal UNIT` is the same as
`--output json` after the command: entries one per line, no other document.

`--follow` prints new entries until interrupted (Ctrl-C ends it with exit 0), and ends by itself,
saying why on stderr (exit 0), when the unit moves to another machine, is destroyed, or its
machine leaves the cluster.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Final, NoReturn

import typer

from fleetctl.client import EndpointError, FleetAPIError, FleetctlError
from fleetctl.commands.common import UnitsArgument
from fleetctl.session import Session
from fleetd.core.names import mangle_unit_name
from fleetd.core.states import JobState

DEFAULT_LINES: Final = 10
MAX_LINES: Final = 10_000


def _message(entry: dict[str, Any]) -> str:
    """MESSAGE as text: journalctl sends bytes that are not UTF-8 as a list of numbers, and a
    field over 4096 bytes as null."""
    value = entry.get("MESSAGE")
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(b, int) and 0 <= b < 256 for b in value):
        return bytes(value).decode("utf-8", "replace")
    return "[blob data]"


def _timestamp(entry: dict[str, Any]) -> datetime | None:
    try:
        return datetime.fromtimestamp(int(entry["__REALTIME_TIMESTAMP"]) / 1e6).astimezone()
    except (KeyError, ValueError, TypeError, OverflowError, OSError):
        return None


def _short(entry: dict[str, Any], when: str) -> str:
    """journalctl's short line: `<when> <host> <identifier>[<pid>]: <message>`."""
    identifier = entry.get("SYSLOG_IDENTIFIER") or entry.get("_COMM") or "unknown"
    pid = entry.get("_PID")
    source = f"{identifier}[{pid}]" if pid else str(identifier)
    host = entry.get("_HOSTNAME") or "localhost"
    return f"{when} {host} {source}: {_message(entry)}"


def _when(entry: dict[str, Any], pattern: str, precise: bool = False) -> str:
    moment = _timestamp(entry)
    if moment is None:
        return "-"
    text = moment.strftime(pattern)
    return f"{text}.{moment.microsecond:06d}" if precise else text


FORMATS: Final[dict[str, Callable[[dict[str, Any]], str]]] = {
    "short": lambda e: _short(e, _when(e, "%b %d %H:%M:%S")),
    "short-iso": lambda e: _short(e, _when(e, "%Y-%m-%dT%H:%M:%S%z")),
    "short-precise": lambda e: _short(e, _when(e, "%b %d %H:%M:%S", precise=True)),
    "cat": _message,
    "json": lambda e: json.dumps(e, separators=(", ", ": ")),
    "json-pretty": lambda e: json.dumps(e, indent=8),
}


def format_entry(entry: dict[str, Any], mode: str) -> str:
    """One entry in output `mode` (a key of `FORMATS`)."""
    return FORMATS[mode](entry)


def is_end(entry: dict[str, Any]) -> bool:
    """The line that ends a followed stream (`{"end": why}`), not a journal entry."""
    return "end" in entry and "__CURSOR" not in entry


def journal(
    ctx: typer.Context,
    units: UnitsArgument = None,
    *,
    lines: Annotated[
        int, typer.Option("--lines", help="Number of recent log lines to return.")
    ] = DEFAULT_LINES,
    follow: Annotated[
        bool,
        typer.Option("--follow", "-f", help="Continuously print new entries as they are appended."),
    ] = False,
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            help="Output mode: short, short-iso, short-precise, cat, json or json-pretty.",
        ),
    ] = None,
    ssh_port: Annotated[int, typer.Option("--ssh-port", hidden=True)] = 22,
    sudo: Annotated[bool, typer.Option("--sudo", hidden=True)] = False,
) -> None:
    """Print the journal of a unit in the cluster to stdout."""
    session = Session.of(ctx)
    mode = output or ("json" if session.out.json else "short")

    def run_journal() -> int:
        out = session.out
        if not units or len(units) != 1:
            out.error("One unit file must be provided.")
            return 1
        if mode not in FORMATS:
            out.error(f"Invalid --output {mode!r}: use one of {', '.join(FORMATS)}.")
            return 1
        if not 0 <= lines <= MAX_LINES:
            out.error(f"Invalid --lines {lines}: use a number from 0 to {MAX_LINES}.")
            return 1
        name = mangle_unit_name(units[0])
        try:
            unit = session.client.unit(name)
        except FleetctlError as exc:
            out.error(f"Error retrieving unit {name}: {exc}")
            return 1
        if unit is None:
            out.error(f"Unit {name} does not exist.")
            return 1
        if unit.is_global:
            out.error(f"Unable to retrieve journal of global unit {name}.")
            return 1
        if unit.current_state in ("", JobState.INACTIVE):
            out.error(f"Unit {name} does not appear to be running.")
            return 1
        try:
            for entry in session.client.journal(name, lines=lines, follow=follow):
                if is_end(entry):
                    out.note(str(entry["end"]))
                    break
                sys.stdout.write(format_entry(entry, mode) + "\n")
                if follow:
                    sys.stdout.flush()
        except FleetAPIError as exc:
            if exc.status == 409:  # it stopped since the check above
                out.error(f"Unit {name} does not appear to be running.")
            else:
                out.error(f"Error retrieving journal of unit {name}: {exc}")
            return 1
        except KeyboardInterrupt:
            return 0
        return 0

    _run_streaming(session, run_journal)


def _run_streaming(session: Session, body: Callable[[], int]) -> NoReturn:
    """`Session.run` without the JSON document: stdout carries the entries only."""
    try:
        code = body()
    except (FleetctlError, EndpointError) as exc:
        session.out.error(f"Error: {exc}")
        code = 1
    finally:
        session.close()
    raise typer.Exit(code)
