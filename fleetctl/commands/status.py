"""`fleetctl status UNIT...`: what the cluster knows about each unit, from the API.

fleet ran `systemctl status -l UNIT` over SSH on the unit's machine. pyfleet has no SSH, so it
prints a status block built from the API instead: the unit and its description, systemd's load
state (with systemd's reason when it refused the file) and active (sub) states as the machine's
agent reports them (`GET /state`), the machine, the cluster states (current and desired), the
loaded file's hash, and the engine's reasons when the unit cannot be placed. A global unit gets
one block per machine that reports it. Blocks are separated by a blank line, as fleet's were.
Below the block of a non-global unit, after a blank line, come the last ten lines of its journal
in journalctl's short format, as `systemctl status` shows them, fetched from the unit's machine
through the API (`fleetctl journal`'s route); an API without that route (fleet's) gives none.

fleet's messages and exit codes stay: `Unit X does not exist.` and `Unit X does not appear to be
loaded.` (stderr, exit 1; an unplaceable unit's block, with its reasons, is printed first). The
exit code otherwise follows `systemctl status`: 0 when every unit is active, 3 when one is not.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from fleetctl.client import FleetAPIError, FleetConnectionError
from fleetctl.commands.common import UnitsArgument, no_units_given, unit_names
from fleetctl.commands.journal import format_entry, is_end
from fleetctl.models import Unit, UnitState
from fleetctl.session import Session
from fleetd.core.states import JobState

EXIT_NOT_ACTIVE = 3
JOURNAL_LINES = 10  # as `systemctl status`
LABEL_WIDTH = 11


def _line(label: str, value: str) -> str:
    """`     Loaded: loaded`; an empty label continues the line above."""
    if not label:
        return " " * (LABEL_WIDTH + 2) + value
    return f"{label:>{LABEL_WIDTH}}: {value}"


def _loaded(state: UnitState | None) -> str:
    """`bad-setting (Unit x.service has a bad unit file setting.)`: the reason, when systemd
    refused the file."""
    if state is None or not state.load_state:
        return "-"
    return f"{state.load_state} ({state.load_error})" if state.load_error else state.load_state


def _active(state: UnitState | None) -> str:
    if state is None or not state.active_state:
        return "-"
    return f"{state.active_state} ({state.sub_state})" if state.sub_state else state.active_state


def render_block(session: Session, unit: Unit, state: UnitState | None) -> str:
    """One unit's (or one machine's share of a global unit's) status block."""
    title = f"{unit.name} - {unit.description}" if unit.description else unit.name
    machine_id = state.machine_id if state is not None else unit.machine_id
    lines = [
        title,
        _line("Loaded", _loaded(state)),
        _line("Active", _active(state)),
        _line("Machine", session.legend(machine_id, full=True) if machine_id else "-"),
        _line("State", f"{unit.current_state or '-'} (desired: {unit.desired_state or '-'})"),
        _line("Hash", (state.hash if state else "") or unit.unit_file.hash),
    ]
    for index, reason in enumerate(unit.unplaceable_reasons):
        lines.append(_line("Unplaceable" if index == 0 else "", reason))
    return "\n".join(lines) + "\n"


def journal_tail(session: Session, name: str) -> list[dict[str, Any]]:
    """The unit's last `JOURNAL_LINES` journal entries, as `systemctl status` shows them; none
    when the API has no journal route (fleet's: 404), the unit runs nowhere (409) or the cluster
    does not serve journals (503: no node-to-node endpoint or credential). Any other failure is
    said on stderr, and the status is shown without them."""
    try:
        return [
            entry
            for entry in session.client.journal(name, lines=JOURNAL_LINES, follow=False)
            if not is_end(entry)
        ]
    except FleetAPIError as exc:
        if exc.status not in (404, 409, 503):
            session.out.warn(f"Unable to retrieve the journal of {name}: {exc}")
    except FleetConnectionError as exc:
        session.out.warn(f"Unable to retrieve the journal of {name}: {exc}")
    return []


def _record(unit: Unit, states: list[UnitState]) -> dict[str, Any]:
    data = unit.to_json()
    data.pop("options", None)
    data.pop("name", None)
    data["description"] = unit.description
    data["states"] = [state.to_json() for state in states]
    return data


def _states(session: Session, unit: Unit) -> tuple[list[UnitState], bool]:
    """The unit's systemd states (its machine's; every machine's for a global unit), and
    whether the unit counts as loaded."""
    client = session.client
    if unit.is_global:
        states = client.unit_states(unit_name=unit.name)
        return states, unit.desired_state != JobState.INACTIVE and bool(states)
    if not unit.machine_id:
        return [], False
    states = client.unit_states(unit_name=unit.name, machine_id=unit.machine_id)
    return states, unit.current_state not in ("", JobState.INACTIVE)


def status(
    ctx: typer.Context,
    units: UnitsArgument = None,
    ssh_port: Annotated[int, typer.Option("--ssh-port", hidden=True)] = 22,
) -> None:
    """Output the status of one or more units in the cluster."""
    session = Session.of(ctx)

    def run_status() -> int:
        out = session.out
        if not units:
            return no_units_given(session)
        code = 0
        printed = 0

        def emit(block: str) -> None:
            nonlocal printed
            out.write(("\n" if printed else "") + block)
            printed += 1

        for name in unit_names(units):
            unit = session.client.unit(name)
            if unit is None:
                out.error(f"Unit {name} does not exist.")
                return 1
            states, loaded = _states(session, unit)
            out.unit(name, **_record(unit, states))
            if not loaded:
                if unit.unplaceable_reasons:
                    emit(render_block(session, unit, None))
                out.error(f"Unit {name} does not appear to be loaded.")
                return 1
            shown: list[UnitState | None] = [*states] or [None]
            tail = [] if unit.is_global else journal_tail(session, name)
            if tail:
                out.unit(name, journal=tail)
            for state in shown:
                block = render_block(session, unit, state)
                if tail:
                    block += "\n" + "".join(format_entry(e, "short") + "\n" for e in tail)
                emit(block)
            if not states or any(state.active_state != "active" for state in states):
                code = EXIT_NOT_ACTIVE
        return code

    session.run(run_status)
