"""Unit names: fleet's validation messages, name structure, fleetctl mangling, Go quoting."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetd.core.names import (
    UnitNameError,
    UnitNameInfo,
    go_quote,
    go_quote_char,
    mangle_unit_name,
    parse_unit_name,
    split_unit_name,
    unit_file_name_problem,
    validate_unit_name,
)

INVALID_NAMES = [
    pytest.param("", "unit name cannot be empty", id="empty"),
    pytest.param("a" * 249 + ".service", "unit name exceeds maximum length (256)", id="257-chars"),
    pytest.param("é" * 125 + ".service", "unit name exceeds maximum length (256)", id="258-bytes"),
    pytest.param("foo", 'unit name must contain "."', id="no-dot"),
    pytest.param("foo.", 'unit name cannot end in "."', id="ends-in-dot"),
    pytest.param("foo.service.", 'unit name cannot end in "."', id="ends-in-second-dot"),
    pytest.param("foo.bar", 'invalid unit type: "bar"', id="bad-type"),
    pytest.param("foo.service.bak", 'invalid unit type: "bak"', id="type-after-last-dot"),
    pytest.param("foo.SERVICE", 'invalid unit type: "SERVICE"', id="type-is-case-sensitive"),
    pytest.param("foo.ser\tvice", 'invalid unit type: "ser\\tvice"', id="type-quoted-like-go"),
    pytest.param("foo@1.mount", 'invalid unit type for template: "mount"', id="template-mount"),
    pytest.param("foo@.slice", 'invalid unit type for template: "slice"', id="template-slice"),
    pytest.param("@x.device", 'invalid unit type for template: "device"', id="type-before-at"),
    pytest.param("bad name@.swap", 'invalid unit type for template: "swap"', id="type-before-char"),
    pytest.param("a b.service", "invalid character ' ' in unit name", id="space"),
    pytest.param("a/b.service", "invalid character '/' in unit name", id="slash"),
    pytest.param("a%i.service", "invalid character '%' in unit name", id="percent"),
    pytest.param("caf\u00e9.service", "invalid character 'é' in unit name", id="non-ascii"),
    pytest.param("a\x01.service", "invalid character '\\x01' in unit name", id="control"),
    pytest.param("a'.service", "invalid character '\\'' in unit name", id="single-quote"),
    pytest.param('a".service', "invalid character '\"' in unit name", id="double-quote"),
    pytest.param("a\u00a0.service", "invalid character '\\u00a0' in unit name", id="nbsp"),
    pytest.param("@foo.service", 'unit name cannot start in "@"', id="starts-with-at"),
    pytest.param("@.service", 'unit name cannot start in "@"', id="only-at"),
]


@pytest.mark.parametrize(("name", "message"), INVALID_NAMES)
def test_invalid_names_give_fleets_message(name: str, message: str) -> None:
    with pytest.raises(UnitNameError) as caught:
        validate_unit_name(name)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    "name",
    [
        "foo.service",
        "a" * 248 + ".service",
        "foo.bar.service",
        "foo@.service",
        "foo@1.service",
        "foo@bar@baz.socket",
        "x:y-z_w\\x2d.timer",
        "Foo9.target",
        "data.mount",
        "dev-sda.device",
        "home.automount",
        "dbus.busname",
        "session.scope",
        "user.slice",
        "snap.snapshot",
        "main.swap",
        "watch@x.path",
    ],
)
def test_valid_names_pass(name: str) -> None:
    validate_unit_name(name)
    assert parse_unit_name(name).name == name


def test_unit_name_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="cannot be empty"):
        validate_unit_name("")


NameParts = tuple[str, str, str, str, bool, bool, str | None]


@pytest.mark.parametrize(
    ("name", "parts"),
    [
        ("foo.service", ("foo", "", "service", "foo", False, False, None)),
        ("foo.bar.socket", ("foo.bar", "", "socket", "foo.bar", False, False, None)),
        ("foo@.service", ("foo", "", "service", "foo@", True, False, "foo@.service")),
        ("foo@1.service", ("foo", "1", "service", "foo@1", False, True, "foo@.service")),
        ("foo@a.b.timer", ("foo", "a.b", "timer", "foo@a.b", False, True, "foo@.timer")),
        ("foo@bar@baz.path", ("foo", "bar@baz", "path", "foo@bar@baz", False, True, "foo@.path")),
    ],
)
def test_name_structure(name: str, parts: NameParts) -> None:
    """parts: prefix, instance, suffix, stem, is_template, is_instance, template."""
    info = parse_unit_name(name)
    assert info.name == name
    actual = (
        info.prefix,
        info.instance,
        info.suffix,
        info.stem,
        info.is_template,
        info.is_instance,
        info.template,
    )
    assert actual == parts


def test_parse_unit_name_validates_first() -> None:
    with pytest.raises(UnitNameError, match='cannot start in "@"'):
        parse_unit_name("@foo.service")


def test_split_unit_name_does_not_validate() -> None:
    assert split_unit_name("nodot") is None
    assert split_unit_name("@x y.mount") == UnitNameInfo("@x y.mount", "", "x y", "mount")
    assert split_unit_name("foo.") == UnitNameInfo("foo.", "foo", "", "")


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("foo", "foo.service"),
        ("foo.1", "foo.1.service"),
        ("dir/bar.socket", "bar.socket"),
        ("/abs/dir/baz.timer", "baz.timer"),
        ("x.target", "x.target.service"),
        ("x.slice", "x.slice.service"),
        ("x.swap", "x.swap.service"),
        ("a.path", "a.path"),
        ("a.device", "a.device"),
        ("a.mount", "a.mount"),
        ("a.automount", "a.automount"),
        ("hello.service", "hello.service"),
        ("foo@1.service", "foo@1.service"),
        ("dir/", "dir.service"),
        ("dir//sub//", "sub.service"),
        ("", "..service"),
        ("///", "/.service"),
    ],
)
def test_mangle_unit_name(arg: str, expected: str) -> None:
    assert mangle_unit_name(arg) == expected


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        ("plain", '"plain"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("it's", '"it\'s"'),
        ("back\\slash", '"back\\\\slash"'),
        ("tab\tnl\ncr\r", '"tab\\tnl\\ncr\\r"'),
        ("\a\b\f\v", '"\\a\\b\\f\\v"'),
        ("\x00\x1f\x7f", '"\\x00\\x1f\\x7f"'),
        ("nb\u00a0sp", '"nb\\u00a0sp"'),
        ("zw\u200bsp", '"zw\\u200bsp"'),
        ("tag\U000e0001", '"tag\\U000e0001"'),
        ("caf\u00e9 \u263a", '"caf\u00e9 \u263a"'),
    ],
)
def test_go_quote_matches_go_percent_q(text: str, quoted: str) -> None:
    assert go_quote(text) == quoted


@pytest.mark.parametrize(
    ("char", "quoted"),
    [("x", "'x'"), ("'", "'\\''"), ('"', "'\"'"), ("\n", "'\\n'"), ("\x01", "'\\x01'")],
)
def test_go_quote_char(char: str, quoted: str) -> None:
    assert go_quote_char(char) == quoted


_NAME_CHARS = st.sampled_from("abcXYZ019:-_.\\")


@given(
    prefix=st.text(_NAME_CHARS, min_size=1, max_size=20).filter(lambda s: not s.startswith("@")),
    instance=st.text(_NAME_CHARS, max_size=10),
    suffix=st.sampled_from(["service", "socket", "timer", "path", "target"]),
)
def test_template_of_an_instance_is_a_valid_template(
    prefix: str, instance: str, suffix: str
) -> None:
    info = parse_unit_name(f"{prefix}@{instance}.{suffix}")
    assert info.prefix == prefix
    assert info.instance == instance
    assert info.template == f"{prefix}@.{suffix}"
    template = parse_unit_name(info.template)
    assert template.is_template
    assert template.template == info.template


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("a.service", None),
        ("web@1.service", None),
        ("../a.service", "would escape"),
        ("a/b.service", "would escape"),
        ("..", "would escape"),
        ("a\0.service", "would escape"),
        (".a.service", "starts with a dot"),
        ("a.json", "not valid"),
        ("", "not valid"),
    ],
)
def test_unit_file_name_problem(name: str, problem: str | None) -> None:
    found = unit_file_name_problem(name)
    if problem is None:
        assert found is None
    else:
        assert found is not None
        assert problem in found
