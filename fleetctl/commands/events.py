"""`fleetctl events`: print the cluster's live events (`GET /fleet/v1/events`), one line each.

Text: `ID KIND UNIT MACHINE WHAT`, e.g.
`4711  unit-state   hello.service  113f16a7...  loaded/active/running`; `-` where an event names
no unit or machine; `--full` prints whole machine ids. `--output json`: one JSON object per line
(JSON Lines): `{"id": ..., "event": ..., <the event's data>}`.

Filters go to the API: `--unit GLOB`, `--machine ID` (or its prefix), `--kind KIND`, each
repeatable. `--since ID` starts after that event id (a revision) instead of now; `--count N`
exits after N events. The stream is followed until interrupted: when it breaks, or the server
drops a reader that fell behind, fleetctl reconnects with the last id it printed (backing off up
to `RECONNECT_MAX` seconds), so no event is skipped or printed twice. When the server says the
events since that id are gone (`relist`), that is printed and the stream goes on.

Exit codes: 0 when interrupted or after `--count` events; 1 when the first connection fails or
the API refuses the request (a bad filter or id, a missing token).
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from fleetctl import wait
from fleetctl.client import FleetAPIError, FleetConnectionError, FleetctlError
from fleetctl.output import machine_id_legend
from fleetctl.session import Session
from fleetctl.sse import ServerEvent

IDLE_TIMEOUT = 60.0
"""Seconds without an event or keep-alive (the server sends one every 15 s) before reconnecting."""
RECONNECT_MIN = 0.5
RECONNECT_MAX = 5.0


def describe(event: ServerEvent) -> str:
    """The WHAT column."""
    data = event.data
    action = data.get("action", "")
    match event.kind:
        case "unit":
            if action == "destroyed":
                return str(action)
            return f"{action} ({data.get('desiredState', '')})"
        case "desired-state":
            return f"{data.get('previous', '')} -> {data.get('desiredState', '')}"
        case "placement":
            if action == "unscheduled":
                return str(action)
            return f"{action} ({data.get('desiredState')})"
        case "unplaceable":
            reasons = data.get("reasons") or []
            return "; ".join(str(r) for r in reasons) if reasons else "placeable"
        case "unit-state":
            if action == "removed":
                return str(action)
            states = "/".join(
                str(data.get(k, "")) for k in ("loadState", "activeState", "subState")
            )
            return states + (f" ({data['loadError']})" if data.get("loadError") else "")
        case "machine":
            if action == "metadata":
                value = data.get("value")
                return f"metadata {data.get('key')}=" + ("(removed)" if value is None else value)
            metadata = ",".join(f"{k}={v}" for k, v in sorted((data.get("metadata") or {}).items()))
            return " ".join(p for p in (action, data.get("primaryIP", ""), metadata) if p)
        case "relist":
            return f"events lost ({data.get('reason', '')}): list the cluster again"
    return json.dumps(data, sort_keys=True)


def line(event: ServerEvent, full: bool) -> str:
    machine = event.data.get("machineID")
    columns = (
        event.id or "-",
        event.kind,
        str(event.data.get("unit") or "-"),
        machine_id_legend(machine, full) if isinstance(machine, str) and machine else "-",
        describe(event),
    )
    return "{:<10} {:<13} {:<24} {:<11} {}".format(*columns).rstrip()


def events(  # noqa: PLR0917 - typer passes every option by position
    ctx: typer.Context,
    unit: Annotated[
        list[str] | None, typer.Option("--unit", help="Only units matching this glob.")
    ] = None,
    machine: Annotated[
        list[str] | None, typer.Option("--machine", help="Only this machine (id or prefix).")
    ] = None,
    kind: Annotated[
        list[str] | None,
        typer.Option(
            "--kind",
            help="Only these kinds: unit, desired-state, placement, unplaceable, unit-state, "
            "machine.",
        ),
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Start after this event id, not now.")
    ] = None,
    count: Annotated[
        int, typer.Option("--count", min=0, help="Exit after this many events (0: never).")
    ] = 0,
    full: Annotated[bool, typer.Option("--full", "-l", help="Do not ellipsize fields.")] = False,
) -> None:
    """Print the cluster's events as they happen."""
    session = Session.of(ctx)
    params: dict[str, list[str]] = {}
    for name, values in (("unit", unit), ("machineID", machine), ("kind", kind)):
        if values:
            params[name] = list(values)
    as_json = session.out.json
    printed = 0
    last_id = since
    connected = False
    delay = RECONNECT_MIN
    code = 0
    try:
        while True:
            try:
                for event in session.client.events(params, last_id, idle_timeout=IDLE_TIMEOUT):
                    connected, delay = True, RECONNECT_MIN
                    if event.kind == "dropped":
                        session.out.note(
                            f"the server dropped this reader: {event.data.get('reason')}"
                        )
                        break
                    if event.id is not None:
                        last_id = event.id
                    if as_json:
                        record: dict[str, Any] = {"id": event.id, "event": event.kind, **event.data}
                        sys.stdout.write(json.dumps(record, sort_keys=False) + "\n")
                    else:
                        sys.stdout.write(line(event, full) + "\n")
                    sys.stdout.flush()
                    printed += 1
                    if count and printed >= count:
                        raise typer.Exit(0)
            except FleetConnectionError as exc:
                if not connected:
                    raise
                session.out.note(f"event stream interrupted ({exc}); reconnecting")
            wait.clock.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX)
    except FleetAPIError as exc:
        session.out.error(f"Error: {exc.message or exc}")
        code = 1
    except FleetctlError as exc:
        session.out.error(f"Error: {exc}")
        code = 1
    except KeyboardInterrupt:
        code = 0
    finally:
        session.close()
    raise typer.Exit(code)
