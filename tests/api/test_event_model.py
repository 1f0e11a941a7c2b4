"""The event stream's vocabulary: what each etcd change becomes, its id, and the filters."""

from __future__ import annotations

import json

import pytest

from fleetd.api.event_model import BadPosition, EventFilter, Position, describe
from fleetd.core.model import Machine, Placement
from fleetd.core.states import JobState
from fleetd.core.unitfile import UnitFile, UnitOption
from fleetd.registry.client import Event, KeyValue
from fleetd.registry.codec import (
    UnitRecord,
    UnitStateRecord,
    encode_machine,
    encode_placement,
    encode_reasons,
    encode_state,
    encode_unit,
)
from fleetd.registry.keys import Keys
from tests.api.helpers import M1, M2, simple_options

KEYS = Keys("/fleet/")


def kv(key: str, value: bytes, revision: int) -> KeyValue:
    return KeyValue(key, value, 1, revision, 1, 0)


def put(key: str, value: bytes, revision: int, prev: bytes | None = None) -> Event:
    before = kv(key, prev, revision - 1) if prev is not None else None
    return Event("put", kv(key, value, revision), before)


def delete(key: str, revision: int) -> Event:
    return Event("delete", kv(key, b"", revision))


def unit(name: str, desired: JobState = JobState.LAUNCHED, description: str = "x") -> bytes:
    opts = simple_options(description)
    return encode_unit(UnitRecord(name, opts, UnitFile(opts).hash, desired))


def payloads(events: list[Event]) -> list[tuple[str, str, dict[str, object]]]:
    result = []
    for event in describe(KEYS, events):
        lines = event.frame.decode().splitlines()
        assert lines[0] == f"id: {event.id}"
        assert lines[1] == f"event: {event.kind}"
        result.append((event.id, event.kind, json.loads(lines[2].removeprefix("data: "))))
    return result


def test_unit_changes_are_told_apart() -> None:
    key = KEYS.unit("a.service")
    loaded = unit("a.service", JobState.LOADED)
    launched = unit("a.service", JobState.LAUNCHED)
    other = unit("a.service", JobState.LAUNCHED, "changed")
    got = payloads(
        [
            put(key, loaded, 10),
            put(key, launched, 11, prev=loaded),
            put(key, launched, 12, prev=launched),  # nothing changed: no event
            put(key, other, 13, prev=launched),
            delete(key, 14),
        ]
    )
    assert [(i, k, d.get("action")) for i, k, d in got] == [
        ("10", "unit", "submitted"),
        ("11", "desired-state", None),
        ("13", "unit", "replaced"),
        ("14", "unit", "destroyed"),
    ]
    assert got[1][2] == {
        "revision": 11,
        "unit": "a.service",
        "desiredState": "launched",
        "previous": "loaded",
    }


def test_placements_states_reasons_and_machines() -> None:
    placement = encode_placement(Placement("a.service", M1, "h", JobState.LAUNCHED))
    state = encode_state(UnitStateRecord("loaded", "active", "running", "h", 5.0))
    got = payloads(
        [
            put(KEYS.placement(M1, "a.service"), placement, 20),
            put(KEYS.state(M1, "a.service"), state, 21),
            put(KEYS.unplaceable_unit("b.service"), encode_reasons(("no machine",)), 22),
            put(KEYS.machine(M2), encode_machine(Machine(M2, {"role": "db"}, "10.0.0.2"), "v"), 23),
            put(KEYS.metadata_key(M2, "az"), b'{"value":"1"}', 24),
            put(KEYS.leader, b"{}", 25),  # not part of the stream
            delete(KEYS.state(M1, "a.service"), 26),
            delete(KEYS.placement(M1, "a.service"), 27),
            delete(KEYS.unplaceable_unit("b.service"), 28),
            delete(KEYS.machine(M2), 29),
        ]
    )
    assert [(k, d.get("action")) for _, k, d in got] == [
        ("placement", "scheduled"),
        ("unit-state", "published"),
        ("unplaceable", None),
        ("machine", "joined"),
        ("machine", "metadata"),
        ("unit-state", "removed"),
        ("placement", "unscheduled"),
        ("unplaceable", None),
        ("machine", "left"),
    ]
    assert got[1][2]["activeState"] == "active"
    assert got[1][2]["machineID"] == M1
    assert got[2][2]["reasons"] == ["no machine"]
    assert got[7][2]["reasons"] == []
    assert got[3][2]["metadata"] == {"role": "db"}


