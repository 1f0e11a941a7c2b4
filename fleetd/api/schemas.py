"""The v1 wire format: entities out (fleet's field names and order, empty fields left out), request
bodies in (decoded the way Go's `encoding/json` decodes them).

Each shape is described once, by a pydantic model below (its fields, their order, types and
descriptions): the OpenAPI document shows the model, and the serializers and decoders take their
keys from it, in its order. The models never touch a request or a response: the hot paths build
plain dicts and decode by hand.

Output invariants (what fleet's Go server writes):
* fields in the order fleet's Go structs declare them (`docs/api.md`); every field is
  `omitempty`, so "", [] and {} are left out and an empty page is `{}`; map keys sorted;
* compact JSON, UTF-8, with `<`, `>`, `&`, U+2028 and U+2029 escaped as Go escapes them.
* The one extension: a Unit carries `unplaceableReasons` (last) only when the engine stored
  reasons for it, so fleet's exchanges are unchanged.

Input invariants (Go's decoder into fleet's structs):
* only the first JSON value of a body is read; keys match field names case-insensitively (the last
  match wins); unknown keys are ignored; `null` leaves a field empty; a wrong type is an error
  naming the field, with Go's wording.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from fleetd.core import model
from fleetd.core.names import go_quote_char
from fleetd.core.states import JobState
from fleetd.core.unitfile import UnitOption as Option
from fleetd.registry.codec import UnitRecord, UnitStateRecord

# ------------------------------------------------------------- the shapes

_State = Literal["inactive", "loaded", "launched"]


class _Wire(BaseModel):
    """A v1 shape: its fields in the order fleet writes them (the serializers below follow it)."""

    model_config = ConfigDict(extra="allow")


class UnitOption(_Wire):
    name: str = ""
    section: str = ""
    value: str = ""


class Unit(_Wire):
    currentState: _State | None = None
    desiredState: _State | None = None
    machineID: str | None = Field(None, description="where the unit is placed; absent if global")
    name: str | None = None
    options: list[UnitOption] | None = None
    unplaceableReasons: list[str] | None = Field(
        None, description="pyfleet extension: why the engine cannot place the unit"
    )


class UnitPage(_Wire):
    nextPageToken: str | None = None
    units: list[Unit] | None = None


class UnitState(_Wire):
    hash: str | None = None
    machineID: str | None = None
    name: str | None = None
    systemdActiveState: str | None = None
    systemdLoadState: str | None = None
    systemdSubState: str | None = None
    systemdLoadError: str | None = None
    podAddress: str | None = Field(
        None,
        description="pyfleet extension: the IPv4 address of the unit's pod on the cluster"
        " network, while the unit is active; absent for a unit that runs no pod",
    )


class UnitStatePage(_Wire):
    nextPageToken: str | None = None
    states: list[UnitState] | None = None


class Machine(_Wire):
    id: str | None = None
    metadata: dict[str, str] | None = None
    primaryIP: str | None = None


class MachinePage(_Wire):
    machines: list[Machine] | None = None
    nextPageToken: str | None = None


class MetadataValue(_Wire):
    value: str = ""


class MachineMetadataOp(_Wire):
    op: Literal["add", "remove", "replace"]
    path: str = Field(description="/<machineID>/metadata/<key>")
    value: MetadataValue | str | None = None


class ErrorEntity(BaseModel):
    code: int
    message: str


class Error(BaseModel):
    error: ErrorEntity


class Health(BaseModel):
    status: Literal["ok"]
    viewReady: bool


def _keys(shape: type[BaseModel]) -> tuple[str, ...]:
    return tuple(shape.model_fields)


_OPTION_KEYS: Final = _keys(UnitOption)
_UNIT_KEYS: Final = _keys(Unit)
_STATE_KEYS: Final = _keys(UnitState)
_MACHINE_KEYS: Final = _keys(Machine)
_PAGE_KEYS: Final = {
    "units": _keys(UnitPage),
    "states": _keys(UnitStatePage),
    "machines": _keys(MachinePage),
}


# ------------------------------------------------------------------ output


_GO_HTML_ESCAPES: Final = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)
_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def go_json(obj: Any) -> bytes:
    """`obj` as Go's `json.Marshal` writes it: compact, HTML-safe, invalid UTF-8 as U+FFFD."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).translate(_GO_HTML_ESCAPES)
    try:
        return text.encode()
    except UnicodeEncodeError:  # lone surrogates, e.g. from undecodable bytes in an etcd key
        return _SURROGATE.sub("\ufffd", text).encode()


