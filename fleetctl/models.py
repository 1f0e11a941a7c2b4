"""The v1 API's entities as fleetctl reads them: `Unit`, `UnitState` and `Machine`.

Role: turn the JSON the API sends into small immutable values, and back into JSON in the API's
own field names (for `--output json`). Reading is lenient in the way fleet's Go client is: a
missing field is the empty value (the API leaves empty fields out). A field of the wrong type is
a protocol error, raised as `ValueError` naming the field.

Invariants: values are frozen; `Unit.options` keeps the API's order, so `Unit.unit_file.hash` is
the unit's fleet hash; `unplaceable_reasons` comes from pyfleet's extension field
`unplaceableReasons` (absent on plain fleet, and then empty).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fleetd.core.requirements import parse_requirements
from fleetd.core.unitfile import UnitFile, UnitOption


def _text(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"field {key!r} is not a string: {value!r}")
    return value


def _object(data: object, what: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise ValueError(f"{what} is not a JSON object: {data!r}")
    return data


def _list(data: Mapping[str, Any], key: str) -> list[Any]:
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"field {key!r} is not a list: {value!r}")
    return value


def options_from_json(items: list[Any]) -> tuple[UnitOption, ...]:
    options = []
    for item in items:
        option = _object(item, "a unit option")
        options.append(
            UnitOption(_text(option, "section"), _text(option, "name"), _text(option, "value"))
        )
    return tuple(options)


def options_to_json(options: tuple[UnitOption, ...]) -> list[dict[str, str]]:
    return [{"name": o.name, "section": o.section, "value": o.value} for o in options]


@dataclass(frozen=True, slots=True)
class Unit:
    """A unit in the registry, with its desired and current state and its target machine."""

    name: str
    options: tuple[UnitOption, ...] = ()
    desired_state: str = ""
    current_state: str = ""
    machine_id: str = ""
    unplaceable_reasons: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: object) -> Unit:
        unit = _object(data, "a unit")
        reasons = _list(unit, "unplaceableReasons")
        return cls(
            name=_text(unit, "name"),
            options=options_from_json(_list(unit, "options")),
            desired_state=_text(unit, "desiredState"),
            current_state=_text(unit, "currentState"),
            machine_id=_text(unit, "machineID"),
            unplaceable_reasons=tuple(str(reason) for reason in reasons),
        )

    def to_json(self) -> dict[str, Any]:
        """The API's Unit JSON (empty fields left out), plus the extension field if set."""
        data: dict[str, Any] = {
            "currentState": self.current_state,
            "desiredState": self.desired_state,
            "machineID": self.machine_id,
            "name": self.name,
            "options": options_to_json(self.options),
            "unplaceableReasons": list(self.unplaceable_reasons),
        }
        return {key: value for key, value in data.items() if value}

    @property
    def unit_file(self) -> UnitFile:
        return UnitFile(self.options)

    @property
    def is_global(self) -> bool:
        """Whether `[X-Fleet] Global=` is true (fleet's `suToGlobal`)."""
        return parse_requirements(self.name, self.unit_file).is_global

    @property
    def competes(self) -> bool:
        """Whether which unit arrives first decides where this one goes (`Conflicts=` or
        `Replaces=`): fleet places such units in the order their states were set."""
        requirements = parse_requirements(self.name, self.unit_file)
        return bool(requirements.conflicts or requirements.replaces)

    @property
    def description(self) -> str:
        """The first `[Unit] Description`, or "" without one."""
        values = self.unit_file.values("Unit", "Description")
        return values[0] if values else ""

    @property
    def observed_state(self) -> str:
        """The state a wait compares: the current state, or the desired one for global units
        (they have no single current state)."""
        return self.desired_state if self.is_global else self.current_state


@dataclass(frozen=True, slots=True)
class UnitState:
    """What systemd reports for one unit on one machine."""

    name: str
    machine_id: str = ""
    hash: str = ""
    load_state: str = ""
    active_state: str = ""
    sub_state: str = ""
    load_error: str = ""
    pod_address: str = ""  # pyfleet's extension: the unit's pod on the cluster network

    @classmethod
    def from_json(cls, data: object) -> UnitState:
        state = _object(data, "a unit state")
        return cls(
            name=_text(state, "name"),
            machine_id=_text(state, "machineID"),
            hash=_text(state, "hash"),
            load_state=_text(state, "systemdLoadState"),
            active_state=_text(state, "systemdActiveState"),
            sub_state=_text(state, "systemdSubState"),
            load_error=_text(state, "systemdLoadError"),
            pod_address=_text(state, "podAddress"),
        )

    def to_json(self) -> dict[str, str]:
        data = {
            "hash": self.hash,
            "machineID": self.machine_id,
            "name": self.name,
            "systemdActiveState": self.active_state,
            "systemdLoadState": self.load_state,
            "systemdSubState": self.sub_state,
            "systemdLoadError": self.load_error,
            "podAddress": self.pod_address,
        }
        return {key: value for key, value in data.items() if value}


@dataclass(frozen=True, slots=True)
class Machine:
    """A live machine: its id, public IP and metadata."""

    id: str
    primary_ip: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict, hash=False)

    @classmethod
    def from_json(cls, data: object) -> Machine:
        machine = _object(data, "a machine")
        metadata = _object(machine.get("metadata") or {}, "machine metadata")
        return cls(
            id=_text(machine, "id"),
            primary_ip=_text(machine, "primaryIP"),
            metadata={str(key): str(value) for key, value in metadata.items()},
        )

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "metadata": dict(self.metadata),
            "primaryIP": self.primary_ip,
        }
        return {key: value for key, value in data.items() if value}
