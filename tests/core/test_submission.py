"""The submission gate: every kind of bad unit is refused with a message that names the problem."""

from __future__ import annotations

import pytest

from fleetd.core.states import JobState
from fleetd.core.submission import InvalidUnit, check_unit, parse_unit_text
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
            _xfleet("MachineMetdata=role=db"),
            JobState.LAUNCHED,
            r'unrecognized requirement in \[X-Fleet\] section: "MachineMetdata"',
        ),
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
            r"unit a.service: \[X-Container\] needs Image=",
        ),
        (
            "a.timer",
            parse_unit("[X-Container]\nImage=x\n"),
            JobState.LAUNCHED,
            r"unit a.timer: \[X-Container\] runs only in a .service unit",
        ),
    ],
)
def test_bad_units_are_refused_with_the_problem_named(
    name: str, unit: UnitFile, desired: JobState, message: str
) -> None:
    with pytest.raises(InvalidUnit, match=message):
        check_unit(name, unit, desired)


def test_a_template_may_be_submitted_inactive() -> None:
    assert check_unit("web@.service", parse_unit(GOOD), JobState.INACTIVE).is_global is False


def test_malformed_text_names_the_unit_and_the_line() -> None:
    with pytest.raises(InvalidUnit, match=r"unit a\.service: malformed unit file: line 2"):
        parse_unit_text("a.service", "[Service]\nno equals sign here\n")
