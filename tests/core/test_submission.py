"""The submission gate: every kind of bad unit is refused with a message that names the problem."""

from __future__ import annotations

import re

import pytest

from fleetd.core.states import JobState
from fleetd.core.submission import (
    MAX_UNIT_RECORD_BYTES,
    STORED_OPTION_OVERHEAD,
    InvalidUnit,
    RecordTooLarge,
    check_record_size,
    check_unit,
    parse_unit_text,
    stored_unit_bytes_at_least,
    unrecognized_key_warning,
)
from fleetd.core.unitfile import UnitFile, UnitOption, parse_unit

GOOD = "[Service]\nExecStart=/bin/true\n"


def _xfleet(lines: str) -> UnitFile:
    return parse_unit(GOOD + "\n[X-Fleet]\n" + lines + "\n")


def test_a_good_unit_passes_with_its_requirements() -> None:
    req = check_unit("db.service", _xfleet("MachineMetadata=role=db"), JobState.LAUNCHED)
    assert req.metadata == (("role", frozenset({"db"})),)


@pytest.mark.parametrize(
    ("name", "unit", "desired", "message"),
    [
        ("hello", parse_unit(GOOD), JobState.LAUNCHED, r'invalid unit name "hello": .*"\."'),
        ("", parse_unit(GOOD), JobState.LAUNCHED, "unit name cannot be empty"),
        ("a.bogus", parse_unit(GOOD), JobState.LAUNCHED, r'invalid unit type: "bogus"'),
        ("x" * 300 + ".service", parse_unit(GOOD), JobState.LAUNCHED, "maximum length"),
        (".evil.service", parse_unit(GOOD), JobState.LAUNCHED, "starts with a dot"),
        ("a.service", UnitFile(()), JobState.LAUNCHED, "the unit file has no options"),
        (
            "a.service",
            UnitFile((UnitOption("Service", "ExecStart", "x" * 3000),)),
            JobState.LAUNCHED,
            r"line too long \(max 2048 bytes\)",
        ),
        (
            "a.service",
            UnitFile((UnitOption("Service", "ExecStart", "\ud800"),)),
            JobState.LAUNCHED,
            "not valid UTF-8",
        ),
        ("web@.service", parse_unit(GOOD), JobState.LAUNCHED, 'cannot activate template "web@'),
        ("web@.service", parse_unit(GOOD), JobState.LOADED, "cannot activate template"),
        (
            "a.service",
            _xfleet("MachineID=abc\nConflicts=b.service"),
            JobState.LAUNCHED,
            "MachineID cannot be used with Conflicts",
        ),
        (
            "a.service",
            _xfleet("Global=true\nMachineOf=b.service"),
            JobState.LAUNCHED,
            "Global cannot be used with Peers",
        ),
        (
            "a.service",
            _xfleet("MachineOf=b.service\nConflicts=b.*"),
            JobState.LAUNCHED,
            'unresolvable requirements: peer "b.service" matches conflict "b.\\*"',
        ),
        (
            "a.service",
            parse_unit("[X-Container]\nExec=/bin/true\n"),
            JobState.LAUNCHED,
            r"^\[X-Container\] needs Image=",
        ),
        (
            "a.timer",
            parse_unit("[X-Container]\nImage=x\n"),
            JobState.LAUNCHED,
            r"^\[X-Container\] runs only in a .service unit",
        ),
    ],
)
def test_bad_units_are_refused_with_the_problem_named(
    name: str, unit: UnitFile, desired: JobState, message: str
) -> None:
    with pytest.raises(InvalidUnit, match=message):
        check_unit(name, unit, desired)


def test_unknown_x_fleet_keys_are_accepted_and_named_in_fleets_warning() -> None:
    unit = _xfleet("MachineMetdata=role=db\nWeight=2\nMachineMetdata=x=y\nGlobal=no")
    requirements = check_unit("a.service", unit, JobState.LAUNCHED)
    assert requirements.unknown_keys == ("MachineMetdata", "Weight")
    assert requirements.metadata == ()  # the engine sees no constraint from them
    assert unrecognized_key_warning("a.service", unit) == (
        'Unit a.service: unrecognized requirement in [X-Fleet] section: "MachineMetdata"'
    )
    assert unrecognized_key_warning("a.service", _xfleet("Global=no")) is None


def test_a_template_may_be_submitted_inactive() -> None:
    assert check_unit("web@.service", parse_unit(GOOD), JobState.INACTIVE).is_global is False


def test_malformed_text_names_the_line() -> None:
    with pytest.raises(InvalidUnit, match=r"^malformed unit file: line 2"):
        parse_unit_text("[Service]\nno equals sign here\n")


def _with(option: UnitOption) -> UnitFile:
    return UnitFile((option, UnitOption("Service", "ExecStart", "/bin/true")))


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (
            UnitOption("Unit", "Description", "x\n[X-Fleet]\nMachineOf=nonexistent.service"),
            'option "Description" in section "Unit": the value holds control character U+000A '
            "(a newline is allowed only after a backslash)",
        ),
        (UnitOption("Unit", "Description", "a\rb"), "the value holds control character U+000D"),
        (UnitOption("Unit", "Description", "a\x00"), "the value holds control character U+0000"),
        (UnitOption("Unit", "Description", "a\x7f"), "the value holds control character U+007F"),
        (UnitOption("Unit", "Description", "a\x85"), "the value holds control character U+0085"),
        (
            UnitOption("Unit", "Desc\tription", "a"),
            "the option name holds control character U+0009",
        ),
        (
            UnitOption("Un\nit", "Description", "a"),
            "the section name holds control character U+000A",
        ),
        (UnitOption("Unit", "Description", "a \\\n\nb"), "control character U+000A"),
    ],
)
def test_control_characters_are_refused_naming_the_option(option: UnitOption, message: str) -> None:
    with pytest.raises(InvalidUnit, match=re.escape(message)):
        check_unit("a.service", _with(option), JobState.LAUNCHED)


@pytest.mark.parametrize(
    "text",
    [
        "[Unit]\nDescription=first \\\n  second\n",  # a continued line keeps its newline
        "[Unit]\nDescription=first \\\n\n",  # ended by a blank line: the newline stays at the end
        "[Unit]\nDescription=tab\tinside\n",
    ],
)
def test_what_the_parser_makes_of_a_file_is_never_a_control_character(text: str) -> None:
    unit = parse_unit(text + "[Service]\nExecStart=/bin/true\n")
    assert "\n" in unit.options[0].value or "\t" in unit.options[0].value
    check_unit("a.service", unit, JobState.LAUNCHED)


def test_a_unit_surely_over_the_record_limit_is_refused_before_the_other_checks() -> None:
    empty = UnitOption("", "", "")  # malformed too, but the size is what is reported first
    unit = UnitFile((empty,) * 100_000)
    assert stored_unit_bytes_at_least(unit) == 100_000 * STORED_OPTION_OVERHEAD
    with pytest.raises(RecordTooLarge, match=r"unit a\.service would take 3600000 bytes or more"):
        check_unit("a.service", unit, JobState.LAUNCHED)
    fits = UnitFile((UnitOption("Service", "ExecStart", "x" * 2000),) * 100)
    assert stored_unit_bytes_at_least(fits) < MAX_UNIT_RECORD_BYTES
    check_unit("a.service", fits, JobState.LAUNCHED)


def test_record_size_is_refused_over_the_limit_only() -> None:
    check_record_size("unit a.service", 1024, 1024)
    with pytest.raises(RecordTooLarge, match=r"over the limit of 1024 bytes \(1 KiB\)"):
        check_record_size("unit a.service", 1025, 1024)