def _omit_empty(fields: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    return {name: value for name, value in fields if value not in ("", None, [], {})}


@dataclass(frozen=True, slots=True)
class UnitStatus:
    """A unit as the API shows it: the stored record plus what the cluster did with it.

    `current` is None when it is not reported (a global unit in a single-unit GET); `machine_id`
    is "" when the unit is not placed or is global.
    """

    record: UnitRecord
    current: JobState | None
    machine_id: str
    reasons: tuple[str, ...] = ()


def option_json(option: Option) -> dict[str, Any]:
    return _omit_empty(zip(_OPTION_KEYS, (option.name, option.section, option.value), strict=True))


def unit_json(status: UnitStatus) -> dict[str, Any]:
    record = status.record
    values = (
        str(status.current) if status.current is not None else "",
        str(record.desired),
        status.machine_id,
        record.name,
        [option_json(o) for o in record.options],
        list(status.reasons),
    )
    return _omit_empty(zip(_UNIT_KEYS, values, strict=True))


def state_json(unit: str, machine_id: str, state: UnitStateRecord) -> dict[str, Any]:
    values = (
        state.hash,
        machine_id,
        unit,
        state.active_state,
        state.load_state,
        state.sub_state,
        state.load_error,
        state.pod_address,
    )
    return _omit_empty(zip(_STATE_KEYS, values, strict=True))


def machine_json(machine: model.Machine) -> dict[str, Any]:
    metadata = {key: machine.metadata[key] for key in sorted(machine.metadata)}
    values = (machine.id, metadata, machine.primary_ip)
    return _omit_empty(zip(_MACHINE_KEYS, values, strict=True))


def page_json(items_key: str, items: list[dict[str, Any]], next_token: str) -> dict[str, Any]:
    """A page of `units`, `states` or `machines`, its fields in its shape's order (fleet's
    MachinePage lists `machines` before the token, the other pages after)."""
    values = {items_key: items, "nextPageToken": next_token}
    return _omit_empty((key, values[key]) for key in _PAGE_KEYS[items_key])


# ------------------------------------------------------------------- input


class DecodeError(ValueError):
    """A body Go's decoder would refuse; the message is in Go's words."""


@dataclass(frozen=True, slots=True)
class UnitRequest:
    """The body of `PUT /units/{name}`; "" and () mean "not given"."""

    name: str = ""
    desired_state: str = ""
    options: tuple[Option, ...] = ()


@dataclass(frozen=True, slots=True)
class MetadataOp:
    """One entry of a `PATCH /machines` body."""

    op: str = ""
    path: str = ""
    value: str = ""


class _Object(list[tuple[str, Any]]):
    """A decoded JSON object: its (key, value) pairs in order, duplicates kept."""


_SYNTAX: Final = (  # Python's message prefix -> Go's words for where the bad character is
    ("Expecting value", "looking for beginning of value"),
    ("Expecting property name", "looking for beginning of object key string"),
    ("Expecting ':' delimiter", "after object key"),
    ("Invalid control character", "in string literal"),
    ("Invalid \\", "in string escape code"),
)


def _refuse_constant(name: str) -> Any:
    """Python reads NaN and Infinity; Go refuses them."""
    if name.startswith("-"):
        raise DecodeError("invalid character 'I' in numeric literal")
    raise DecodeError(f"invalid character {go_quote_char(name[0])} looking for beginning of value")


def _innermost(text: str, end: int) -> str:
    """`{` or `[`: the container still open at `end` (strings skipped); "" at the top level."""
    stack: list[str] = []
    in_string = escaped = False
    for char in text[:end]:
        if in_string:
            in_string = escaped or char != '"'
            escaped = not escaped and char == "\\"
        elif char == '"':
            in_string = True
        elif char in "{[":
            stack.append(char)
        elif char in "}]" and stack:
            stack.pop()
    return stack[-1] if stack else ""


def _go_syntax_error(text: str, error: json.JSONDecodeError) -> DecodeError:
    if error.pos >= len(text) or error.msg.startswith("Unterminated string"):
        return DecodeError("unexpected EOF")
    at = error.pos + 1 if error.msg.startswith("Invalid \\") else error.pos  # Go names the escape
    char = go_quote_char(text[min(at, len(text) - 1)])
    if error.msg.startswith("Expecting ',' delimiter"):
        where = "array element" if _innermost(text, error.pos) == "[" else "object key:value pair"
        return DecodeError(f"invalid character {char} after {where}")
    context = next((go for py, go in _SYNTAX if error.msg.startswith(py)), "looking for value")
    return DecodeError(f"invalid character {char} {context}")


def _integer(text: str) -> int | float:
    """A JSON integer; one too long for Python's `int` (over 4,300 digits) is read as a float.

    No field of a request is a number, so either way the value is refused by type, with Go's words.
    """
    try:
        return int(text)
    except ValueError:
        return float(text)


def _first_value(body: bytes) -> Any:
    """The first JSON value in `body`, as Go's `json.Decoder.Decode` reads it (the rest ignored)."""
    text = body.decode("utf-8", "replace")
    start = len(text) - len(text.lstrip(" \t\r\n"))
    if start == len(text):
        raise DecodeError("EOF")
    decoder = json.JSONDecoder(
        object_pairs_hook=_Object, parse_constant=_refuse_constant, parse_int=_integer
    )
    try:
        value, _end = decoder.raw_decode(text, start)
    except json.JSONDecodeError as exc:
        raise _go_syntax_error(text, exc) from None
    except RecursionError:
        raise DecodeError("exceeded max depth") from None
    return value


def _kind(value: Any) -> str:
    """Go's name for the JSON type of `value`."""
    if isinstance(value, _Object):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "string"
    return "number"


def _type_error(value: Any, target: str, go_type: str) -> DecodeError:
    return DecodeError(f"json: cannot unmarshal {_kind(value)} into {target} of type {go_type}")


def _fields(value: Any, names: tuple[str, ...], target: str, go_type: str) -> dict[str, Any]:
    """An object's values by field name, as Go fills a struct; {} for null.

    A key matches a field exactly, else case-insensitively; a later key wins; null values and
    unknown keys are skipped.
    """
    if value is None:
        return {}
    if not isinstance(value, _Object):
        raise _type_error(value, target, go_type)
    folded = {name.casefold(): name for name in names}
    found: dict[str, Any] = {}
    for key, item in value:
        name = key if key in names else folded.get(key.casefold())
        if name is not None and item is not None:
            found[name] = item
    return found


def _string(fields: dict[str, Any], name: str, go_struct: str) -> str:
    value = fields.get(name, "")
    if not isinstance(value, str):
        raise _type_error(value, f"Go struct field {go_struct}.{name}", "string")
    return _SURROGATE.sub("\ufffd", value)


_UNIT_FIELDS: Final = _UNIT_KEYS[:5]  # fleet's; `unplaceableReasons` is pyfleet's, output only
_OP_FIELDS: Final = _keys(MachineMetadataOp)


def _option(value: Any) -> Option:
    where = "Go struct field Unit.options"
    if value is None:  # Go would store a nil pointer and crash on it later
        raise DecodeError(f"json: cannot unmarshal null into {where} of type schema.UnitOption")
    fields = _fields(value, _OPTION_KEYS, where, "schema.UnitOption")
    return Option(
        _string(fields, "section", "UnitOption.options"),
        _string(fields, "name", "UnitOption.options"),
        _string(fields, "value", "UnitOption.options"),
    )


def decode_unit_request(body: bytes) -> UnitRequest:
    """The Unit in a PUT body; raises `DecodeError` with Go's message."""
    fields = _fields(_first_value(body), _UNIT_FIELDS, "Go value", "schema.Unit")
    for name in _UNIT_FIELDS[:4]:  # currentState and machineID are read, then ignored
        _string(fields, name, "Unit")
    options = fields.get("options", [])
    if isinstance(options, _Object) or not isinstance(options, list):
        raise _type_error(options, "Go struct field Unit.options", "[]*schema.UnitOption")
    return UnitRequest(
        _string(fields, "name", "Unit"),
        _string(fields, "desiredState", "Unit"),
        tuple(_option(item) for item in options),
    )


def _metadata_value(fields: dict[str, Any]) -> str:
    """PATCH `value`: the object `{"value": v}` fleet's server reads, or a plain string."""
    value = fields.get("value", "")
    if isinstance(value, str):
        return _string(fields, "value", "machineMetadataOp")
    inner = _fields(value, ("value",), "Go struct field machineMetadataOp.value", "struct")
    return _string(inner, "value", "machineMetadataOp.value")


def decode_metadata_ops(body: bytes) -> list[MetadataOp]:
    """The operations in a PATCH body; raises `DecodeError` with Go's message."""
    value = _first_value(body)
    if value is None:
        return []
    if isinstance(value, _Object) or not isinstance(value, list):
        raise _type_error(value, "Go value", "[]api.machineMetadataOp")
    ops: list[MetadataOp] = []
    for item in value:
        fields = _fields(item, _OP_FIELDS, "Go value", "api.machineMetadataOp")
        ops.append(
            MetadataOp(
                _string(fields, "op", "machineMetadataOp"),
                _string(fields, "path", "machineMetadataOp"),
                _metadata_value(fields),
            )
        )
    return ops