def test_a_pods_address_appearing_is_a_state_event_that_carries_it() -> None:
    key = KEYS.state(M1, "pod.service")
    bare = encode_state(UnitStateRecord("loaded", "active", "running", "h", 5.0))
    pod = encode_state(UnitStateRecord("loaded", "active", "running", "h", 5.0, "", "10.244.3.2"))
    got = payloads([put(key, bare, 20), put(key, pod, 21, prev=bare)])
    assert "podAddress" not in got[0][2]
    assert got[1][2]["podAddress"] == "10.244.3.2"


def test_events_of_one_revision_are_numbered_and_the_last_has_the_plain_revision() -> None:
    state = encode_state(UnitStateRecord("loaded", "active", "running", "h", 5.0))
    events = [put(KEYS.state(M1, f"u{i}.service"), state, 30) for i in range(3)]
    events.append(put(KEYS.state(M1, "v.service"), state, 31))
    assert [e.id for e in describe(KEYS, events)] == ["30.0", "30.1", "30", "31"]


def test_an_unreadable_record_is_skipped() -> None:
    events = [put(KEYS.unit("a.service"), b"not json", 40), delete(KEYS.unit("a.service"), 41)]
    assert [e.id for e in describe(KEYS, events)] == ["41"]


@pytest.mark.parametrize(
    ("text", "position"),
    [("12", Position(12)), ("12.3", Position(12, 3)), (" 7 ", Position(7))],
)
def test_positions_parse(text: str, position: Position) -> None:
    assert Position.parse(text) == position


@pytest.mark.parametrize("text", ["", "x", "1.x", "-1", "1.-2", "1.2.3"])
def test_bad_positions_are_refused_with_the_id_named(text: str) -> None:
    with pytest.raises(BadPosition, match="bad event id"):
        Position.parse(text)


def test_position_order_within_a_revision() -> None:
    state = encode_state(UnitStateRecord("loaded", "active", "running", "h", 5.0))
    first, second, last = describe(KEYS, [put(KEYS.state(M1, f"{i}"), state, 9) for i in "abc"])
    assert [Position(9, 0).before(e) for e in (first, second, last)] == [False, True, True]
    assert [Position(9).before(e) for e in (first, second, last)] == [False, False, False]
    assert [Position(8).before(e) for e in (first, second, last)] == [True, True, True]


def test_filters() -> None:
    placement = encode_placement(Placement("web@1.service", M1, "h", JobState.LAUNCHED))
    machine = encode_machine(Machine(M2, {}, ""), "v")
    events = describe(
        KEYS,
        [
            put(KEYS.unit("web@1.service"), unit("web@1.service"), 1),
            put(KEYS.unit("db.service"), unit("db.service"), 2),
            put(KEYS.placement(M1, "web@1.service"), placement, 3),
            put(KEYS.machine(M2), machine, 4),
        ],
    )

    def kept(wanted: EventFilter) -> list[int]:
        return [e.revision for e in events if wanted.matches(e)]

    assert kept(EventFilter()) == [1, 2, 3, 4]
    assert kept(EventFilter.build(["web@*"], [], [])) == [1, 3]
    assert kept(EventFilter.build([], [M1[:8]], [])) == [3]
    assert kept(EventFilter.build([], [], ["unit,machine"])) == [1, 2, 4]
    with pytest.raises(ValueError, match="unknown event kind 'units'"):
        EventFilter.build([], [], ["units"])
    with pytest.raises(ValueError, match="empty"):
        EventFilter.build([""], [], [])


def test_a_global_unit_says_so() -> None:
    opts = (*simple_options("g"), UnitOption("X-Fleet", "Global", "true"))
    record = encode_unit(UnitRecord("g.service", opts, UnitFile(opts).hash, JobState.LAUNCHED))
    plain = unit("p.service")
    got = payloads(
        [put(KEYS.unit("g.service"), record, 50), put(KEYS.unit("p.service"), plain, 51)]
    )
    assert got[0][2]["global"] is True
    assert "global" not in got[1][2]
