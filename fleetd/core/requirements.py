"""The `[X-Fleet]` section: where a unit may run, read into an immutable `Requirements`.

Role: turn a unit's name and `UnitFile` into the scheduling constraints the engine checks, with
fleet's exact reading rules (its `job` and `unit` packages), and validate their combinations
with fleet's exact messages.

Reading rules, in order:
1. Every `[X-Fleet]` value that starts *and* ends with `"` is split into several values: quotes
   are dropped and the text is cut at each space outside quotes (fleet's multi-value rule).
2. Each value then has `%n`, `%N`, `%p` and `%i` replaced, in that order, by plain string
   replacement (no unescaping).  A unit name without a dot gets no substitution, as in fleet.
3. Then per key:
   * `MachineID`: the first value; else the first `X-ConditionMachineID`, else the first
     `X-ConditionMachineBootID`.  `None` means "not pinned"; an empty value pins to "".
   * `MachineOf` (after `X-ConditionMachineOf`): exact unit names, never split on whitespace.
   * `MachineMetadata` (after `X-ConditionMachineMetadata`): `k=v` with exactly one `=` and
     both sides non-empty, else silently ignored.  Merged into key -> set of values.
   * `Conflicts` (after `X-Conflicts`): each value split on whitespace; every piece is a glob.
   * `Global`: the last value decides; truthy values are true/yes/1/on/t in any case.
   * `Replaces`: globs, one per value, not split.
   * Any other key is kept in `unknown_keys` and otherwise ignored (fleetctl warns; the API
     stores the unit and names the keys it ignored).
   Repeated names in `machine_of`, `conflicts` and `replaces` are kept once, in first-seen order.

Globs follow Go's `path.Match` (see `glob_match`).  Matching works on characters, where Go
works on bytes; the two agree on valid UTF-8 except for byte-level oddities (a class holding
U+FFFD can match half of a multi-byte character in Go).

Invariants: `Requirements` is frozen, slotted and hashable, built only from tuples and
frozensets; `metadata` is sorted by key; a unit without `[X-Fleet]` options gets the shared
`NO_REQUIREMENTS` instance.  `parse_requirements` never raises: combination errors come from
`validate_requirements`, which (like fleet's API) checks peers against the unit's own
Conflicts and Replaces globs first, then the forbidden pairs in fleet's order (its table).
Unlike fleet's API, which validates before specifier substitution, validation here sees the
substituted values.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass

from fleetd.core.names import UnitNameInfo, go_quote, split_unit_name
from fleetd.core.unitfile import WHITESPACE, UnitFile

X_FLEET = "X-Fleet"

KNOWN_KEYS: frozenset[str] = frozenset(
    {
        "MachineID",
        "MachineOf",
        "MachineMetadata",
        "Conflicts",
        "Global",
        "Replaces",
        "X-ConditionMachineID",
        "X-ConditionMachineBootID",
        "X-ConditionMachineOf",
        "X-ConditionMachineMetadata",
        "X-Conflicts",
    }
)

TRUTHY_VALUES = frozenset({"true", "yes", "1", "on", "t"})

_FIELD_SEPARATOR = re.compile(f"[{re.escape(WHITESPACE)}]+")
_GLOB_SPECIALS = frozenset("*?[\\")


class RequirementsError(ValueError):
    """An invalid combination of `[X-Fleet]` options; the message is fleet's own."""


@dataclass(frozen=True, slots=True)
class Requirements:
    """Where a unit may run.  Equal requirements compare and hash equal."""

    machine_id: str | None = None
    machine_of: tuple[str, ...] = ()
    metadata: tuple[tuple[str, frozenset[str]], ...] = ()
    conflicts: tuple[str, ...] = ()
    is_global: bool = False
    replaces: tuple[str, ...] = ()
    unknown_keys: tuple[str, ...] = ()

    def metadata_matches(self, machine_metadata: Mapping[str, str]) -> bool:
        """True when, for every required key, the machine's value is one of the allowed ones."""
        return all(machine_metadata.get(key) in allowed for key, allowed in self.metadata)

    def conflicts_with(self, own_name: str, other_name: str, other: Requirements) -> bool:
        """Whether this unit (`own_name`) and `other_name` may not share a machine.

        Symmetric: either side's Conflicts globs matching the other's name is enough.  A unit
        never conflicts with itself, even when a glob of its own matches its name.
        """
        if own_name == other_name:
            return False
        return any(glob_match(glob, other_name) for glob in self.conflicts) or any(
            glob_match(glob, own_name) for glob in other.conflicts
        )

    def replaces_unit(self, other_name: str) -> bool:
        """Whether one of this unit's Replaces globs matches `other_name`."""
        return any(glob_match(glob, other_name) for glob in self.replaces)


