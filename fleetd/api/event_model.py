"""What the event stream says: etcd changes turned into cluster events, their ids and filters.

`describe` is pure: the same etcd events (with their previous values, `prev_kv`) always give the
same cluster events in the same order, so the shared watch and a client's catch-up from etcd
history number them identically.

Kinds (`data` is JSON, camelCase as fleet's API), and the keys they come from:

* `unit` (`units/<unit>`): action submitted, replaced or destroyed; desiredState, hash, and
  `global: true` for a global unit.
* `desired-state` (`units/<unit>`, only the target state changed): desiredState, previous.
* `placement` (`schedule/<m>/<unit>`): action scheduled, changed or unscheduled; desiredState.
* `unplaceable` (`unplaceable/<unit>`): reasons (an empty list: placeable again).
* `unit-state` (`states/<m>/<unit>`): action published or removed; systemd's states, hash, since
  (`loadError`, `podAddress` when set).
* `machine` (`machines/<m>`, `metadata/<m>/<key>`): action joined, changed, left or metadata.

Every data object also holds `revision`, `unit` and/or `machineID`. A put that changes nothing
gives no event; an undecodable record is skipped (logged by the caller's view, not here).

Ids: an event's `id` is the etcd revision that made it. When one revision (a transaction) makes
several events, every one but the last has the id `<revision>.<n>` (n counted from 0), so a
client that reconnects in the middle of a transaction resumes exactly after what it saw.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from fleetd.core.requirements import X_FLEET, parse_requirements
from fleetd.registry.client import Event, KeyValue
from fleetd.registry.codec import (
    CodecError,
    decode_machine,
    decode_metadata_value,
    decode_placement,
    decode_reasons,
    decode_state,
    decode_unit,
)
from fleetd.registry.keys import Keys

KINDS: Final = ("unit", "desired-state", "placement", "unplaceable", "unit-state", "machine")
RELIST: Final = "relist"
DROPPED: Final = "dropped"


class BadPosition(ValueError):
    """A Last-Event-ID that is not `<revision>` or `<revision>.<n>`."""


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """Where a client is in the stream: after event `index` of `revision` (None: all of it)."""

    revision: int
    index: int | None = None

    @classmethod
    def parse(cls, text: str) -> Position:
        revision, dot, index = text.strip().partition(".")
        try:
            parsed = cls(int(revision), int(index) if dot else None)
        except ValueError:
            raise BadPosition(
                f"bad event id {text!r}: expected <revision> or <revision>.<n>"
            ) from None
        if parsed.revision < 0 or (parsed.index is not None and parsed.index < 0):
            raise BadPosition(f"bad event id {text!r}: numbers must not be negative")
        return parsed

    def before(self, event: ClusterEvent) -> bool:
        """True if `event` comes after this position (the client has not seen it)."""
        if event.revision != self.revision:
            return event.revision > self.revision
        return self.index is not None and event.index > self.index


@dataclass(frozen=True, slots=True)
class ClusterEvent:
    """One event of the stream, its SSE frame built once and shared by every client."""

    revision: int
    index: int
    last: bool
    kind: str
    unit: str | None
    machine: str | None
    frame: bytes

    @property
    def id(self) -> str:
        return str(self.revision) if self.last else f"{self.revision}.{self.index}"


def frame(event_id: str | None, kind: str, data: dict[str, Any]) -> bytes:
    """One SSE event; without `event_id` it has no `id:` line (the client's id stays as it was)."""
    payload = json.dumps(data, separators=(",", ":"), ensure_ascii=True)
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: {payload}\n\n".encode()


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events a client wants: unit name globs, machine id prefixes, kinds (empty: all).

    With a unit filter, events that name no unit (a machine's) are left out; with a machine
    filter, events that name no machine (a unit's own) are left out.
    """

    units: tuple[str, ...] = ()
    machines: tuple[str, ...] = ()
    kinds: frozenset[str] = frozenset()

    @classmethod
    def build(
        cls, units: Sequence[str], machines: Sequence[str], kinds: Sequence[str]
    ) -> EventFilter:
        wanted = {k.strip() for value in kinds for k in value.split(",") if k.strip()}
        unknown = sorted(wanted - set(KINDS))
        if unknown:
            raise ValueError(f"unknown event kind {unknown[0]!r}; kinds are {', '.join(KINDS)}")
        for pattern in (*units, *machines):
            if not pattern:
                raise ValueError("an empty unit or machine filter matches nothing")
        return cls(tuple(units), tuple(machines), frozenset(wanted))

    def matches(self, event: ClusterEvent) -> bool:
        if self.kinds and event.kind not in self.kinds:
            return False
        if self.units and (
            event.unit is None or not any(fnmatch.fnmatchcase(event.unit, p) for p in self.units)
        ):
            return False
        return not self.machines or (
            event.machine is not None and any(event.machine.startswith(m) for m in self.machines)
        )


_Described = tuple[str, str | None, str | None, dict[str, Any]]  # kind, unit, machine, data


def describe(keys: Keys, events: Iterable[Event]) -> list[ClusterEvent]:
    """The cluster events of etcd `events` (in revision order), numbered within each revision."""
    described: list[tuple[int, _Described]] = []
    for event in events:
        try:
            found = _describe_one(keys, event)
        except (CodecError, ValueError):
            continue  # an unreadable record: the views log it and keep the last good value
        if found is not None:
            described.append((event.kv.mod_revision, found))
    result: list[ClusterEvent] = []
    for position, (revision, (kind, unit, machine, fields)) in enumerate(described):
        index = 0 if not result or result[-1].revision != revision else result[-1].index + 1
        last = position + 1 == len(described) or described[position + 1][0] != revision
        data = {"revision": revision, **fields}
        event_id = str(revision) if last else f"{revision}.{index}"
        result.append(
            ClusterEvent(revision, index, last, kind, unit, machine, frame(event_id, kind, data))
        )
    return result


def _describe_one(keys: Keys, event: Event) -> _Described | None:
    kv, prev, deleted = event.kv, event.prev, event.kind == "delete"
    key = kv.key
    if key.startswith(keys.units):
        return _unit(keys.name_under(keys.units, key), kv, prev, deleted)
    if key.startswith(keys.schedule):
        machine, unit = keys.split_pair(keys.schedule, key)
        data: dict[str, Any] = {"unit": unit, "machineID": machine}
        if deleted:
            return "placement", unit, machine, {**data, "action": "unscheduled"}
        placement = decode_placement(key, kv.value, machine, unit)
        if prev is not None and decode_placement(key, prev.value, machine, unit) == placement:
            return None
        action = "scheduled" if prev is None else "changed"
        desired = {"desiredState": str(placement.desired), "hash": placement.hash}
        return "placement", unit, machine, {**data, "action": action, **desired}
    if key.startswith(keys.states):
        machine, unit = keys.split_pair(keys.states, key)
        data = {"unit": unit, "machineID": machine}
        if deleted:
            return "unit-state", unit, machine, {**data, "action": "removed"}
        state = decode_state(key, kv.value)
        if prev is not None and decode_state(key, prev.value) == state:
            return None
        systemd = {
            "loadState": state.load_state,
            "activeState": state.active_state,
            "subState": state.sub_state,
            "hash": state.hash,
            "since": state.since,
        }
        if state.load_error:
            systemd["loadError"] = state.load_error
        if state.pod_address:
            systemd["podAddress"] = state.pod_address
        return "unit-state", unit, machine, {**data, "action": "published", **systemd}
    if key.startswith(keys.unplaceable):
        unit = keys.name_under(keys.unplaceable, key)
        reasons = [] if deleted else list(decode_reasons(key, kv.value))
        return "unplaceable", unit, None, {"unit": unit, "reasons": reasons}
    if key.startswith(keys.machines):
        machine = keys.name_under(keys.machines, key)
        if deleted:
            return "machine", None, machine, {"machineID": machine, "action": "left"}
        record = decode_machine(key, kv.value)
        if prev is not None and decode_machine(key, prev.value) == record:
            return None
        details = {"primaryIP": record.primary_ip, "metadata": dict(record.metadata)}
        action = "joined" if prev is None else "changed"
        return "machine", None, machine, {"machineID": machine, "action": action, **details}
    if key.startswith(keys.metadata):
        machine, name = keys.split_pair(keys.metadata, key)
        value = None if deleted else decode_metadata_value(key, kv.value)
        data = {"machineID": machine, "action": "metadata", "key": name, "value": value}
        return "machine", None, machine, data
    return None  # the leader, the network: not part of the stream


def _unit(name: str, kv: KeyValue, prev: KeyValue | None, deleted: bool) -> _Described | None:
    if deleted:
        return "unit", name, None, {"unit": name, "action": "destroyed"}
    record = decode_unit(kv.key, kv.value)
    before = decode_unit(kv.key, prev.value) if prev is not None else None
    if before is not None and before.hash == record.hash:
        if before.desired == record.desired:
            return None
        change = {"desiredState": str(record.desired), "previous": str(before.desired)}
        return "desired-state", name, None, {"unit": name, **change}
    action = "submitted" if before is None else "replaced"
    data: dict[str, Any] = {"unit": name, "action": action, "desiredState": str(record.desired)}
    data["hash"] = record.hash
    if any(o.section == X_FLEET for o in record.options) and (
        parse_requirements(name, record.unit_file).is_global
    ):
        data["global"] = True
    return "unit", name, None, data
