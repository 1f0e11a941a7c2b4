"""What the state-changing commands share: fleet's flags, creating units, setting target states,
and waiting with fleet's messages.

Role: the steps of fleet's `submit`, `load`, `start`, `stop`, `unload`, each
printing what fleet prints:
* `create_units`: resolve the arguments (`fleetctl.units`), PUT the new units (warning first,
  in fleet's log format, about an `[X-Fleet]` key fleet does not know), then wait for each to be
  `inactive` (`Unit X inactive`), as fleet does even for `start`;
* `set_target_states`: set a desired state, skipping units already there (fleet's silence).
  When a unit to be loaded or started competes for its place (`Conflicts=`, `Replaces=`), the
  writes go one after another in argument order, as fleet's do: `start web@1 web@2` of two
  conflicting instances places web@1, whatever the timing of the engine's passes;
* `wait_triggered`: `Triggered global unit X start` for global units (never waited for), then
  `Triggered unit X start` with `--no-block`, else wait (`Unit X launched on M.../IP`).

Speed: the registry is read once per step (`fleetctl.bulk`: one paged list for many units,
else one GET per unit) and the writes go out concurrently, at most `MAX_IN_FLIGHT` at a time.
The output is what fleet's one-unit-after-another loop prints, in the same order: results are
printed in argument order as the answers come back. When a write fails, no new write starts;
the units up to the first failure in argument order are reported, then the error (writes that
were already in flight may have succeeded after it).

Invariants: block attempts are fleet's `getBlockAttempts` (-1 no wait, 0 forever, N windows);
a failed wait prints one `Error waiting for units: ...` line per unit and yields exit code 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import closing
from typing import Annotated

import typer

from fleetctl.bulk import UnitCache, each_until_error, fetch_units
from fleetctl.client import MAX_IN_FLIGHT, FleetAPIError, FleetctlError
from fleetctl.models import Unit
from fleetctl.output import go_list
from fleetctl.session import Session
from fleetctl.units import Resolution, resolve_units
from fleetctl.wait import wait_for_unit_states
from fleetd.core.names import mangle_unit_name, split_unit_name
from fleetd.core.states import Command, JobState
from fleetd.core.submission import unrecognized_key_warning

NO_BLOCK = -1
BLOCK_FOREVER = 0

BlockAttemptsOption = Annotated[
    int,
    typer.Option(
        "--block-attempts",
        help="Wait for the units to reach their state for N attempts of 2s each "
        "(0: wait until they do, or until one cannot be placed).",
        show_default=False,
    ),
]
NoBlockOption = Annotated[
    bool,
    typer.Option("--no-block", help="Do not wait for the units to reach their state."),
]
ReplaceOption = Annotated[
    bool,
    typer.Option("--replace", help="Replace units in the registry that differ from local files."),
]
UnitsArgument = Annotated[list[str] | None, typer.Argument(metavar="UNIT", show_default=False)]


def block_attempts(no_block: bool, attempts: int) -> int:
    """fleet's `getBlockAttempts`: -1 with --no-block, N for N > 0, else 0 (forever)."""
    if no_block:
        return NO_BLOCK
    return attempts if attempts > 0 else BLOCK_FOREVER


def unit_names(args: Sequence[str]) -> list[str]:
    """fleetctl's mangled names for `args`, each once, in order."""
    return list(dict.fromkeys(mangle_unit_name(arg) for arg in args))


def templates_of(names: Sequence[str]) -> list[str]:
    """The templates of the instances among `names` (`foo@.service` for `foo@1.service`), each
    once: a new instance is made from its template, so they are read with the units."""
    templates = []
    for name in names:
        info = split_unit_name(name)
        if info is not None and info.is_instance and info.template is not None:
            templates.append(info.template)
    return list(dict.fromkeys(templates))


class CreateFailed(FleetctlError):
    """Some created units never reported `inactive` (already printed, one line each)."""


def report_reached(session: Session, unit: Unit) -> None:
    """`Unit hello.service launched on 113f16a7.../172.17.8.103`."""
    state = unit.observed_state
    message = f"Unit {unit.name} {state}"
    fields: dict[str, str] = {"state": state}
    if unit.machine_id:
        legend = session.legend(unit.machine_id)
        message += f" on {legend}"
        fields.update(machineID=unit.machine_id, machine=legend)
    session.out.say(message)
    session.out.unit(unit.name, **fields)


