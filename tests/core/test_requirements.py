"""The [X-Fleet] section: fleet's reading rules, combination errors, matching and globs."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetd.core.requirements import (
    KNOWN_KEYS,
    NO_REQUIREMENTS,
    Requirements,
    RequirementsError,
    glob_match,
    parse_requirements,
    split_multivalue,
    validate_requirements,
)
from fleetd.core.unitfile import parse_unit


def reqs(xfleet: str, name: str = "web@1.service") -> Requirements:
    """Requirements of a unit called `name` whose [X-Fleet] section holds `xfleet`."""
    return parse_requirements(
        name, parse_unit("[Service]\nExecStart=/bin/true\n[X-Fleet]\n" + xfleet)
    )


def meta(**values: set[str]) -> tuple[tuple[str, frozenset[str]], ...]:
    return tuple((key, frozenset(values[key])) for key in sorted(values))


FLEET_KEYS = {
    "MachineID": "0123456789abcdef0123456789abcdef",
    "MachineOf": "a.service",
    "MachineMetadata": "role=web",
    "Conflicts": "b.service",
    "Global": "false",
    "Replaces": "c.service",
    "X-ConditionMachineID": "0123456789abcdef0123456789abcdef",
    "X-ConditionMachineBootID": "x",
    "X-ConditionMachineOf": "a.service",
    "X-ConditionMachineMetadata": "role=web",
    "X-Conflicts": "b.service",
}


@pytest.mark.parametrize(("key", "value"), sorted(FLEET_KEYS.items()))
def test_every_key_fleet_knows_is_understood(key: str, value: str) -> None:
    assert reqs(f"{key}={value}\nMachineIDx=typo").unknown_keys == ("MachineIDx",)
    assert key in KNOWN_KEYS


def test_no_xfleet_section_gives_the_shared_empty_requirements() -> None:
    unit = parse_unit("[Unit]\nConflicts=other.service\n[Service]\nExecStart=/bin/true\n")
    assert parse_requirements("a.service", unit) is NO_REQUIREMENTS
    assert Requirements() == NO_REQUIREMENTS


PARSE_CASES = [
    # MachineID
    pytest.param(
        "MachineID=abc\nMachineID=def\n", Requirements(machine_id="abc"), id="id-first-wins"
    ),
    pytest.param('MachineID="abc" "def"\n', Requirements(machine_id="abc"), id="id-quoted-first"),
    pytest.param(
        "X-ConditionMachineID=old\nMachineID=new\n",
        Requirements(machine_id="new"),
        id="id-beats-deprecated",
    ),
    pytest.param(
        "X-ConditionMachineBootID=boot\nX-ConditionMachineID=old\n",
        Requirements(machine_id="old"),
        id="id-deprecated-beats-boot-id",
    ),
    pytest.param("X-ConditionMachineBootID=boot\n", Requirements(machine_id="boot"), id="boot-id"),
    pytest.param("MachineID=\n", Requirements(machine_id=""), id="id-empty-still-pins"),
    # MachineOf
    pytest.param(
        "MachineOf=a.service\nMachineOf=b.service\n",
        Requirements(machine_of=("a.service", "b.service")),
        id="peers-add-up",
    ),
    pytest.param(
        "MachineOf=a.service b.service\n",
        Requirements(machine_of=("a.service b.service",)),
        id="peers-not-split-unquoted",
    ),
    pytest.param(
        'MachineOf="a.service" "b.service"\n',
        Requirements(machine_of=("a.service", "b.service")),
        id="peers-split-quoted",
    ),
    pytest.param(
        "MachineOf=b.service\nX-ConditionMachineOf=a.service\nMachineOf=b.service\n",
        Requirements(machine_of=("a.service", "b.service")),
        id="peers-deprecated-first-deduplicated",
    ),
    pytest.param(
        "MachineOf=db*.service\n", Requirements(machine_of=("db*.service",)), id="peer-glob-kept"
    ),
    # MachineMetadata
    pytest.param(
        "MachineMetadata=region=east\n", Requirements(metadata=meta(region={"east"})), id="meta"
    ),
    pytest.param(
        'MachineMetadata="region=us-east-1" "diskType=SSD"\n',
        Requirements(metadata=meta(diskType={"SSD"}, region={"us-east-1"})),
        id="meta-quoted-pair",
    ),
    pytest.param(
        'MachineMetadata="region=east" "job=foo"\nMachineMetadata="region=west" "job=bar"\n',
        Requirements(metadata=meta(job={"foo", "bar"}, region={"east", "west"})),
        id="meta-grouping-has-no-effect",
    ),
    pytest.param(
        "X-ConditionMachineMetadata=role=db\nMachineMetadata=role=web\n",
        Requirements(metadata=meta(role={"db", "web"})),
        id="meta-deprecated-merged",
    ),
    pytest.param("MachineMetadata=a=b=c\n", Requirements(), id="meta-two-equals-ignored"),
    pytest.param("MachineMetadata=k1=v1 k2=v2\n", Requirements(), id="meta-unquoted-pair-ignored"),
    pytest.param("MachineMetadata=novalue\n", Requirements(), id="meta-no-equals-ignored"),
    pytest.param(
        "MachineMetadata==v\nMachineMetadata=k=\n", Requirements(), id="meta-empty-side-ignored"
    ),
    pytest.param(
        "MachineMetadata=zone=a\nMachineMetadata=bad\nMachineMetadata=app=x\n",
        Requirements(metadata=meta(app={"x"}, zone={"a"})),
        id="meta-sorted-by-key",
    ),
    pytest.param(
        "MachineMetadata=k = v\n",
        Requirements(metadata=meta(**{"k ": {" v"}})),
        id="meta-not-trimmed",
    ),
    # Conflicts
    pytest.param("Conflicts=a*.service\n", Requirements(conflicts=("a*.service",)), id="conflict"),
    pytest.param(
        "Conflicts=a*.service  b.service\tc@*.service\n",
        Requirements(conflicts=("a*.service", "b.service", "c@*.service")),
        id="conflicts-split-on-whitespace",
    ),
    pytest.param(
        "X-Conflicts=old.service\nConflicts=new.service\nConflicts=old.service\n",
        Requirements(conflicts=("old.service", "new.service")),
        id="conflicts-deprecated-first-deduplicated",
    ),
    pytest.param(
        'Conflicts="a.service b.service" "c.service"\n',
        Requirements(conflicts=("a.service", "b.service", "c.service")),
        id="conflicts-quoted-then-split",
    ),
    pytest.param("Conflicts=\n", Requirements(), id="conflicts-empty"),
    # Global
    pytest.param("Global=true\n", Requirements(is_global=True), id="global"),
    pytest.param("Global=true\nGlobal=false\n", Requirements(), id="global-last-wins-false"),
    pytest.param(
        "Global=no\nGlobal=ON\n", Requirements(is_global=True), id="global-last-wins-true"
    ),
    pytest.param('Global="true" "no"\n', Requirements(), id="global-quoted-last-value"),
    # Replaces
    pytest.param(
        "Replaces=old*.service\nReplaces=a.service b.service\n",
        Requirements(replaces=("old*.service", "a.service b.service")),
        id="replaces-not-split",
    ),
    # unknown keys
    pytest.param(
        "Foo=1\nMachineID=m\nmachineid=x\nFoo=2\nX-Weight=3\n",
        Requirements(machine_id="m", unknown_keys=("Foo", "machineid", "X-Weight")),
        id="unknown-keys-kept-in-order",
    ),
]


@pytest.mark.parametrize(("xfleet", "expected"), PARSE_CASES)
def test_parse_requirements(xfleet: str, expected: Requirements) -> None:
    assert reqs(xfleet) == expected


@pytest.mark.parametrize(
    ("value", "truthy"),
    [
        ("true", True),
        ("TRUE", True),
        ("True", True),
        ("yes", True),
        ("YeS", True),
        ("1", True),
        ("on", True),
        ("On", True),
        ("t", True),
        ("T", True),
        ("false", False),
        ("0", False),
        ("no", False),
        ("off", False),
        ("", False),
        ("y", False),
        ("2", False),
        ("truthy", False),
    ],
)
def test_global_truthy_values(value: str, truthy: bool) -> None:
    assert reqs(f"Global={value}\n").is_global is truthy


@pytest.mark.parametrize(
    ("name", "xfleet", "expected"),
    [
        ("foo@bar.service", "MachineOf=%p.socket\n", Requirements(machine_of=("foo.socket",))),
        ("foo@bar.service", "MachineOf=%n\n", Requirements(machine_of=("foo@bar.service",))),
        ("foo@bar.service", "MachineOf=%N.socket\n", Requirements(machine_of=("foo@bar.socket",))),
        (
            "foo@bar.service",
            "MachineOf=x-%i.service\n",
            Requirements(machine_of=("x-bar.service",)),
        ),
        (
            "metadata@smoke1.service",
            "MachineMetadata=hostname=%i\n",
            Requirements(metadata=meta(hostname={"smoke1"})),
        ),
        ("foo@bar.service", "Conflicts=%p@*.service\n", Requirements(conflicts=("foo@*.service",))),
        (
            "foo@bar.service",
            "Replaces=%p-old.service\n",
            Requirements(replaces=("foo-old.service",)),
        ),
        ("foo@bar.service", "MachineID=%i\n", Requirements(machine_id="bar")),
        ("plain.service", "MachineOf=a%ib.service\n", Requirements(machine_of=("ab.service",))),
        ("plain.service", "MachineOf=%p.socket\n", Requirements(machine_of=("plain.socket",))),
        ("nodot", "MachineOf=%p.socket\n", Requirements(machine_of=("%p.socket",))),
        ("foo@bar.service", "MachineOf=%%n\n", Requirements(machine_of=("%foo@bar.service",))),
        ("foo@bar.service", "MachineOf=%x%\n", Requirements(machine_of=("%x%",))),
        (
            "foo@bar.service",
            'MachineOf="%p.a" "%i.b"\n',
            Requirements(machine_of=("foo.a", "bar.b")),
        ),
    ],
)
def test_specifiers_are_substituted(name: str, xfleet: str, expected: Requirements) -> None:
    assert reqs(xfleet, name=name) == expected


@pytest.mark.parametrize(
    ("value", "values"),
    [
        ('"a" "b"', ["a", "b"]),
        ('"a=1" "b=2" "c=3"', ["a=1", "b=2", "c=3"]),
        ('"a"', ["a"]),
        ('"a b"', ["a b"]),
        ('"a"  "b"', ["a", "", "b"]),
        ('"a"\t"b"', ["a\tb"]),
        ('"a" b "c"', ["a", "b", "c"]),
        ('a "b"', ['a "b"']),
        ('"a" b', ['"a" b']),
        ("a b", ["a b"]),
        ('"', [""]),
        ('""', [""]),
        ("", [""]),
    ],
)
def test_split_multivalue(value: str, values: list[str]) -> None:
    assert split_multivalue(value) == values


@given(st.lists(st.text(st.characters(exclude_characters='" ', codec="utf-8")), min_size=1))
def test_split_multivalue_inverts_quoting(values: list[str]) -> None:
    assert split_multivalue(" ".join(f'"{v}"' for v in values)) == values


# --- validation -----------------------------------------------------------------------------

INVALID = [
    pytest.param(
        Requirements(machine_id="m", machine_of=("a.service",)),
        "MachineID cannot be used with Peers",
    ),
    pytest.param(
        Requirements(machine_id="m", conflicts=("a*",)), "MachineID cannot be used with Conflicts"
    ),
    pytest.param(
        Requirements(machine_id="m", is_global=True), "MachineID cannot be used with Global"
    ),
    pytest.param(
        Requirements(machine_id="m", replaces=("a*",)), "MachineID cannot be used with Replaces"
    ),
    pytest.param(
        Requirements(machine_id="", replaces=("a*",)), "MachineID cannot be used with Replaces"
    ),
    pytest.param(
        Requirements(is_global=True, machine_of=("a.service",)), "Global cannot be used with Peers"
    ),
    pytest.param(
        Requirements(is_global=True, replaces=("a*",)), "Global cannot be used with Replaces"
    ),
    pytest.param(
        Requirements(conflicts=("a*",), replaces=("b*",)), "Conflicts cannot be used with Replaces"
    ),
    pytest.param(
        Requirements(machine_of=("db.service",), conflicts=("web*", "d*.service")),
        'unresolvable requirements: peer "db.service" matches conflict "d*.service"',
    ),
    pytest.param(
        Requirements(machine_of=("db.service",), replaces=("db.service",)),
        'unresolvable requirements: peer "db.service" matches replace "db.service"',
    ),
    pytest.param(
        Requirements(machine_id="m", machine_of=("a.service",), conflicts=("a.*",)),
        'unresolvable requirements: peer "a.service" matches conflict "a.*"',
        id="unresolvable-checked-before-pairs",
    ),
    pytest.param(
        Requirements(machine_of=("a.service", "b.service"), conflicts=("b*",), replaces=("a*",)),
        'unresolvable requirements: peer "a.service" matches replace "a*"',
        id="peers-in-order",
    ),
    pytest.param(
        Requirements(machine_id="m", machine_of=("a.service",), is_global=True),
        "MachineID cannot be used with Peers",
        id="table-order",
    ),
    pytest.param(
        Requirements(machine_of=('q"x.service',), conflicts=("q*",)),
        'unresolvable requirements: peer "q\\"x.service" matches conflict "q*"',
        id="go-quoting",
    ),
]


@pytest.mark.parametrize(("req", "message"), INVALID)
def test_invalid_combinations(req: Requirements, message: str) -> None:
    with pytest.raises(RequirementsError) as caught:
        validate_requirements(req)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    "req",
    [
        Requirements(),
        Requirements(machine_id="m", metadata=meta(a={"b"})),
        Requirements(is_global=True, metadata=meta(a={"b"}), conflicts=("x*",)),
        Requirements(machine_of=("a.service",), conflicts=("b*",)),
        Requirements(machine_of=("a.service",), replaces=("b*",)),
        Requirements(machine_of=("a/b",), conflicts=("a*",)),
        Requirements(machine_of=("a.service",), conflicts=("[",)),
        Requirements(unknown_keys=("Foo",)),
    ],
)
def test_valid_combinations(req: Requirements) -> None:
    validate_requirements(req)


def test_validation_of_a_parsed_unit() -> None:
    req = reqs("MachineOf=%p-db.service\nConflicts=web*\n", name="web@1.service")
    assert req.machine_of == ("web-db.service",)
    with pytest.raises(RequirementsError) as caught:
        validate_requirements(req)
    assert str(caught.value) == (
        'unresolvable requirements: peer "web-db.service" matches conflict "web*"'
    )


# --- matching -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("required", "machine", "matches"),
    [
        ({}, {}, True),
        ({}, {"region": "east"}, True),
        ({"region": {"east"}}, {"region": "east"}, True),
        ({"region": {"east"}}, {"region": "west"}, False),
        ({"region": {"east"}}, {}, False),
        ({"region": {"east", "west"}}, {"region": "west"}, True),
        ({"region": {"east"}, "disk": {"ssd"}}, {"region": "east", "disk": "ssd", "x": "y"}, True),
        ({"region": {"east"}, "disk": {"ssd"}}, {"region": "east", "disk": "hdd"}, False),
        ({"region": {"east"}}, {"region": "East"}, False),
    ],
)
def test_metadata_matches(
    required: dict[str, set[str]], machine: dict[str, str], matches: bool
) -> None:
    assert Requirements(metadata=meta(**required)).metadata_matches(machine) is matches


WEB = Requirements(conflicts=("db*.service",))
PLAIN = Requirements()


@pytest.mark.parametrize(
    ("own_name", "own", "other_name", "other", "conflict"),
    [
        ("web.service", WEB, "db1.service", PLAIN, True),
        ("db1.service", PLAIN, "web.service", WEB, True),
        ("web.service", WEB, "cache.service", PLAIN, False),
        ("cache.service", PLAIN, "web.service", WEB, False),
        ("a.service", PLAIN, "b.service", PLAIN, False),
        ("db1.service", Requirements(conflicts=("db*",)), "db1.service", PLAIN, False),
        ("db1.service", Requirements(conflicts=("db*",)), "db2.service", PLAIN, True),
        ("x.service", Requirements(conflicts=("a", "y.*")), "y.service", PLAIN, True),
        ("x.service", Requirements(conflicts=("[",)), "[", PLAIN, False),
    ],
)
def test_conflicts_with(
    own_name: str, own: Requirements, other_name: str, other: Requirements, conflict: bool
) -> None:
    assert own.conflicts_with(own_name, other_name, other) is conflict


_UNIT_NAMES = st.text(st.sampled_from("ab.*"), min_size=1, max_size=4)


@given(
    a=_UNIT_NAMES,
    b=_UNIT_NAMES,
    a_globs=st.lists(_UNIT_NAMES, max_size=2),
    b_globs=st.lists(_UNIT_NAMES, max_size=2),
)
def test_conflicts_are_symmetric(a: str, b: str, a_globs: list[str], b_globs: list[str]) -> None:
    ra, rb = Requirements(conflicts=tuple(a_globs)), Requirements(conflicts=tuple(b_globs))
    assert ra.conflicts_with(a, b, rb) == rb.conflicts_with(b, a, ra)


def test_replaces_unit() -> None:
    req = Requirements(replaces=("old-*.service", "legacy.service"))
    assert req.replaces_unit("old-web.service") is True
    assert req.replaces_unit("legacy.service") is True
    assert req.replaces_unit("new-web.service") is False
    assert Requirements().replaces_unit("old-web.service") is False


def test_requirements_are_hashable_values() -> None:
    one = reqs('MachineMetadata="a=1" "b=2"\nConflicts=x*\n')
    two = reqs('MachineMetadata="b=2" "a=1"\nConflicts=x*\n')
    assert one == two
    assert hash(one) == hash(two)
    assert len({one, two, NO_REQUIREMENTS}) == 2
    assert not hasattr(one, "__dict__")
    with pytest.raises(AttributeError):
        one.is_global = True  # type: ignore[misc]


# --- globs ----------------------------------------------------------------------------------

GLOBS = [
    ("abc", "abc", True),
    ("*", "abc", True),
    ("*c", "abc", True),
    ("a*", "a", True),
    ("a*", "abc", True),
    ("a*", "ab/c", False),
    ("a*/b", "abc/b", True),
    ("a*/b", "a/c/b", False),
    ("a*b*c*d*e*/f", "axbxcxdxe/f", True),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/f", True),
    ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", False),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", False),
    ("a*b?c*x", "abxbbxdbxebxczzx", True),
    ("a*b?c*x", "abxbbxdbxebxczzy", False),
    ("ab[c]", "abc", True),
    ("ab[b-d]", "abc", True),
    ("ab[e-g]", "abc", False),
    ("ab[^c]", "abc", False),
    ("ab[^b-d]", "abc", False),
    ("ab[^e-g]", "abc", True),
    ("a\\*b", "a*b", True),
    ("a\\*b", "ab", False),
    ("a?b", "a☺b", True),
    ("a[^a]b", "a☺b", True),
    ("a???b", "a☺b", False),
    ("a[^a][^a][^a]b", "a☺b", False),
    ("[a-ζ]*", "\u03b1", True),
    ("*[a-ζ]", "A", False),
    ("a?b", "a/b", False),
    ("a*b", "a/b", False),
    ("a[/]b", "a/b", True),
    ("a[^x]b", "a/b", True),
    ("[\\]a]", "]", True),
    ("[\\-]", "-", True),
    ("[x\\-]", "x", True),
    ("[x\\-]", "-", True),
    ("[x\\-]", "z", False),
    ("[\\-x]", "x", True),
    ("[\\-x]", "-", True),
    ("[\\-x]", "a", False),
    ("[z-a]", "m", False),
    ("*x", "xxx", True),
    ("", "", True),
    ("", "a", False),
    ("*", "", True),
    ("**", "ab", True),
    ("a*", "a/", False),
    ("*.service", "foo.service", True),
    ("foo@*.service", "foo@1.service", True),
    ("foo@*.service", "foo@.service", True),
    ("foo*", "bar", False),
    ("a]b", "a]b", True),
    ("[*]", "*", True),
    ("[*]", "a", False),
    # malformed patterns match nothing (Go reports ErrBadPattern for each of these)
    ("[]a]", "]", False),
    ("[-]", "-", False),
    ("[x-]", "x", False),
    ("[x-]", "-", False),
    ("[-x]", "x", False),
    ("[a-b-c]", "a", False),
    ("[", "a", False),
    ("[^", "a", False),
    ("[^bc", "a", False),
    ("a[", "a", False),
    ("a[", "ab", False),
    ("a/b[", "x", False),
    ("\\", "\\", False),
    ("a\\", "a", False),
    ("*[", "x", False),
    ("[a]*[", "a", False),
]


@pytest.mark.parametrize(("pattern", "name", "matched"), GLOBS)
def test_glob_match(pattern: str, name: str, matched: bool) -> None:
    assert glob_match(pattern, name) is matched


def _reference_match(pattern: str, name: str) -> bool:
    """A plain regex translation for bracket-free patterns."""
    regex: list[str] = []
    chars = iter(pattern)
    for char in chars:
        if char == "\\":
            escaped = next(chars, None)
            if escaped is None:
                return False
            regex.append(re.escape(escaped))
        elif char == "*":
            regex.append("[^/]*")
        elif char == "?":
            regex.append("[^/]")
        else:
            regex.append(re.escape(char))
    return re.fullmatch("".join(regex), name, re.DOTALL) is not None


@given(
    pattern=st.text(st.sampled_from("ab/*?\\"), max_size=8),
    name=st.text(st.sampled_from("ab/*?\\"), max_size=8),
)
def test_glob_match_agrees_with_a_regex_without_brackets(pattern: str, name: str) -> None:
    assert glob_match(pattern, name) == _reference_match(pattern, name)