NO_REQUIREMENTS = Requirements()


def split_multivalue(value: str) -> list[str]:
    """fleet's `[X-Fleet]` multi-value rule: `"a=b" "c=d"` gives `a=b` and `c=d`.

    Only a value that both starts and ends with `"` is split; quotes are removed and each space
    outside quotes ends a value (so two spaces give an empty value between them).
    """
    if not (value.startswith('"') and value.endswith('"')):
        return [value]
    values: list[str] = []
    current: list[str] = []
    quoted = False
    for char in value:
        if char == '"':
            quoted = not quoted
        elif char == " " and not quoted:
            values.append("".join(current))
            current.clear()
        else:
            current.append(char)
    values.append("".join(current))
    return values


def substitute_specifiers(value: str, info: UnitNameInfo | None) -> str:
    """Replace `%n`, `%N`, `%p`, `%i` (in that order) with the parts of the unit's name."""
    if info is None or "%" not in value:
        return value
    value = value.replace("%n", info.name)
    value = value.replace("%N", info.stem)
    value = value.replace("%p", info.prefix)
    return value.replace("%i", info.instance)


def _unique(items: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def _first(values: dict[str, list[str]], *keys: str) -> str | None:
    for key in keys:
        if values.get(key):
            return values[key][0]
    return None


def parse_requirements(unit_name: str, unit: UnitFile) -> Requirements:
    """Read the `[X-Fleet]` section of `unit`, named `unit_name`, by fleet's rules."""
    info = split_unit_name(unit_name)
    values: dict[str, list[str]] = {}
    for option in unit.options:
        if option.section == X_FLEET:
            values.setdefault(option.name, []).extend(
                substitute_specifiers(v, info) for v in split_multivalue(option.value)
            )
    if not values:
        return NO_REQUIREMENTS

    def joined(*keys: str) -> list[str]:
        return [v for key in keys for v in values.get(key, ())]

    metadata: dict[str, set[str]] = {}
    for pair in joined("X-ConditionMachineMetadata", "MachineMetadata"):
        parts = pair.split("=")
        if len(parts) == 2 and parts[0] and parts[1]:
            metadata.setdefault(parts[0], set()).add(parts[1])
    conflicts = [
        glob
        for value in joined("X-Conflicts", "Conflicts")
        for glob in _FIELD_SEPARATOR.split(value)
        if glob
    ]
    global_values = values.get("Global") or [""]
    return Requirements(
        machine_id=_first(values, "MachineID", "X-ConditionMachineID", "X-ConditionMachineBootID"),
        machine_of=_unique(joined("X-ConditionMachineOf", "MachineOf")),
        metadata=tuple((key, frozenset(metadata[key])) for key in sorted(metadata)),
        conflicts=_unique(conflicts),
        is_global=global_values[-1].lower() in TRUTHY_VALUES,
        replaces=_unique(joined("Replaces")),
        unknown_keys=tuple(key for key in values if key not in KNOWN_KEYS),
    )


def unrecognized_keys(unit: UnitFile) -> tuple[str, ...]:
    """The `[X-Fleet]` keys of `unit` fleet does not know, each once, in first-seen order."""
    names = [o.name for o in unit.options if o.section == X_FLEET]
    return _unique([name for name in names if name not in KNOWN_KEYS])


def validate_requirements(req: Requirements) -> None:
    """Raise `RequirementsError` with fleet's message for the first invalid combination."""
    for peer in req.machine_of:
        for glob in req.conflicts:
            if glob_match(glob, peer):
                raise RequirementsError(
                    f"unresolvable requirements: peer {go_quote(peer)} "
                    f"matches conflict {go_quote(glob)}"
                )
        for glob in req.replaces:
            if glob_match(glob, peer):
                raise RequirementsError(
                    f"unresolvable requirements: peer {go_quote(peer)} "
                    f"matches replace {go_quote(glob)}"
                )
    pinned = req.machine_id is not None
    forbidden = (
        (pinned and bool(req.machine_of), "MachineID cannot be used with Peers"),
        (pinned and bool(req.conflicts), "MachineID cannot be used with Conflicts"),
        (pinned and req.is_global, "MachineID cannot be used with Global"),
        (pinned and bool(req.replaces), "MachineID cannot be used with Replaces"),
        (req.is_global and bool(req.machine_of), "Global cannot be used with Peers"),
        (req.is_global and bool(req.replaces), "Global cannot be used with Replaces"),
        (bool(req.conflicts) and bool(req.replaces), "Conflicts cannot be used with Replaces"),
    )
    for broken, message in forbidden:
        if broken:
            raise RequirementsError(message)


# --- globs: Go's path.Match --------------------------------------------------------------------
# A pattern is cut into chunks: a run of `*` (the "star") and the text up to the next `*`
# outside brackets.  A chunk is a tuple of tokens, each matching one character:
# a `str` matches itself, None is `?`, and (negated, ranges) is a bracket class.

_Class = tuple[bool, tuple[tuple[str, str], ...]]
_Token = str | None | _Class
_Chunk = tuple[bool, tuple[_Token, ...]]


def _next_chunk(pattern: str) -> tuple[bool, str, str]:
    """(star, chunk text, rest): leading stars, then text up to a `*` outside brackets."""
    body = pattern.lstrip("*")
    star = len(body) != len(pattern)
    in_class = False
    i = 0
    while i < len(body):
        char = body[i]
        if char == "\\":
            i += 1  # the escaped character cannot end the chunk
        elif char == "[":
            in_class = True
        elif char == "]":
            in_class = False
        elif char == "*" and not in_class:
            break
        i += 1
    return star, body[:i], body[i:]


def _class_char(text: str, i: int) -> tuple[str, int] | None:
    """One (possibly escaped) character of a class at `i`; None if the pattern is malformed."""
    if i >= len(text) or text[i] in "-]":
        return None
    if text[i] == "\\":
        i += 1
        if i >= len(text):
            return None
    if i + 1 >= len(text):  # the class is never closed
        return None
    return text[i], i + 1


def _parse_class(text: str, i: int) -> tuple[_Class, int] | None:
    """The class whose `[` is just before `i`, and the index after its `]`."""
    negated = i < len(text) and text[i] == "^"
    if negated:
        i += 1
    ranges: list[tuple[str, str]] = []
    while not (ranges and text[i] == "]"):
        low = _class_char(text, i)
        if low is None:
            return None
        low_char, i = low
        high_char = low_char
        if text[i] == "-":
            high = _class_char(text, i + 1)
            if high is None:
                return None
            high_char, i = high
        ranges.append((low_char, high_char))
    return (negated, tuple(ranges)), i + 1


def _parse_chunk(text: str) -> tuple[_Token, ...] | None:
    tokens: list[_Token] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\":
            if i + 1 >= len(text):
                return None
            tokens.append(text[i + 1])
            i += 2
        elif char == "?":
            tokens.append(None)
            i += 1
        elif char == "[":
            parsed = _parse_class(text, i + 1)
            if parsed is None:
                return None
            token, i = parsed
            tokens.append(token)
        else:
            tokens.append(char)
            i += 1
    return tuple(tokens)


@functools.lru_cache(maxsize=4096)
def _compile(pattern: str) -> tuple[_Chunk, ...] | None:
    """The chunks of `pattern`, or None when any part of it is malformed."""
    chunks: list[_Chunk] = []
    rest = pattern
    while rest:
        star, text, rest = _next_chunk(rest)
        tokens = _parse_chunk(text)
        if tokens is None:
            return None
        chunks.append((star, tokens))
    return tuple(chunks)


def _match_at(tokens: tuple[_Token, ...], name: str, pos: int) -> int:
    """The index after `tokens` matched at `name[pos:]`, or -1."""
    if pos + len(tokens) > len(name):
        return -1
    for token in tokens:
        char = name[pos]
        if token is None:
            if char == "/":
                return -1
        elif isinstance(token, str):
            if char != token:
                return -1
        else:
            negated, ranges = token
            if any(low <= char <= high for low, high in ranges) == negated:
                return -1
        pos += 1
    return pos


def glob_match(pattern: str, name: str) -> bool:
    r"""Go `path.Match(pattern, name)`, with a malformed pattern matching nothing.

    `*` is any run of characters other than `/`, `?` one character other than `/`, `[...]` a
    class (`^` negates; `a-z` ranges; `\` escapes; `]` or `-` may not start a range; a class
    may match `/`), `\x` the character x.  Each chunk after a star is matched at its leftmost
    possible place, exactly as Go does.
    """
    if not _GLOB_SPECIALS.intersection(pattern):
        return pattern == name
    chunks = _compile(pattern)
    if chunks is None:
        return False
    pos = 0
    for index, (star, tokens) in enumerate(chunks):
        last = index == len(chunks) - 1
        if star and not tokens:  # a trailing star takes the rest unless it holds a slash
            return "/" not in name[pos:]
        end = _match_at(tokens, name, pos)
        if end >= 0 and (not last or end == len(name)):
            pos = end
            continue
        if not star:
            return False
        for skip in range(pos, len(name)):
            if name[skip] == "/":
                return False
            end = _match_at(tokens, name, skip + 1)
            if end >= 0 and (not last or end == len(name)):
                pos = end
                break
        else:
            return False
    return pos == len(name)
