"""The API's entities: lenient reading of absent fields, strict types, JSON in the API's names."""

from __future__ import annotations

import pytest

from fleetctl.models import Machine, Unit, UnitState
from fleetd.core.unitfile import UnitOption, parse_unit

HELLO_OPTIONS = [
    {"name": "Description", "section": "Unit", "value": "Hello World"},
    {"name": "ExecStart", "section": "Service", "value": "/bin/true"},
]


def test_a_unit_reads_every_field() -> None:
    unit = Unit.from_json(
        {
            "currentState": "launched",
            "desiredState": "launched",
            "machineID": "m1",
            "name": "hello.service",
            "options": HELLO_OPTIONS,
            "unplaceableReasons": ["r1", "r2"],
        }
    )
    assert unit.current_state == "launched"
    assert unit.machine_id == "m1"
    assert unit.options[0] == UnitOption("Unit", "Description", "Hello World")
    assert unit.unplaceable_reasons == ("r1", "r2")
    assert unit.description == "Hello World"


def test_absent_fields_are_empty() -> None:
    unit = Unit.from_json({"name": "x.service"})
    assert (unit.current_state, unit.desired_state, unit.machine_id) == ("", "", "")
    assert unit.options == ()
    assert unit.unplaceable_reasons == ()
    assert unit.description == ""


def test_the_hash_is_fleets_hash_of_the_options() -> None:
    text = "[Unit]\nDescription=Hello World\n\n[Service]\nExecStart=/bin/true\n"
    unit = Unit.from_json({"name": "hello.service", "options": HELLO_OPTIONS})
    assert unit.unit_file.hash == parse_unit(text).hash


@pytest.mark.parametrize(
    ("value", "is_global"), [("true", True), ("yes", True), ("false", False), ("", False)]
)
def test_global_units(value: str, is_global: bool) -> None:
    options = [{"section": "X-Fleet", "name": "Global", "value": value}]
    unit = Unit.from_json({"name": "g.service", "options": options, "desiredState": "loaded"})
    assert unit.is_global is is_global
    assert unit.observed_state == ("loaded" if is_global else "")


@pytest.mark.parametrize(
    "data",
    [
        [],
        {"name": 3},
        {"name": "x.service", "options": {}},
        {"name": "x.service", "options": ["no"]},
        {"name": "x.service", "unplaceableReasons": "one"},
    ],
)
def test_wrong_types_are_refused(data: object) -> None:
    with pytest.raises(ValueError, match="not"):
        Unit.from_json(data)


def test_unit_json_round_trips_and_leaves_empty_fields_out() -> None:
    data = {"desiredState": "inactive", "name": "hello.service", "options": HELLO_OPTIONS}
    assert Unit.from_json(data).to_json() == data


def test_unit_state() -> None:
    data = {
        "hash": "e55c0aeb44ba0b68004ceb8a200e685194448b45",
        "machineID": "m1",
        "name": "hello.service",
        "systemdActiveState": "active",
        "systemdLoadState": "loaded",
        "systemdSubState": "running",
    }
    state = UnitState.from_json(data)
    assert (state.load_state, state.active_state, state.sub_state) == (
        "loaded",
        "active",
        "running",
    )
    assert state.to_json() == data


def test_machine() -> None:
    data = {"id": "m1", "metadata": {"role": "web"}, "primaryIP": "10.0.0.1"}
    machine = Machine.from_json(data)
    assert machine.metadata == {"role": "web"}
    assert machine.to_json() == data
    assert Machine.from_json({"id": "m2"}).to_json() == {"id": "m2"}
