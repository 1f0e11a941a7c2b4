"""The JSON records stored in etcd: round trips, exact field names, and every malformed input."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetd.core.model import Machine, Placement
from fleetd.core.requirements import NO_REQUIREMENTS, Requirements
from fleetd.core.states import JobState
from fleetd.core.submission import (
    MAX_METADATA_RECORD_BYTES,
    MAX_UNIT_RECORD_BYTES,
    STORED_OPTION_OVERHEAD,
    RecordTooLarge,
    stored_unit_bytes_at_least,
)
from fleetd.core.unitfile import UnitFile, UnitOption, parse_unit
from fleetd.registry.codec import (
    CodecError,
    LeaderRecord,
    UnitRecord,
    UnitStateRecord,
    decode_leader,
    decode_machine,
    decode_metadata_value,
    decode_placement,
    decode_reasons,
    decode_state,
    decode_unit,
    encode_leader,
    encode_machine,
    encode_metadata_value,
    encode_placement,
    encode_reasons,
    encode_state,
    encode_unit,
)

KEY = "/fleet/units/web@1.service"
MACHINE_ID = "0123456789abcdef0123456789abcdef"
HASH = "a" * 40

WEB_TEXT = (
    "[Unit]\nDescription=Web\n\n[Service]\nExecStart=/bin/web %i\n\n"
    "[X-Fleet]\nMachineMetadata=role=web\nConflicts=web@*.service\n"
)


def web_record(desired: JobState = JobState.LAUNCHED) -> UnitRecord:
    parsed = parse_unit(WEB_TEXT)
    return UnitRecord("web@1.service", parsed.options, parsed.hash, desired)


def dumps(obj: Any) -> bytes:
    return json.dumps(obj).encode()


# ---- units


@pytest.mark.parametrize("desired", list(JobState))
def test_unit_round_trip(desired: JobState) -> None:
    record = web_record(desired)
    assert decode_unit(KEY, encode_unit(record)) == record


def test_unit_field_names() -> None:
    record = UnitRecord(
        "a.service", (UnitOption("Service", "ExecStart", "/bin/true"),), HASH, JobState.LOADED
    )
    assert json.loads(encode_unit(record)) == {
        "name": "a.service",
        "options": [{"section": "Service", "name": "ExecStart", "value": "/bin/true"}],
        "hash": HASH,
        "desiredState": "loaded",
    }


def test_encoding_is_compact_and_sorted() -> None:
    record = UnitRecord("a.service", (), HASH, JobState.INACTIVE)
    assert encode_unit(record) == (
        b'{"desiredState":"inactive","hash":"' + HASH.encode() + b'","name":"a.service",'
        b'"options":[]}'
    )


def test_unit_options_keep_their_order_and_duplicates() -> None:
    options = (
        UnitOption("Service", "ExecStartPre", "/bin/b"),
        UnitOption("Unit", "Description", "x"),
        UnitOption("Service", "ExecStartPre", "/bin/a"),
    )
    record = UnitRecord("a.service", options, HASH, JobState.LAUNCHED)
    decoded = decode_unit(KEY, encode_unit(record))
    assert decoded.options == options
    assert [o["value"] for o in json.loads(encode_unit(record))["options"]] == [
        "/bin/b",
        "x",
        "/bin/a",
    ]


def test_unit_file_and_hash_survive_the_round_trip() -> None:
    parsed = parse_unit(WEB_TEXT)
    decoded = decode_unit(KEY, encode_unit(web_record()))
    assert decoded.unit_file == parsed
    assert decoded.unit_file.hash == parsed.hash == decoded.hash


def test_non_ascii_values_round_trip() -> None:
    record = UnitRecord(
        "ü.service", (UnitOption("Unit", "Description", "café ☕"),), HASH, JobState.LAUNCHED
    )
    assert decode_unit(KEY, encode_unit(record)) == record


def test_to_unit_parses_requirements_from_the_options() -> None:
    unit = decode_unit(KEY, encode_unit(web_record(JobState.LOADED))).to_unit()
    assert unit.name == "web@1.service"
    assert unit.hash == parse_unit(WEB_TEXT).hash
    assert unit.desired is JobState.LOADED
    assert unit.requirements == Requirements(
        metadata=(("role", frozenset({"web"})),), conflicts=("web@*.service",)
    )


def test_to_unit_substitutes_specifiers_with_the_records_name() -> None:
    options = (
        UnitOption("Service", "ExecStart", "/bin/true"),
        UnitOption("X-Fleet", "MachineOf", "db@%i.service"),
        UnitOption("X-Fleet", "Global", "false"),
    )
    unit = UnitRecord("app@7.service", options, HASH, JobState.LAUNCHED).to_unit()
    assert unit.requirements.machine_of == ("db@7.service",)
    assert unit.requirements.is_global is False


def test_to_unit_without_x_fleet_has_no_requirements() -> None:
    options = (UnitOption("Service", "ExecStart", "/bin/true"),)
    unit = UnitRecord("a.service", options, HASH, JobState.LAUNCHED).to_unit()
    assert unit.requirements is NO_REQUIREMENTS


def test_decoded_options_are_a_tuple() -> None:
    decoded = decode_unit(KEY, encode_unit(web_record()))
    assert isinstance(decoded.options, tuple)


# ---- machines


def test_machine_round_trip() -> None:
    m = Machine(MACHINE_ID, {"role": "web", "zone": "eu-1"}, "10.0.0.7")
    assert decode_machine("/fleet/machines/x", encode_machine(m, "0.1.0")) == m


def test_machine_field_names() -> None:
    m = Machine(MACHINE_ID, {"role": "db"}, "10.0.0.8")
    assert json.loads(encode_machine(m, "0.1.0")) == {
        "id": MACHINE_ID,
        "primaryIP": "10.0.0.8",
        "metadata": {"role": "db"},
        "version": "0.1.0",
    }


def test_machine_node_to_node_address_is_an_extension_field() -> None:
    m = Machine(MACHINE_ID, {}, "10.0.0.8", "10.0.0.8:49154")
    assert json.loads(encode_machine(m, "0.1.0"))["peerAddress"] == "10.0.0.8:49154"
    assert decode_machine("k", encode_machine(m, "0.1.0")) == m
    plain = Machine(MACHINE_ID, {}, "10.0.0.8")
    assert "peerAddress" not in json.loads(encode_machine(plain, "0.1.0"))  # fleet's shape


def test_machine_defaults_when_optional_fields_are_missing() -> None:
    m = decode_machine("k", dumps({"id": "m1"}))
    assert m == Machine("m1", {}, "")
    assert dict(m.metadata) == {}
    assert m.primary_ip == ""


def test_machine_metadata_null_reads_as_empty() -> None:
    # Go writes a nil map as null
    assert dict(decode_machine("k", dumps({"id": "m1", "metadata": None})).metadata) == {}


def test_machine_version_is_not_part_of_the_model() -> None:
    a = decode_machine("k", dumps({"id": "m1", "version": "0.1.0"}))
    b = decode_machine("k", dumps({"id": "m1", "version": "9.9.9"}))
    assert a == b == Machine("m1")


# ---- placements, reasons, leader


@pytest.mark.parametrize("desired", [JobState.LOADED, JobState.LAUNCHED])
def test_placement_round_trip(desired: JobState) -> None:
    p = Placement("a.service", MACHINE_ID, HASH, desired)
    key = f"/fleet/schedule/{MACHINE_ID}/a.service"
    assert decode_placement(key, encode_placement(p), MACHINE_ID, "a.service") == p


def test_placement_field_names() -> None:
    p = Placement("a.service", "m1", HASH, JobState.LAUNCHED)
    assert json.loads(encode_placement(p)) == {"hash": HASH, "desiredState": "launched"}


def test_placement_takes_machine_and_unit_from_the_key_not_the_value() -> None:
    raw = dumps({"hash": HASH, "desiredState": "loaded", "unit": "x", "machine": "y"})
    assert decode_placement("k", raw, "m2", "b.service") == Placement(
        "b.service", "m2", HASH, JobState.LOADED
    )


@pytest.mark.parametrize(
    "reasons",
    [(), ("no machines are available",), ("1 of 3 machines lack metadata role=db", "x; y")],
)
def test_reasons_round_trip(reasons: tuple[str, ...]) -> None:
    raw = encode_reasons(reasons)
    assert json.loads(raw) == {"reasons": list(reasons)}
    assert decode_reasons("k", raw) == reasons


@pytest.mark.parametrize("record", [LeaderRecord(MACHINE_ID, "0.1.0"), LeaderRecord("m1")])
def test_leader_round_trip(record: LeaderRecord) -> None:
    assert decode_leader("/fleet/engine/leader", encode_leader(record)) == record


def test_leader_field_names() -> None:
    assert json.loads(encode_leader(LeaderRecord(MACHINE_ID, "0.1.0"))) == {
        "machineID": MACHINE_ID,
        "version": "0.1.0",
    }
    assert json.loads(encode_leader(LeaderRecord("m1"))) == {"machineID": "m1", "version": ""}


def test_leader_without_version() -> None:
    assert decode_leader("k", dumps({"machineID": "m1"})) == LeaderRecord("m1", "")


def test_unknown_fields_are_ignored() -> None:
    assert decode_leader("k", dumps({"machineID": "m1", "term": 4})) == LeaderRecord("m1")
    assert decode_reasons("k", dumps({"reasons": ["r"], "at": 1})) == ("r",)


text = st.text(max_size=20)


@given(
    name=text,
    options=st.lists(st.tuples(text, text, text), max_size=5),
    hash_=text,
    desired=st.sampled_from(JobState),
)
def test_any_unit_record_round_trips(
    name: str, options: list[tuple[str, str, str]], hash_: str, desired: JobState
) -> None:
    record = UnitRecord(name, tuple(UnitOption(*o) for o in options), hash_, desired)
    assert decode_unit("k", encode_unit(record)) == record


@given(
    fields=st.tuples(text, text, text, text),
    since=st.floats(allow_nan=False, allow_infinity=False),
    load_error=text,
    pod_address=text,
)
def test_any_state_round_trips(
    fields: tuple[str, str, str, str], since: float, load_error: str, pod_address: str
) -> None:
    record = UnitStateRecord(*fields, since, load_error, pod_address)
    assert decode_state("k", encode_state(record)) == record


@given(
    machine_id=text,
    metadata=st.dictionaries(text, text, max_size=4),
    ip=text,
)
def test_any_machine_round_trips(machine_id: str, metadata: dict[str, str], ip: str) -> None:
    m = Machine(machine_id, metadata, ip)
    decoded = decode_machine("k", encode_machine(m, "v"))
    assert (decoded.id, dict(decoded.metadata), decoded.primary_ip) == (machine_id, metadata, ip)


@given(st.lists(text, max_size=5))
def test_any_reasons_round_trip(reasons: list[str]) -> None:
    assert decode_reasons("k", encode_reasons(tuple(reasons))) == tuple(reasons)


# ---- size limits, counted on the stored bytes


def _record(options: tuple[UnitOption, ...]) -> UnitRecord:
    return UnitRecord("a.service", options, HASH, JobState.LAUNCHED)


def test_each_option_adds_the_overhead_check_unit_counts() -> None:
    one, two = (UnitOption("S", "N", "V"),), (UnitOption("S", "N", "V"),) * 2
    assert len(encode_unit(_record(two))) - len(encode_unit(_record(one))) == (
        STORED_OPTION_OVERHEAD + 3
    )


@given(st.lists(st.tuples(text, text, text), max_size=8))
def test_check_units_lower_bound_never_exceeds_the_stored_size(
    options: list[tuple[str, str, str]],
) -> None:
    unit_options = tuple(UnitOption(*o) for o in options)
    stored = len(encode_unit(_record(unit_options)))
    assert stored_unit_bytes_at_least(UnitFile(unit_options)) <= stored


def test_a_unit_record_over_the_limit_is_not_encoded() -> None:
    def with_values(count: int, value: str) -> UnitRecord:
        return _record((UnitOption("Service", "ExecStart", value),) * count)

    fits = encode_unit(with_values(120, "x" * 2000))
    assert 240_000 < len(fits) <= MAX_UNIT_RECORD_BYTES
    with pytest.raises(
        RecordTooLarge, match=f"unit a.service would take .* {MAX_UNIT_RECORD_BYTES}"
    ):
        encode_unit(with_values(140, "x" * 2000))
    # counted as stored: 500 emoji are 2,000 bytes of UTF-8 but 6,000 as JSON escapes
    with pytest.raises(RecordTooLarge):
        encode_unit(with_values(50, "\U0001f600" * 500))


def test_a_metadata_value_over_the_limit_is_not_encoded() -> None:
    value = "v" * (MAX_METADATA_RECORD_BYTES - len('{"value":""}'))
    assert decode_metadata_value("k", encode_metadata_value(value)) == value
    with pytest.raises(RecordTooLarge, match="a metadata value would take 8193 bytes"):
        encode_metadata_value(value + "v")
    with pytest.raises(RecordTooLarge):
        encode_metadata_value("\u00e9" * 1400)  # 2,800 bytes of UTF-8, 8,400 stored


def test_a_record_over_the_limit_is_still_decoded() -> None:
    """Written before the limits, or by another writer: it must stay readable (and deletable)."""
    options = [{"section": "Unit", "name": "Description", "value": "x" * 1_000_000}]
    raw = dumps({"name": "a.service", "options": options, "hash": HASH, "desiredState": "loaded"})
    assert decode_unit(KEY, raw).options[0].value == "x" * 1_000_000


# ---- malformed input: every problem is a CodecError naming the key

Decoder = Callable[[str, bytes], object]


def _placement(key: str, raw: bytes) -> object:
    return decode_placement(key, raw, "m1", "a.service")


DECODERS: list[Decoder] = [
    decode_unit,
    decode_machine,
    _placement,
    decode_reasons,
    decode_leader,
    decode_state,
]
DECODER_IDS = ["unit", "machine", "placement", "reasons", "leader", "state"]


def expect_error(decode: Decoder, raw: bytes, message: str, key: str = KEY) -> None:
    with pytest.raises(CodecError) as caught:
        decode(key, raw)
    assert str(caught.value) == message


@pytest.mark.parametrize("decode", DECODERS, ids=DECODER_IDS)
@pytest.mark.parametrize("raw", [b"", b"{", b"not json", b'{"a":1,}', b"\xff\xfe\x00"])
def test_not_json(decode: Decoder, raw: bytes) -> None:
    with pytest.raises(CodecError, match=r"^/fleet/units/web@1\.service: not valid JSON \("):
        decode(KEY, raw)


@pytest.mark.parametrize("decode", DECODERS, ids=DECODER_IDS)
@pytest.mark.parametrize(
    ("raw", "kind"),
    [(b"[]", "list"), (b'"x"', "str"), (b"1", "int"), (b"1.5", "float"), (b"null", "NoneType")],
)
def test_not_an_object(decode: Decoder, raw: bytes, kind: str) -> None:
    expect_error(decode, raw, f"{KEY}: expected a JSON object, got {kind}")


def test_deeply_nested_json_is_a_codec_error() -> None:
    # nested deeper than json's recursion limit (100 kB, well under etcd's value size limit):
    # still just a bad record, which must not escape as RecursionError and stop the watch
    with pytest.raises(CodecError, match=r"^/fleet/units/web@1\.service: "):
        decode_unit(KEY, b"[" * 100_000)


GOOD_UNIT: dict[str, Any] = {
    "name": "a.service",
    "options": [{"section": "Service", "name": "ExecStart", "value": "/bin/true"}],
    "hash": HASH,
    "desiredState": "launched",
}


_MISSING: Any = object()


def unit_with(**changes: Any) -> bytes:
    obj = {**GOOD_UNIT, **changes}
    return dumps({k: v for k, v in obj.items() if v is not _MISSING})


def test_good_unit_fixture_decodes() -> None:
    assert decode_unit(KEY, unit_with()).name == "a.service"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (unit_with(name=_MISSING), f"{KEY}: field 'name' must be a string, got None"),
        (unit_with(name=7), f"{KEY}: field 'name' must be a string, got 7"),
        (unit_with(hash=None), f"{KEY}: field 'hash' must be a string, got None"),
        (unit_with(hash=["x"]), f"{KEY}: field 'hash' must be a string, got ['x']"),
        (
            unit_with(desiredState=_MISSING),
            f"{KEY}: field 'desiredState' must be a string, got None",
        ),
        (unit_with(desiredState=1), f"{KEY}: field 'desiredState' must be a string, got 1"),
        (unit_with(desiredState="running"), f"{KEY}: unknown desiredState 'running'"),
        (unit_with(desiredState="LAUNCHED"), f"{KEY}: unknown desiredState 'LAUNCHED'"),
        (unit_with(desiredState=""), f"{KEY}: unknown desiredState ''"),
        (unit_with(options=_MISSING), f"{KEY}: field 'options' must be a list"),
        (unit_with(options=None), f"{KEY}: field 'options' must be a list"),
        (unit_with(options={"section": "Service"}), f"{KEY}: field 'options' must be a list"),
        (unit_with(options="[Service]"), f"{KEY}: field 'options' must be a list"),
        (unit_with(options=["ExecStart=/bin/true"]), f"{KEY}: options[0] must be an object"),
        (
            unit_with(options=[GOOD_UNIT["options"][0], None]),
            f"{KEY}: options[1] must be an object",
        ),
        (
            unit_with(options=[{"name": "ExecStart", "value": "/bin/true"}]),
            f"{KEY} options[0]: field 'section' must be a string, got None",
        ),
        (
            unit_with(options=[{"section": "Service", "name": 3, "value": "x"}]),
            f"{KEY} options[0]: field 'name' must be a string, got 3",
        ),
        (
            unit_with(
                options=[
                    GOOD_UNIT["options"][0],
                    GOOD_UNIT["options"][0],
                    {"section": "Service", "name": "X", "value": False},
                ]
            ),
            f"{KEY} options[2]: field 'value' must be a string, got False",
        ),
    ],
)
def test_malformed_unit(raw: bytes, message: str) -> None:
    expect_error(decode_unit, raw, message)


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({}, "k: field 'id' must be a string, got None"),
        ({"id": 1}, "k: field 'id' must be a string, got 1"),
        ({"id": "m1", "primaryIP": None}, "k: field 'primaryIP' must be a string, got None"),
        ({"id": "m1", "primaryIP": 10}, "k: field 'primaryIP' must be a string, got 10"),
        ({"id": "m1", "metadata": {"role": 1}}, "k: field 'metadata' must map strings to strings"),
        (
            {"id": "m1", "metadata": {"role": None}},
            "k: field 'metadata' must map strings to strings",
        ),
        (
            {"id": "m1", "metadata": {"a": "b", "role": ["db"]}},
            "k: field 'metadata' must map strings to strings",
        ),
        ({"id": "m1", "metadata": ["role=db"]}, "k: field 'metadata' must map strings to strings"),
        ({"id": "m1", "metadata": "role=db"}, "k: field 'metadata' must map strings to strings"),
        ({"id": "m1", "metadata": 1}, "k: field 'metadata' must map strings to strings"),
        ({"id": "m1", "metadata": True}, "k: field 'metadata' must map strings to strings"),
    ],
)
def test_malformed_machine(obj: dict[str, Any], message: str) -> None:
    expect_error(decode_machine, dumps(obj), message, key="k")


@pytest.mark.parametrize("metadata", [[], "", 0, False], ids=["list", "str", "int", "bool"])
def test_falsy_metadata_that_is_not_an_object_is_malformed(metadata: object) -> None:
    # only a missing field or null (Go's nil map) may stand for "no metadata"
    expect_error(
        decode_machine,
        dumps({"id": "m1", "metadata": metadata}),
        "k: field 'metadata' must map strings to strings",
        key="k",
    )


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"desiredState": "launched"}, "k: field 'hash' must be a string, got None"),
        ({"hash": 5, "desiredState": "launched"}, "k: field 'hash' must be a string, got 5"),
        ({"hash": HASH}, "k: field 'desiredState' must be a string, got None"),
        ({"hash": HASH, "desiredState": "started"}, "k: unknown desiredState 'started'"),
        (
            {"hash": HASH, "desiredState": ["loaded"]},
            "k: field 'desiredState' must be a string, got ['loaded']",
        ),
    ],
)
def test_malformed_placement(obj: dict[str, Any], message: str) -> None:
    expect_error(_placement, dumps(obj), message, key="k")


@pytest.mark.parametrize(
    "obj",
    [
        {},
        {"reasons": None},
        {"reasons": "no machines are available"},
        {"reasons": {"0": "x"}},
        {"reasons": ["ok", 1]},
        {"reasons": [None]},
        {"reasons": [["nested"]]},
    ],
)
def test_malformed_reasons(obj: dict[str, Any]) -> None:
    expect_error(decode_reasons, dumps(obj), "k: field 'reasons' must be a list of strings", "k")


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({}, "k: field 'machineID' must be a string, got None"),
        ({"machineId": "m1"}, "k: field 'machineID' must be a string, got None"),
        ({"machineID": 1}, "k: field 'machineID' must be a string, got 1"),
        ({"machineID": "m1", "version": None}, "k: field 'version' must be a string, got None"),
        ({"machineID": "m1", "version": 1.0}, "k: field 'version' must be a string, got 1.0"),
    ],
)
def test_malformed_leader(obj: dict[str, Any], message: str) -> None:
    expect_error(decode_leader, dumps(obj), message, key="k")


def test_codec_error_is_a_value_error() -> None:
    assert issubclass(CodecError, ValueError)


# ---- unit states


def test_state_round_trip_and_field_names() -> None:
    state = UnitStateRecord("loaded", "active", "running", HASH, 1700000000.5)
    assert decode_state(KEY, encode_state(state)) == state
    assert json.loads(encode_state(state)) == {
        "loadState": "loaded",
        "activeState": "active",
        "subState": "running",
        "hash": HASH,
        "since": 1700000000.5,
    }


def test_state_load_error_is_kept_and_left_out_when_empty() -> None:
    refused = UnitStateRecord("bad-setting", "inactive", "dead", HASH, 1.0, "Unit x has a bad")
    assert decode_state(KEY, encode_state(refused)) == refused
    assert json.loads(encode_state(refused))["loadError"] == "Unit x has a bad"
    assert "loadError" not in json.loads(encode_state(UnitStateRecord("a", "b", "c", HASH)))


def test_state_pod_address_round_trips_and_is_left_out_when_empty() -> None:
    pod = UnitStateRecord("loaded", "active", "running", HASH, 1.0, pod_address="10.244.3.2")
    assert decode_state(KEY, encode_state(pod)) == pod
    assert json.loads(encode_state(pod))["podAddress"] == "10.244.3.2"
    assert "podAddress" not in json.loads(encode_state(UnitStateRecord("a", "b", "c", HASH)))
    obj = {"loadState": "loaded", "activeState": "active", "subState": "running", "hash": HASH}
    assert decode_state("k", dumps(obj)).pod_address == ""  # written by an older agent
    with pytest.raises(CodecError, match="k: field 'podAddress' must be a string, got 7"):
        decode_state("k", dumps({**obj, "podAddress": 7}))


def test_state_since_defaults_to_zero_and_takes_integers() -> None:
    obj = {"loadState": "loaded", "activeState": "inactive", "subState": "dead", "hash": HASH}
    assert decode_state("k", dumps(obj)).since == 0.0
    assert decode_state("k", dumps({**obj, "since": 12})).since == 12.0


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({}, "k: field 'loadState' must be a string, got None"),
        (
            {"loadState": "loaded", "activeState": 1, "subState": "x", "hash": HASH},
            "k: field 'activeState' must be a string, got 1",
        ),
        (
            {
                "loadState": "loaded",
                "activeState": "a",
                "subState": "x",
                "hash": HASH,
                "since": "1",
            },
            "k: field 'since' must be a number, got '1'",
        ),
        (
            {
                "loadState": "loaded",
                "activeState": "a",
                "subState": "x",
                "hash": HASH,
                "since": True,
            },
            "k: field 'since' must be a number, got True",
        ),
    ],
)
def test_malformed_state(obj: dict[str, Any], message: str) -> None:
    expect_error(decode_state, dumps(obj), message, key="k")
