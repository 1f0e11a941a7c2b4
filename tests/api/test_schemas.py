"""The wire format: entities as fleet writes them, bodies as Go's decoder reads them."""

from __future__ import annotations

import json

import pytest

from fleetd.api import schemas
from fleetd.api.schemas import (
    DecodeError,
    MetadataOp,
    UnitRequest,
    UnitStatus,
    decode_metadata_ops,
    decode_unit_request,
    go_json,
    machine_json,
    page_json,
    state_json,
    unit_json,
)
from fleetd.core.model import Machine
from fleetd.core.states import JobState
from fleetd.core.unitfile import UnitOption
from fleetd.registry.codec import UnitRecord, UnitStateRecord
from tests.api.helpers import HELLO_HASH, HELLO_OPTIONS, M1

HELLO = UnitRecord("hello.service", HELLO_OPTIONS, HELLO_HASH, JobState.LAUNCHED)


# ---- output


def test_go_json_is_compact_and_html_safe() -> None:
    assert go_json({"a": "<b> & \u2028\u2029", "é": [1, True, None]}) == (
        '{"a":"\\u003cb\\u003e \\u0026 \\u2028\\u2029","é":[1,true,null]}'.encode()
    )


def test_go_json_replaces_lone_surrogates() -> None:
    assert go_json({"name": "a\udcffb"}) == '{"name":"a\ufffdb"}'.encode()


def test_unit_json_is_the_recorded_shape() -> None:
    status = UnitStatus(HELLO, JobState.LAUNCHED, M1)
    assert go_json(unit_json(status)) == (
        b'{"currentState":"launched","desiredState":"launched","machineID":"'
        + M1.encode()
        + b'","name":"hello.service","options":[{"name":"Description","section":"Unit",'
        b'"value":"Hello World"},{"name":"ExecStart","section":"Service","value":"/bin/bash -c '
        b'\\"while true; do echo \\\\\\"Hello, world\\\\\\"; sleep 1; done\\""}]}'
    )


def test_empty_fields_are_left_out() -> None:
    record = UnitRecord(
        "a.service", (UnitOption("Service", "ExecStart", ""),), "h", JobState.INACTIVE
    )
    assert unit_json(UnitStatus(record, None, "")) == {
        "desiredState": "inactive",
        "name": "a.service",
        "options": [{"name": "ExecStart", "section": "Service"}],
    }


def test_unplaceable_reasons_only_when_stored_and_last() -> None:
    with_reasons = unit_json(
        UnitStatus(HELLO, JobState.INACTIVE, "", ("no machine has metadata role=db",))
    )
    assert list(with_reasons) == [
        "currentState",
        "desiredState",
        "name",
        "options",
        "unplaceableReasons",
    ]
    assert with_reasons["unplaceableReasons"] == ["no machine has metadata role=db"]
    assert "unplaceableReasons" not in unit_json(UnitStatus(HELLO, JobState.INACTIVE, ""))


def test_state_and_machine_json() -> None:
    state = UnitStateRecord("loaded", "active", "running", HELLO_HASH, 1.0)
    assert list(state_json("hello.service", M1, state)) == [
        "hash",
        "machineID",
        "name",
        "systemdActiveState",
        "systemdLoadState",
        "systemdSubState",
    ]
    refused = UnitStateRecord("bad-setting", "inactive", "dead", HELLO_HASH, 1.0, "bad setting")
    assert state_json("x.service", M1, refused)["systemdLoadError"] == "bad setting"
    pod = UnitStateRecord("loaded", "active", "running", HELLO_HASH, 1.0, pod_address="10.244.3.2")
    assert list(state_json("pod.service", M1, pod))[-1] == "podAddress"
    assert state_json("pod.service", M1, pod)["podAddress"] == "10.244.3.2"
    machine = Machine(M1, {"z": "1", "az": "us-west-1b"}, "172.17.8.103")
    assert go_json(machine_json(machine)) == (
        b'{"id":"'
        + M1.encode()
        + b'","metadata":{"az":"us-west-1b","z":"1"},"primaryIP":"172.17.8.103"}'
    )
    assert machine_json(Machine(M1)) == {"id": M1}


def test_pages_keep_fleets_field_order_and_empty_is_braces() -> None:
    assert list(page_json("machines", [{"id": "m"}], "ZAACAA==")) == ["machines", "nextPageToken"]
    assert list(page_json("units", [{"name": "u"}], "ZAACAA==")) == ["nextPageToken", "units"]
    assert list(page_json("states", [{"name": "u"}], "ZAACAA==")) == ["nextPageToken", "states"]
    assert go_json(page_json("units", [], "")) == b"{}"
    assert go_json(page_json("units", [], "ZAADAA==")) == b'{"nextPageToken":"ZAADAA=="}'


def test_the_documented_shapes_are_the_served_ones() -> None:
    """Every field set: the output has exactly the model's fields, in the model's order."""
    full = UnitStatus(HELLO, JobState.LAUNCHED, M1, ("no machine has role=web",))
    assert list(unit_json(full)) == list(schemas.Unit.model_fields)
    assert list(unit_json(full)["options"][0]) == list(schemas.UnitOption.model_fields)
    every = UnitStateRecord("loaded", "active", "running", HELLO_HASH, 1.0, "bad", "10.244.3.2")
    assert list(state_json("x.service", M1, every)) == list(schemas.UnitState.model_fields)
    machine = Machine(M1, {"role": "web"}, "172.17.8.103")
    assert list(machine_json(machine)) == list(schemas.Machine.model_fields)
    for key, page in (
        ("units", schemas.UnitPage),
        ("states", schemas.UnitStatePage),
        ("machines", schemas.MachinePage),
    ):
        assert list(page_json(key, [{}], "ZAACAA==")) == list(page.model_fields)


