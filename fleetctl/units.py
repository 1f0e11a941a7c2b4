"""Resolving command-line arguments to units: local files, templates and the registry.

Role: fleet's `lazyCreateUnits` decision for `submit`, `load` and `start`,
without the writes. For each argument it decides whether the unit must be created (or replaced)
and from which unit file, and which notices to print; `commands.common` does the PUTs.

Rules:
* The unit name is fleetctl's mangled name (basename, `.service` added unless the type is one
  fleetctl knows). The local file is the argument itself, with `.service` added when it has no
  extension (fleet's `maybeAppendDefaultUnitType`).
* A unit that is not in the registry is created from its local file; else, for an instance
  (`foo@1.service`), from the template `foo@.service` in the registry, else from the file
  `foo@.service` beside the argument; else it is an error.
* A unit already in the registry is kept. If its local file (or, for an instance without one,
  its local template) differs, fleet's warning is printed; with `--replace` it is replaced
  instead, when the command may replace a unit in its desired state (submit: inactive; load:
  inactive or loaded; start: any).

Invariants: every local file is read, parsed and checked (`check_unit`, for the command's target
state) before the first request; every unit to be created is checked before the caller writes
anything, so an invalid unit means nothing is sent. All errors are `ResolutionError`, whose
message names the unit and the problem.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol

from fleetctl.client import FleetctlError
from fleetctl.models import Unit
from fleetd.core.names import UnitNameError, go_quote, mangle_unit_name, split_unit_name
from fleetd.core.names import validate_unit_name as _validate_name
from fleetd.core.states import Command, JobState
from fleetd.core.submission import InvalidUnit, check_unit, parse_unit_text
from fleetd.core.unitfile import UnitFile

TARGET_STATE = {
    Command.SUBMIT: JobState.INACTIVE,
    Command.LOAD: JobState.LOADED,
    Command.START: JobState.LAUNCHED,
}
"""The desired state each creating command asks for."""

REPLACEABLE = {
    Command.SUBMIT: frozenset({JobState.INACTIVE}),
    Command.LOAD: frozenset({JobState.INACTIVE, JobState.LOADED}),
    Command.START: frozenset({JobState.INACTIVE, JobState.LOADED, JobState.LAUNCHED}),
}
"""Desired states in which `--replace` may replace a unit, per command (fleet's table)."""


class ResolutionError(FleetctlError):
    """An argument that cannot become a unit; printed after `Error creating units: `."""


class Registry(Protocol):
    def unit(self, name: str) -> Unit | None: ...


@dataclass(frozen=True, slots=True)
class LocalFile:
    path: str
    unit: UnitFile


@dataclass(frozen=True, slots=True)
class Resolution:
    """What to do with one argument: create `unit_file` under `name` (None: keep what the
    registry has), and the notices to print first."""

    name: str
    unit_file: UnitFile | None = None
    replacing: bool = False
    warnings: tuple[str, ...] = ()
    info: tuple[str, ...] = ()


def local_path(arg: str) -> str:
    """The file an argument names: itself, with `.service` added when it has no extension."""
    return arg if os.path.splitext(arg)[1] else arg + ".service"


def read_unit_file(path: str) -> UnitFile:
    """Read and parse the unit file at `path`."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ResolutionError(f"failed getting Unit({path}) from file: {reason}") from None
    try:
        return parse_unit_text(text)
    except InvalidUnit as exc:  # fleet's words for a file it could not parse
        raise ResolutionError(f"failed getting Unit({path}) from file: {exc}") from None


def checked(name: str, unit: UnitFile, command: Command) -> UnitFile:
    """`unit`, once pyfleet's submission checks pass for `name` in the command's state."""
    try:
        check_unit(name, unit, TARGET_STATE[command])
    except InvalidUnit as exc:
        raise ResolutionError(str(exc)) from None
    return unit


def validate_name(name: str) -> None:
    try:
        _validate_name(name)
    except UnitNameError as exc:
        raise ResolutionError(f"invalid unit name {go_quote(name)}: {exc}") from None


def read_local_units(args: list[str], command: Command) -> dict[str, tuple[str, LocalFile | None]]:
    """Per unit name (first argument wins): its argument and its checked local file, if any."""
    found: dict[str, tuple[str, LocalFile | None]] = {}
    for arg in args:
        name = mangle_unit_name(arg)
        if name in found:
            continue
        path = local_path(arg)
        local = None
        if os.path.isfile(path):
            validate_name(name)  # fleet looks for the file first, then checks the name
            local = LocalFile(path, checked(name, read_unit_file(path), command))
        found[name] = (arg, local)
    return found


class LocalTemplates:
    """The template files beside the arguments, each read and parsed once per resolution
    (1,000 instances of one template read it once)."""

    def __init__(self) -> None:
        self._files: dict[str, LocalFile | None] = {}

    def of(self, arg: str, name: str) -> LocalFile | None:
        """The file `foo@.service` beside `arg` for the instance `name`, if there is one."""
        info = split_unit_name(name)
        if info is None or not info.is_instance or info.template is None:
            return None
        path = os.path.join(os.path.dirname(arg), info.template)
        if path not in self._files:
            found = os.path.isfile(path)
            self._files[path] = LocalFile(path, read_unit_file(path)) if found else None
        return self._files[path]


def _new_unit(
    registry: Registry, templates: LocalTemplates, arg: str, name: str, command: Command
) -> UnitFile:
    info = split_unit_name(name)
    if info is None or not info.is_instance or info.template is None:
        raise ResolutionError(f"unable to find Unit({name}) in Registry or on filesystem")
    template = registry.unit(info.template)
    if template is not None:
        validate_name(name)
        return checked(name, template.unit_file, command)
    local = templates.of(arg, name)
    if local is None:
        raise ResolutionError(
            f"unable to find template Unit({info.template}) in Registry or on filesystem"
        )
    validate_name(name)
    return checked(name, local.unit, command)


def _existing_unit(
    *,
    name: str,
    existing: Unit,
    arg: str,
    local: LocalFile | None,
    templates: LocalTemplates,
    command: Command,
    replace: bool,
) -> Resolution:
    kind = "local unit file"
    if local is None:
        local = templates.of(arg, name)
        kind = "local template unit file"
    if local is None:
        if replace:
            raise ResolutionError(
                f"cannot replace Unit({name}): no local unit file or template to replace it with"
            )
        return Resolution(name)
    if local.unit.hash == existing.unit_file.hash:
        info = (f"Found same Unit({name}) in Registry, nothing to do",) if replace else ()
        return Resolution(name, info=info)
    if not replace:
        warning = (
            f"WARNING: Unit {name} in registry differs from {kind} {local.path}. "
            "Add --replace to override."
        )
        return Resolution(name, warnings=(warning,))
    if existing.desired_state not in REPLACEABLE[command]:
        warning = (
            f"Warning: can not replace Unit({name}) in state '{existing.desired_state}', "
            "use the appropriate command"
        )
        return Resolution(name, warnings=(warning,))
    return Resolution(name, checked(name, local.unit, command), replacing=True)


def resolve_units(
    registry: Registry, args: list[str], command: Command, replace: bool
) -> list[Resolution]:
    """One resolution per distinct unit name, in argument order; raises `ResolutionError`."""
    local_units = read_local_units(args, command)
    templates = LocalTemplates()
    resolutions = []
    for name, (arg, local) in local_units.items():
        existing = registry.unit(name)
        if existing is not None:
            resolutions.append(
                _existing_unit(
                    name=name,
                    existing=existing,
                    arg=arg,
                    local=local,
                    templates=templates,
                    command=command,
                    replace=replace,
                )
            )
        elif local is not None:
            resolutions.append(Resolution(name, local.unit))
        else:
            resolutions.append(Resolution(name, _new_unit(registry, templates, arg, name, command)))
    return resolutions
