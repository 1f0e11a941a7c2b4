"""JSON values stored in etcd, and their conversion to and from the domain model.

Every record is a JSON object with camelCase fields, the names of `docs/architecture.md`:

    units/<unit>          {"name", "options": [{"section","name","value"}], "hash", "desiredState"}
    machines/<id>         {"id", "primaryIP", "metadata": {k: v}, "version"[, "peerAddress"]}
    schedule/<m>/<unit>   {"hash", "desiredState"}
    states/<m>/<unit>     {"loadState", "activeState", "subState", "hash", "since"}  (since: Unix s)
                          [+ "loadError", "podAddress": pyfleet's, absent when empty]
    unplaceable/<unit>    {"reasons": [...]}
    metadata/<m>/<key>    {"value"}  ("" removes the key, the machine's own value included)
    engine/leader         {"machineID", "version"}

Decoding never trusts the bytes: a malformed record raises `CodecError` naming the key and the
problem, and the caller skips it (one bad key must not stop the engine).

Encoding a unit or a metadata value over its size limit (`fleetd.core.submission`) raises
`RecordTooLarge` instead, so no writer can store one. Decoding has no limit: a record stored
before, or by another writer, is still read, shown and deletable.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fleetd.core.model import Machine, Placement, Unit
from fleetd.core.requirements import parse_requirements
from fleetd.core.states import JobState
from fleetd.core.submission import (
    MAX_METADATA_RECORD_BYTES,
    MAX_UNIT_RECORD_BYTES,
    check_record_size,
)
from fleetd.core.unitfile import UnitFile, UnitOption, unit_from_options


class CodecError(ValueError):
    """A stored value that cannot be read; the message names the key and the problem."""


def _dump(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def _load(key: str, raw: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CodecError(f"{key}: not valid JSON ({exc})") from None
    except RecursionError:
        raise CodecError(f"{key}: not valid JSON (nested too deeply)") from None
    if not isinstance(obj, dict):
        raise CodecError(f"{key}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _str(key: str, obj: Mapping[str, Any], name: str, *, default: str | None = None) -> str:
    value = obj.get(name, default)
    if not isinstance(value, str):
        raise CodecError(f"{key}: field {name!r} must be a string, got {value!r}")
    return value


def _state(key: str, obj: Mapping[str, Any]) -> JobState:
    value = _str(key, obj, "desiredState")
    try:
        return JobState(value)
    except ValueError:
        raise CodecError(f"{key}: unknown desiredState {value!r}") from None


@dataclass(frozen=True, slots=True)
class UnitRecord:
    """A unit as stored under `units/<name>`."""

    name: str
    options: tuple[UnitOption, ...]
    hash: str
    desired: JobState

    @property
    def unit_file(self) -> UnitFile:
        return unit_from_options(self.options)

    def to_unit(self) -> Unit:
        """The engine's view: requirements parsed, options dropped."""
        return Unit(
            self.name, self.hash, self.desired, parse_requirements(self.name, self.unit_file)
        )


def encode_unit(record: UnitRecord) -> bytes:
    """The stored form; `RecordTooLarge` if it is over MAX_UNIT_RECORD_BYTES."""
    options = [{"section": o.section, "name": o.name, "value": o.value} for o in record.options]
    encoded = _dump(
        {
            "name": record.name,
            "options": options,
            "hash": record.hash,
            "desiredState": str(record.desired),
        }
    )
    check_record_size(f"unit {record.name}", len(encoded), MAX_UNIT_RECORD_BYTES)
    return encoded


def decode_unit(key: str, raw: bytes) -> UnitRecord:
    obj = _load(key, raw)
    options = obj.get("options")
    if not isinstance(options, list):
        raise CodecError(f"{key}: field 'options' must be a list")
    parsed: list[UnitOption] = []
    for index, option in enumerate(options):
        if not isinstance(option, dict):
            raise CodecError(f"{key}: options[{index}] must be an object")
        where = f"{key} options[{index}]"
        parsed.append(
            UnitOption(
                _str(where, option, "section"),
                _str(where, option, "name"),
                _str(where, option, "value"),
            )
        )
    return UnitRecord(
        _str(key, obj, "name"), tuple(parsed), _str(key, obj, "hash"), _state(key, obj)
    )