# ---- input


def test_a_unit_request() -> None:
    body = json.dumps(
        {
            "name": "hello.service",
            "desiredState": "launched",
            "currentState": "loaded",
            "machineID": "ignored",
            "options": [{"section": "Unit", "name": "Description", "value": "Hello World"}],
            "unknown": {"ignored": True},
        }
    ).encode()
    assert decode_unit_request(body) == UnitRequest(
        "hello.service", "launched", (UnitOption("Unit", "Description", "Hello World"),)
    )


def test_keys_match_case_insensitively_and_the_last_one_wins() -> None:
    body = b'{"DESIREDSTATE":"loaded","desiredState":"launched","Name":"a.service","NAME":null}'
    assert decode_unit_request(body) == UnitRequest("a.service", "launched")
    options = b'{"Options":[{"Section":"Unit","NAME":"Description"}]}'
    assert decode_unit_request(options).options == (UnitOption("Unit", "Description", ""),)


def test_only_the_first_value_is_read_and_null_is_empty() -> None:
    assert decode_unit_request(b' {"name":"a.service"} trailing garbage') == UnitRequest(
        "a.service"
    )
    assert decode_unit_request(b"null") == UnitRequest()
    assert decode_unit_request(b'{"options":null,"name":null}') == UnitRequest()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "EOF"),
        (b" \r\n\t", "EOF"),
        (b'{"name":"a', "unexpected EOF"),
        (b"{", "unexpected EOF"),
        (b"hello", "invalid character 'h' looking for beginning of value"),
        (b'{"name":}', "invalid character '}' looking for beginning of value"),
        (b'{name:"a"}', "invalid character 'n' looking for beginning of object key string"),
        (b'{"name" "a"}', "invalid character '\"' after object key"),
        (b'{"name":"a" "b":1}', "invalid character '\"' after object key:value pair"),
        (b'{"options":[{} {}]}', "invalid character '{' after array element"),
        (b'{"name":"a\\q"}', "invalid character 'q' in string escape code"),
        (b'{"name":"a\x01"}', "invalid character '\\x01' in string literal"),
        (b"NaN", "invalid character 'N' looking for beginning of value"),
        (b"[]", "json: cannot unmarshal array into Go value of type schema.Unit"),
        (b'"x"', "json: cannot unmarshal string into Go value of type schema.Unit"),
        (
            b'{"name":1}',
            "json: cannot unmarshal number into Go struct field Unit.name of type string",
        ),
        (
            b'{"machineID":true}',
            "json: cannot unmarshal bool into Go struct field Unit.machineID of type string",
        ),
        (
            b'{"options":{}}',
            "json: cannot unmarshal object into Go struct field Unit.options "
            "of type []*schema.UnitOption",
        ),
        (
            b'{"options":[1]}',
            "json: cannot unmarshal number into Go struct field Unit.options "
            "of type schema.UnitOption",
        ),
        (
            b'{"options":[null]}',
            "json: cannot unmarshal null into Go struct field Unit.options "
            "of type schema.UnitOption",
        ),
        (
            b'{"options":[{"value":[]}]}',
            "json: cannot unmarshal array into Go struct field UnitOption.options.value "
            "of type string",
        ),
    ],
)
def test_undecodable_units_get_gos_words(body: bytes, message: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode_unit_request(body)
    assert str(caught.value) == message


def test_metadata_ops_take_both_value_forms() -> None:
    body = (
        b'[{"op":"add","path":"/m/metadata/role","value":{"value":"web"}},'
        b'{"op":"replace","path":"/m/metadata/az","Value":{"VALUE":"b"}},'
        b'{"op":"add","path":"/m/metadata/x","value":"plain"},'
        b'{"op":"remove","path":"/m/metadata/y"}, null]'
    )
    assert decode_metadata_ops(body) == [
        MetadataOp("add", "/m/metadata/role", "web"),
        MetadataOp("replace", "/m/metadata/az", "b"),
        MetadataOp("add", "/m/metadata/x", "plain"),
        MetadataOp("remove", "/m/metadata/y", ""),
        MetadataOp(),
    ]
    assert decode_metadata_ops(b"null") == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "EOF"),
        (b"{}", "json: cannot unmarshal object into Go value of type []api.machineMetadataOp"),
        (b"[1]", "json: cannot unmarshal number into Go value of type api.machineMetadataOp"),
        (
            b'[{"op":1}]',
            "json: cannot unmarshal number into Go struct field machineMetadataOp.op "
            "of type string",
        ),
        (
            b'[{"op":"add","value":2}]',
            "json: cannot unmarshal number into Go struct field machineMetadataOp.value "
            "of type struct",
        ),
        (
            b'[{"op":"add","value":{"value":2}}]',
            "json: cannot unmarshal number into Go struct field machineMetadataOp.value.value "
            "of type string",
        ),
    ],
)
def test_undecodable_ops_get_gos_words(body: bytes, message: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode_metadata_ops(body)
    assert str(caught.value) == message
