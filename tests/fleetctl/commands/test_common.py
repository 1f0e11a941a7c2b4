"""The shared steps of the state-changing commands."""

from __future__ import annotations

import pytest

from fleetctl.client import FleetctlError
from fleetctl.commands.common import (
    block_attempts,
    report_reached,
    set_target_states,
    unit_names,
)
from fleetctl.models import Unit
from fleetctl.output import OutputFormat
from fleetctl.session import Session, Settings
from fleetd.core.states import JobState
from fleetd.core.unitfile import UnitOption
from tests.fleetctl.conftest import GLOBAL, HELLO, MACHINE_A
from tests.fleetctl.fake_api import FakeFleet, options_of


@pytest.mark.parametrize(
    ("no_block", "attempts", "expected"),
    [(True, 5, -1), (False, 5, 5), (False, 0, 0), (False, -3, 0), (True, 0, -1)],
)
def test_block_attempts(no_block: bool, attempts: int, expected: int) -> None:
    assert block_attempts(no_block, attempts) == expected


def test_unit_names_are_mangled_and_unique() -> None:
    assert unit_names(["a", "dir/a.service", "b.socket", "x.target"]) == [
        "a.service",
        "b.socket",
        "x.target.service",
    ]


def session_for(fleet: FakeFleet) -> Session:
    return Session(Settings(transport=fleet.transport(), output=OutputFormat.JSON))


def test_report_reached(fleet: FakeFleet, capsys: pytest.CaptureFixture[str]) -> None:
    session = session_for(fleet)
    session.out.format = OutputFormat.TEXT
    report_reached(session, Unit("a.service", current_state="launched", machine_id=MACHINE_A))
    options = tuple(UnitOption(o["section"], o["name"], o["value"]) for o in options_of(GLOBAL))
    report_reached(session, Unit("g.service", options, desired_state="loaded"))
    assert capsys.readouterr().out == (
        "Unit a.service launched on 113f16a7.../172.17.8.103\nUnit g.service loaded\n"
    )
    assert session.out.units["a.service"]["machineID"] == MACHINE_A


def test_set_target_states_skips_units_already_there(fleet: FakeFleet) -> None:
    fleet.add_unit("a.service", HELLO, desired="loaded")
    fleet.add_unit("b.service", HELLO)
    triggered = set_target_states(session_for(fleet), ["a.service", "b.service"], JobState.LOADED)
    assert [unit.name for unit in triggered] == ["b.service"]


def test_set_target_states_needs_the_unit(fleet: FakeFleet) -> None:
    with pytest.raises(FleetctlError, match=r"unable to find unit nope\.service"):
        set_target_states(session_for(fleet), ["nope.service"], JobState.LOADED)
