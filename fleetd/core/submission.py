"""Checking a unit before anything is stored: the one gate every submission passes.

`check_unit` takes a unit's name, its unit file and the desired state, and either returns the
unit's requirements or raises `InvalidUnit`, whose message names the unit and the problem. Callers
(the API, the tests, the demo) write to etcd only after it returns, so bad input never leaves a
trace. What it refuses:

* a name fleet would refuse (`unit name must contain "."`, ...), or one the agent could not
  write as a plain file in its units directory (a leading dot);
* a unit file with no options, or one whose serialized form does not parse back (a line of 2048
  bytes or more, fleet's own round-trip check) or cannot be hashed (lone surrogates);
* a template (`foo@.service`) asked to be loaded or launched (fleet checked this only on update);
* an `[X-Fleet]` key fleet does not know (fleetctl only warned; pyfleet refuses, since a typo such
  as `MachineMetdata=` would otherwise silently place the unit anywhere);
* contradictory requirements, with fleet's messages (`MachineID cannot be used with Conflicts`);
* an `[X-Container]` section the agent could not turn into `fleet-pod run` (`core.container`),
  or one in a unit that is not a service.
"""

from __future__ import annotations

from fleetd.core.container import ContainerError, parse_container
from fleetd.core.names import UnitNameError, go_quote, parse_unit_name, unit_file_name_problem
from fleetd.core.requirements import (
    Requirements,
    RequirementsError,
    parse_requirements,
    validate_requirements,
)
from fleetd.core.states import JobState
from fleetd.core.unitfile import UnitFile, UnitFileError, parse_unit


class InvalidUnit(ValueError):
    """A unit that must not be stored; the message names the unit and the problem."""


def parse_unit_text(name: str, text: str) -> UnitFile:
    """Parse a unit file's text, naming the unit in the error."""
    try:
        return parse_unit(text)
    except UnitFileError as exc:
        raise InvalidUnit(f"unit {name}: malformed unit file: {exc}") from None


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
        raise InvalidUnit(f"unit {name}: the unit file has no options")
    try:
        serialized = unit.serialize()
        serialized.encode()
        parse_unit(serialized)
    except UnicodeEncodeError:
        raise InvalidUnit(f"unit {name}: the unit file is not valid UTF-8 text") from None
    except UnitFileError as exc:
        raise InvalidUnit(f"unit {name}: malformed unit file: {exc}") from None
    if info.is_template and desired is not JobState.INACTIVE:
        raise InvalidUnit(f"cannot activate template {go_quote(name)}")
    requirements = parse_requirements(name, unit)
    if requirements.unknown_keys:
        keys = ", ".join(go_quote(k) for k in requirements.unknown_keys)
        raise InvalidUnit(f"unit {name}: unrecognized requirement in [X-Fleet] section: {keys}")
    try:
        validate_requirements(requirements)
        container = parse_container(unit)
    except (RequirementsError, ContainerError) as exc:
        raise InvalidUnit(f"unit {name}: {exc}") from None
    if container is not None and info.suffix != "service":
        raise InvalidUnit(f"unit {name}: [X-Container] runs only in a .service unit")
    return requirements