def create_units(
    session: Session,
    args: list[str],
    command: Command,
    replace: bool,
    attempts: int,
    *,
    target: JobState | None = None,
    at_target: set[str] | None = None,
) -> list[Unit]:
    """fleet's `lazyCreateUnits`; the units of `args` as they now are, in argument order.

    With `target` (the state `start`/`load` sets next), a new unit is created at that desired
    state in one request instead of two, when no unit of `args` competes for a machine (their
    order then matters: `set_target_states` sets it); those units' names go in `at_target`. The
    output is fleet's either way: `Unit X inactive` once the unit is in the registry."""
    out = session.out
    client = session.client
    names = unit_names(args)
    registry = UnitCache(client, names + templates_of(names))
    resolutions = resolve_units(registry, args, command, replace)
    writes = [resolution for resolution in resolutions if resolution.unit_file is not None]
    direct = _create_at_target(registry, resolutions, target)

    def write(resolution: Resolution) -> None:
        assert resolution.unit_file is not None
        desired = str(target) if target is not None and resolution.name in direct else ""
        try:
            client.create_unit(resolution.name, resolution.unit_file.options, desired)
        except FleetAPIError as exc:  # fleet's words for a unit the API refused
            raise FleetctlError(f"failed creating unit {resolution.name}: {exc}") from None

    created = []
    with closing(each_until_error(write, writes)) as written:
        for resolution in resolutions:
            for text in resolution.warnings:
                out.warn(text)
            for text in resolution.info:
                out.say(text)
            if resolution.unit_file is not None:
                warning = unrecognized_key_warning(resolution.name, resolution.unit_file)
                if warning is not None:  # fleet logged it: level, its source position, message
                    out.warn(f"WARN fleetctl.go:674: {warning}")
                next(written)
                out.unit(resolution.name, created=True, replaced=resolution.replacing)
                created.append(resolution.name)
    reached: dict[str, Unit] = {}

    def inactive(unit: Unit) -> None:
        reached[unit.name] = unit
        report_reached(session, unit)

    files = {r.name: r.unit_file for r in resolutions if r.unit_file is not None}
    for name in created:
        if name in direct:  # the answer to its PUT said it is in the registry: fleet's line
            state = str(JobState.INACTIVE)
            inactive(Unit(name, files[name].options, state, state))
    if at_target is not None:
        at_target.update(direct.intersection(created))
    waiting = [name for name in created if name not in direct]
    failures = wait_for_unit_states(client, waiting, JobState.INACTIVE, attempts, inactive)
    for name, message in failures.items():
        out.error(f"Error waiting on unit creation: {message}")
        out.unit(name, error=message)
    if failures:
        raise CreateFailed("one or more errors creating units")
    units = []
    for resolution in resolutions:
        unit = reached.get(resolution.name) or registry.unit(resolution.name)
        assert unit is not None, "a resolved unit was in the registry or has been created"
        units.append(unit)
    return units


def _create_at_target(
    registry: UnitCache, resolutions: list[Resolution], target: JobState | None
) -> set[str]:
    """The new units `create_units` may create at `target` directly (see there)."""
    if target is None or target == JobState.INACTIVE:
        return set()
    units: list[Unit] = []
    for resolution in resolutions:
        if resolution.unit_file is not None:
            units.append(Unit(resolution.name, resolution.unit_file.options))
        else:
            known = registry.unit(resolution.name)
            if known is not None:
                units.append(known)
    if any(unit.competes for unit in units):
        return set()
    return {r.name for r in resolutions if r.unit_file is not None and not r.replacing}


def set_target_states(
    session: Session,
    names: list[str],
    state: JobState,
    known: Mapping[str, Unit | None] | None = None,
) -> list[Unit]:
    """Set each unit's desired state; the units changed (those already there are skipped).

    `known` holds the units as the command last read them; without it they are fetched. A unit
    that does not exist fails the step before anything is written."""
    units = known if known is not None else fetch_units(session.client, names)
    triggered = []
    for name in names:
        unit = units.get(name)
        if unit is None:
            raise FleetctlError(f"unable to find unit {name}")
        if unit.desired_state == state:
            session.out.debug(f"Unit({name}) already {state}, skipping.")
            continue
        triggered.append(unit)

    def retarget(unit: Unit) -> None:
        session.client.set_unit_target_state(unit.name, state)

    in_order = state != JobState.INACTIVE and any(unit.competes for unit in triggered)
    in_flight = 1 if in_order else MAX_IN_FLIGHT
    return [unit for unit, _ in each_until_error(retarget, triggered, in_flight=in_flight)]


