"""Unit names: validation, structure (prefix, instance, template) and fleetctl's name mangling.

Role: the one place that decides whether a string may name a fleet unit, and how a name splits
into prefix, instance and type. Everything here is pure and deterministic.

Invariants:
* `validate_unit_name` applies fleet's server-side rules (systemd's `unit_name_is_valid`) in
  fleet's order and raises `UnitNameError` with fleet's exact message for the first failure.
* The name is split at its *last* dot: the part after it is the unit type (`suffix`, without
  the dot); the part before it is the stem.  The *prefix* is the stem up to its first `@`, the
  *instance* is what lies between that `@` and the last dot.
* A template has an `@` and an empty instance (`foo@.service`); an instance has a non-empty one
  (`foo@1.service`).  Both report the template's name in `template`; a plain unit reports None.
* `go_quote` renders a string the way Go's `%q` does, so messages that quote user input match
  fleet's byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_UNIT_NAME_BYTES = 256

UNIT_TYPES = frozenset(
    {
        "automount",
        "busname",
        "device",
        "mount",
        "path",
        "scope",
        "service",
        "slice",
        "snapshot",
        "socket",
        "swap",
        "target",
        "timer",
    }
)
"""Unit types the API accepts."""

TEMPLATE_UNIT_TYPES = frozenset({"path", "service", "socket", "target", "timer"})
"""Unit types that may be templates or instances (names containing `@`)."""

FLEETCTL_UNIT_TYPES = ("service", "socket", "timer", "path", "device", "mount", "automount")
"""Types fleetctl recognises when mangling a command-line argument; others get `.service`."""

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:-_.\\@")

_GO_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
}


class UnitNameError(ValueError):
    """A unit name that fleet refuses; the message is fleet's own."""


def _go_escape_char(char: str, quote: str) -> str:
    if char in (quote, "\\"):
        return "\\" + char
    if char in _GO_ESCAPES:
        return _GO_ESCAPES[char]
    if char.isprintable():
        return char
    code = ord(char)
    if code < 0x20 or code == 0x7F:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def go_quote(text: str) -> str:
    """`text` as Go's `%q` prints a string: double quotes, Go escapes for the unprintable."""
    return '"' + "".join(_go_escape_char(char, '"') for char in text) + '"'


def go_quote_char(char: str) -> str:
    """One character as Go's `%q` prints a rune: single quotes, Go escapes."""
    return "'" + _go_escape_char(char, "'") + "'"


def validate_unit_name(name: str) -> None:
    """Raise `UnitNameError` with fleet's message if `name` may not name a unit."""
    if not name:
        raise UnitNameError("unit name cannot be empty")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_UNIT_NAME_BYTES:
        raise UnitNameError(f"unit name exceeds maximum length ({MAX_UNIT_NAME_BYTES})")
    dot = name.rfind(".")
    if dot == -1:
        raise UnitNameError('unit name must contain "."')
    if dot == len(name) - 1:
        raise UnitNameError('unit name cannot end in "."')
    unit_type = name[dot + 1 :]
    if unit_type not in UNIT_TYPES:
        raise UnitNameError(f"invalid unit type: {go_quote(unit_type)}")
    if "@" in name and unit_type not in TEMPLATE_UNIT_TYPES:
        raise UnitNameError(f"invalid unit type for template: {go_quote(unit_type)}")
    for char in name[:dot]:
        if char not in _NAME_CHARS:
            raise UnitNameError(f"invalid character {go_quote_char(char)} in unit name")
    if name.startswith("@"):
        raise UnitNameError('unit name cannot start in "@"')


@dataclass(frozen=True, slots=True)
class UnitNameInfo:
    """The parts of a unit name: `foo@bar.service` has prefix `foo`, instance `bar`, suffix
    `service` (the type, without its dot)."""

    name: str
    prefix: str
    instance: str
    suffix: str

    @property
    def stem(self) -> str:
        """The name without its type: `foo@bar` (systemd's `%N`)."""
        return self.name[: len(self.name) - len(self.suffix) - 1]

    @property
    def is_template(self) -> bool:
        return "@" in self.stem and not self.instance

    @property
    def is_instance(self) -> bool:
        return bool(self.instance)

    @property
    def template(self) -> str | None:
        """`foo@.service` for `foo@1.service` and for `foo@.service` itself; None without `@`."""
        if "@" not in self.stem:
            return None
        return f"{self.prefix}@.{self.suffix}"


def split_unit_name(name: str) -> UnitNameInfo | None:
    """Structure only, without validation (fleet's `NewUnitNameInfo`); None when there is no dot."""
    dot = name.rfind(".")
    if dot == -1:
        return None
    stem, suffix = name[:dot], name[dot + 1 :]
    prefix, at, instance = stem.partition("@")
    return UnitNameInfo(name=name, prefix=prefix, instance=instance if at else "", suffix=suffix)


def parse_unit_name(name: str) -> UnitNameInfo:
    """Validate `name` (raising `UnitNameError`) and split it into its parts."""
    validate_unit_name(name)
    info = split_unit_name(name)
    assert info is not None  # a valid name has a dot
    return info


def _go_path_base(path: str) -> str:
    """Go's `path.Base`: the last slash-separated element, trailing slashes ignored."""
    if not path:
        return "."
    trimmed = path.rstrip("/")
    if not trimmed:
        return "/"
    return trimmed[trimmed.rfind("/") + 1 :]


def mangle_unit_name(arg: str) -> str:
    """fleetctl's `unitNameMangle`: the basename of `arg`, with `.service` appended unless it
    already ends in one of `FLEETCTL_UNIT_TYPES` (so `x.target` becomes `x.target.service`)."""
    base = _go_path_base(arg)
    if base.endswith(tuple("." + unit_type for unit_type in FLEETCTL_UNIT_TYPES)):
        return base
    return base + ".service"


def unit_file_name_problem(name: str) -> str | None:
    """Why `name` cannot name a file in the units directory; None when it can.

    A name with a `/`, a NUL, or `.`/`..` would escape the directory; a leading `.` would hide
    the file among the agent's own; anything fleet refuses as a unit name is refused too, so only
    plain `<name>.<type>` files are ever written.
    """
    if "/" in name or "\0" in name or name in (".", ".."):
        return f"unit name {name!r} would escape the units directory"
    if name.startswith("."):
        return f"unit name {name!r} starts with a dot"
    try:
        validate_unit_name(name)
    except UnitNameError as exc:
        return f"unit name {name!r} is not valid: {exc}"
    return None