def encode_machine(machine: Machine, version: str) -> bytes:
    record: dict[str, object] = {
        "id": machine.id,
        "primaryIP": machine.primary_ip,
        "metadata": dict(machine.metadata),
        "version": version,
    }
    if machine.peer_address:  # pyfleet's extension; absent keeps fleet's shape exactly
        record["peerAddress"] = machine.peer_address
    return _dump(record)


def decode_machine(key: str, raw: bytes) -> Machine:
    obj = _load(key, raw)
    metadata = obj.get("metadata")
    if metadata is None:  # absent, or null as Go writes an empty map
        metadata = {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise CodecError(f"{key}: field 'metadata' must map strings to strings")
    return Machine(
        _str(key, obj, "id"),
        metadata,
        _str(key, obj, "primaryIP", default=""),
        _str(key, obj, "peerAddress", default=""),
    )


def encode_placement(placement: Placement) -> bytes:
    return _dump({"hash": placement.hash, "desiredState": str(placement.desired)})


def decode_placement(key: str, raw: bytes, machine: str, unit: str) -> Placement:
    obj = _load(key, raw)
    return Placement(unit, machine, _str(key, obj, "hash"), _state(key, obj))


@dataclass(frozen=True, slots=True)
class UnitStateRecord:
    """systemd's view of a unit on one machine, as that machine's agent publishes it.

    The three states are systemd's strings (`loaded`, `active`, `running`, ...), `hash` is the
    hash of the unit file the agent loaded, `since` the Unix time (seconds) it entered this state,
    `load_error` systemd's reason for refusing to load the file (empty when it loaded), and
    `pod_address` the IPv4 address of the unit's pod on the cluster network while the unit is
    active (empty for a unit that runs no pod; `fleetd.core.pod_address`).
    """

    load_state: str
    active_state: str
    sub_state: str
    hash: str
    since: float = 0.0
    load_error: str = ""
    pod_address: str = ""


def encode_state(record: UnitStateRecord) -> bytes:
    fields: dict[str, Any] = {
        "loadState": record.load_state,
        "activeState": record.active_state,
        "subState": record.sub_state,
        "hash": record.hash,
        "since": record.since,
    }
    if record.load_error:
        fields["loadError"] = record.load_error
    if record.pod_address:
        fields["podAddress"] = record.pod_address
    return _dump(fields)


def decode_state(key: str, raw: bytes) -> UnitStateRecord:
    obj = _load(key, raw)
    since = obj.get("since", 0)
    if isinstance(since, bool) or not isinstance(since, int | float):
        raise CodecError(f"{key}: field 'since' must be a number, got {since!r}")
    return UnitStateRecord(
        _str(key, obj, "loadState"),
        _str(key, obj, "activeState"),
        _str(key, obj, "subState"),
        _str(key, obj, "hash"),
        float(since),
        _str(key, obj, "loadError", default=""),
        _str(key, obj, "podAddress", default=""),
    )


def encode_reasons(reasons: tuple[str, ...]) -> bytes:
    return _dump({"reasons": list(reasons)})


def decode_reasons(key: str, raw: bytes) -> tuple[str, ...]:
    obj = _load(key, raw)
    reasons = obj.get("reasons")
    if not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons):
        raise CodecError(f"{key}: field 'reasons' must be a list of strings")
    return tuple(reasons)


@dataclass(frozen=True, slots=True)
class LeaderRecord:
    """Who leads the engines."""

    machine_id: str
    version: str = ""


def encode_leader(record: LeaderRecord) -> bytes:
    return _dump({"machineID": record.machine_id, "version": record.version})


def decode_leader(key: str, raw: bytes) -> LeaderRecord:
    obj = _load(key, raw)
    return LeaderRecord(_str(key, obj, "machineID"), _str(key, obj, "version", default=""))


def encode_metadata_value(value: str) -> bytes:
    """The stored form; `RecordTooLarge` if it is over MAX_METADATA_RECORD_BYTES."""
    encoded = _dump({"value": value})
    check_record_size("a metadata value", len(encoded), MAX_METADATA_RECORD_BYTES)
    return encoded


def decode_metadata_value(key: str, raw: bytes) -> str:
    return _str(key, _load(key, raw), "value")