def wait_triggered(
    session: Session,
    triggered: list[Unit],
    action: str,
    state: JobState,
    attempts: int,
    *,
    reached: dict[str, Unit] | None = None,
) -> int:
    """Report global units as triggered, then wait for the others; the exit code. Units that
    reach `state` are put in `reached`, when given."""
    out = session.out
    waiting = []
    for unit in triggered:
        if unit.is_global:
            out.say(f"Triggered global unit {unit.name} {action}")
            out.unit(unit.name, triggered=action, **{"global": True})
        else:
            waiting.append(unit)
    names = [unit.name for unit in waiting]
    return wait_units(session, names, action, state, attempts, reached=reached)


def wait_units(
    session: Session,
    names: list[str],
    action: str,
    state: JobState,
    attempts: int,
    *,
    reached: dict[str, Unit] | None = None,
) -> int:
    """fleet's `tryWaitForUnitStates`: the exit code. Units that reach `state` are put in
    `reached`, when given."""
    out = session.out
    if attempts == NO_BLOCK:
        for name in names:
            out.say(f"Triggered unit {name} {action}")
            out.unit(name, triggered=action)
        return 0
    with out.progress(len(names), f"{action}: waiting for {len(names)} units") as advance:

        def on_reached(unit: Unit) -> None:
            if reached is not None:
                reached[unit.name] = unit
            report_reached(session, unit)
            advance()

        failures = wait_for_unit_states(session.client, names, state, attempts, on_reached)
    for name, message in failures.items():
        out.error(f"Error waiting for units: {message}")
        out.unit(name, error=message)
    return 1 if failures else 0


def no_units_given(session: Session) -> int:
    session.out.note("No units given")
    return 0


def retarget_units(
    session: Session,
    units: Sequence[Unit],
    state: JobState,
    *,
    verb: str,
    done: str,
    attempts: int,
) -> int:
    """Set `state` on registry `units`, trigger the global ones, wait for the rest, and end
    with `Successfully <done> units [a b].` (or `Failed to <verb> ...`) on stderr."""
    out = session.out
    waiting = []

    def retarget(unit: Unit) -> None:
        session.client.set_unit_target_state(unit.name, state)

    for unit, _ in each_until_error(retarget, list(units)):
        if unit.is_global:
            out.say(f"Triggered global unit {unit.name} {verb}")
            out.unit(unit.name, triggered=verb, **{"global": True})
        else:
            waiting.append(unit.name)
    code = wait_units(session, waiting, verb, state, attempts)
    if code == 0:
        out.note(f"Successfully {done} units {go_list(waiting)}.")
    else:
        out.note(f"Failed to {verb} units {go_list(waiting)}.")
    return code


def create_and_retarget(
    session: Session,
    units: list[str],
    command: Command,
    state: JobState,
    *,
    replace: bool,
    attempts: int,
) -> list[Unit] | None:
    """`load`/`start`'s first half: create missing units, then set `state` on them.

    Returns the units whose desired state was set, or None after printing fleet's error."""
    at_target: set[str] = set()
    try:
        created = create_units(
            session, units, command, replace, attempts, target=state, at_target=at_target
        )
    except FleetctlError as exc:
        session.out.error(f"Error creating units: {exc}")
        return None
    known = {unit.name: unit for unit in created}
    try:
        changed = set_target_states(
            session, [name for name in known if name not in at_target], state, known
        )
    except FleetctlError as exc:
        doing = {Command.LOAD: "loading", Command.START: "starting"}.get(command, str(command))
        session.out.error(f"Error {doing} units: {exc}")
        return None
    retargeted = {unit.name for unit in changed}
    return [unit for unit in created if unit.name in at_target or unit.name in retargeted]


def registry_units(session: Session, args: list[str]) -> list[Unit]:
    """The registry's units among `args`, sorted by name as fleet's list order has them; when
    there are none, stderr says `Units not found in registry` (the caller then exits 0)."""
    found = [unit for unit in fetch_units(session.client, unit_names(args)).values() if unit]
    if not found:
        session.out.note("Units not found in registry")
    return sorted(found, key=lambda unit: unit.name)
