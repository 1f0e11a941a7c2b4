"""Checking a unit before anything is stored: the one gate every submission passes.

`check_unit` takes a unit's name, its unit file and the desired state, and either returns the
unit's requirements or raises `InvalidUnit`, whose message names the unit and the problem. Callers
(the API, the tests, the demo) write to etcd only after it returns, so bad input never leaves a
trace. What it refuses:

* a name fleet would refuse (`unit name must contain "."`, ...), or one the agent could not
  write as a plain file in its units directory (a leading dot);
* a control character (U+0000-U+001F, U+007F-U+009F) in a section name, an option name or a
  value: fleet's unit format cannot carry one, and a newline or carriage return in a value would
  start a line of its own in the written file (a section the engine never saw). Two exceptions,
  both in values and both what the parser itself produces: a tab, and a newline right after a
  backslash (a continued line);
* a unit file with no options, or one whose serialized form does not parse back (a line of 2048
  bytes or more, fleet's own round-trip check) or cannot be hashed (lone surrogates);
* a template (`foo@.service`) asked to be loaded or launched (fleet checked this only on update);
* contradictory requirements, with fleet's messages (`MachineID cannot be used with Conflicts`);
* an `[X-Container]` section the agent could not turn into `fleet-pod run` (`core.container`),
  or one in a unit that is not a service.

An `[X-Fleet]` key fleet does not know is accepted and stored, as fleet did: the engine ignores
it, fleetctl warns about it (`unrecognized_key_warning`) and the API names it in a response
header, so a typo such as `MachineMetdata=` is still seen.

Records have size limits, counted as stored in etcd (the JSON the codec writes, where a
character outside ASCII takes up to 12 bytes): MAX_UNIT_RECORD_BYTES for `units/<name>` and
MAX_METADATA_RECORD_BYTES for `metadata/<machine>/<key>`. Both are far below etcd's own limit on
a write (1.5 MiB by default): a unit always fits, and so does a transaction of 128 metadata
values under keys of ordinary length.
The codec refuses to encode a record over its limit (`RecordTooLarge`), so none is ever written;
`check_unit` refuses a unit whose record is surely over the limit before its costlier checks.
"""

from __future__ import annotations

import re
from typing import Final

from fleetd.core.container import ContainerError, parse_container
from fleetd.core.names import UnitNameError, go_quote, parse_unit_name, unit_file_name_problem
from fleetd.core.requirements import (
    Requirements,
    RequirementsError,
    parse_requirements,
    unrecognized_keys,
    validate_requirements,
)
from fleetd.core.states import JobState
from fleetd.core.unitfile import UnitFile, UnitFileError, UnitOption, parse_unit

MAX_UNIT_RECORD_BYTES: Final = 256 * 1024
"""The largest `units/<name>` record, in bytes as stored (the codec's JSON)."""

MAX_METADATA_RECORD_BYTES: Final = 8 * 1024
"""The largest `metadata/<machine>/<key>` record, in bytes as stored (the codec's JSON)."""

STORED_OPTION_OVERHEAD: Final = len('{"name":"","section":"","value":""},')
"""Bytes the codec's JSON adds around an option's three strings (checked by its tests)."""

_CONTROL_IN_NAME: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_IN_VALUE: Final = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]|(?<!\\)\n")


class InvalidUnit(ValueError):
    """A unit that must not be stored; the message says why, in fleet's words where fleet had
    the check, without naming the unit (as fleet's `ValidateOptions`: the API's URL names it,
    and fleetctl says `failed creating unit X: ...` for what the API refuses)."""


class RecordTooLarge(ValueError):
    """A record over its size limit as it would be stored; the message names the limit."""


def check_record_size(what: str, size: int, limit: int) -> None:
    """Raise `RecordTooLarge` if a record of `size` bytes (as stored) is over `limit`."""
    if size > limit:
        raise RecordTooLarge(
            f"{what} would take {size} bytes or more as stored in etcd, over the limit of "
            f"{limit} bytes ({limit // 1024} KiB)"
        )


def _control_character_problem(option: UnitOption) -> str | None:
    """What is wrong with `option` if it holds a control character the unit format cannot hold."""
    for part, text, pattern in (
        ("section name", option.section, _CONTROL_IN_NAME),
        ("option name", option.name, _CONTROL_IN_NAME),
        ("value", option.value, _CONTROL_IN_VALUE),
    ):
        found = pattern.search(text)
        if found is not None:
            where = f"option {go_quote(option.name)} in section {go_quote(option.section)}"
            code = f"U+{ord(found.group()):04X}"
            extra = " (a newline is allowed only after a backslash)" if code == "U+000A" else ""
            return f"{where}: the {part} holds control character {code}{extra}"
    return None


def stored_unit_bytes_at_least(unit: UnitFile) -> int:
    """A lower bound, in linear time, of the size of the unit's record as stored: every
    character takes at least one byte, and every option STORED_OPTION_OVERHEAD more."""
    text = sum(len(o.section) + len(o.name) + len(o.value) for o in unit.options)
    return text + len(unit.options) * STORED_OPTION_OVERHEAD


def parse_unit_text(text: str) -> UnitFile:
    """Parse a unit file's text; the caller names the file in the error."""
    try:
        return parse_unit(text)
    except UnitFileError as exc:
        raise InvalidUnit(f"malformed unit file: {exc}") from None


def unrecognized_key_warning(name: str, unit: UnitFile) -> str | None:
    """fleetctl's warning for a unit with an `[X-Fleet]` key fleet does not know (the first one,
    as fleet reported one), or None."""
    keys = unrecognized_keys(unit)
    if not keys:
        return None
    return f"Unit {name}: unrecognized requirement in [X-Fleet] section: {go_quote(keys[0])}"


def check_unit(name: str, unit: UnitFile, desired: JobState) -> Requirements:
    """The unit's requirements, once every check above has passed."""
    try:
        info = parse_unit_name(name)
    except UnitNameError as exc:
        raise InvalidUnit(f"invalid unit name {go_quote(name)}: {exc}") from None
    problem = unit_file_name_problem(name)
    if problem is not None:  # the agent could never write it under its units directory
        raise InvalidUnit(problem)
    if not unit.options:
        raise InvalidUnit("the unit file has no options")
    at_least = stored_unit_bytes_at_least(unit)
    if at_least > MAX_UNIT_RECORD_BYTES:  # refused before the costlier checks below
        check_record_size(f"unit {name}", at_least, MAX_UNIT_RECORD_BYTES)
    for option in unit.options:
        problem = _control_character_problem(option)
        if problem is not None:
            raise InvalidUnit(problem)
    try:
        serialized = unit.serialize()
        serialized.encode()
        parse_unit(serialized)
    except UnicodeEncodeError:
        raise InvalidUnit("the unit file is not valid UTF-8 text") from None
    except UnitFileError as exc:
        raise InvalidUnit(f"malformed unit file: {exc}") from None
    if info.is_template and desired is not JobState.INACTIVE:
        raise InvalidUnit(f"cannot activate template {go_quote(name)}")
    requirements = parse_requirements(name, unit)
    try:
        validate_requirements(requirements)
        container = parse_container(unit)
    except (RequirementsError, ContainerError) as exc:
        raise InvalidUnit(str(exc)) from None
    if container is not None and info.suffix != "service":
        raise InvalidUnit("[X-Container] runs only in a .service unit")
    return requirements
