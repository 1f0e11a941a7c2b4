"""The etcd key layout: every builder under a prefix, prefix normalisation, and key parsing."""

from __future__ import annotations

import dataclasses

import pytest

from fleetd.registry.keys import DEFAULT_PREFIX, Keys

MACHINE = "0123456789abcdef0123456789abcdef"


def test_default_prefix() -> None:
    assert DEFAULT_PREFIX == "/fleet/"
    assert Keys().prefix == "/fleet/"
    assert Keys() == Keys("/fleet/")


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("/fleet", "/fleet/"),
        ("/fleet/", "/fleet/"),
        ("/test/run-42", "/test/run-42/"),
        ("", "/"),
        ("/", "/"),
        ("a//", "a//"),
    ],
)
def test_prefix_always_ends_with_one_added_slash(given: str, stored: str) -> None:
    assert Keys(given).prefix == stored


def test_normalised_prefix_compares_equal_and_stays_frozen() -> None:
    keys = Keys("/p")
    assert keys == Keys("/p/")
    assert hash(keys) == hash(Keys("/p/"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        keys.prefix = "/q/"  # type: ignore[misc]


@pytest.mark.parametrize("prefix", ["/fleet/", "/fleet", "/other/"])
def test_every_builder(prefix: str) -> None:
    keys = Keys(prefix)
    p = prefix if prefix.endswith("/") else prefix + "/"
    assert keys.units == f"{p}units/"
    assert keys.unit("hello.service") == f"{p}units/hello.service"
    assert keys.machines == f"{p}machines/"
    assert keys.machine(MACHINE) == f"{p}machines/{MACHINE}"
    assert keys.schedule == f"{p}schedule/"
    assert keys.schedule_of(MACHINE) == f"{p}schedule/{MACHINE}/"
    assert keys.placement(MACHINE, "hello.service") == f"{p}schedule/{MACHINE}/hello.service"
    assert keys.states == f"{p}states/"
    assert keys.state(MACHINE, "hello.service") == f"{p}states/{MACHINE}/hello.service"
    assert keys.unplaceable == f"{p}unplaceable/"
    assert keys.unplaceable_unit("hello.service") == f"{p}unplaceable/hello.service"
    assert keys.leader == f"{p}engine/leader"
    assert keys.network_config == f"{p}network/config"
    assert keys.subnets == f"{p}network/subnets/"
    assert keys.subnet("10.244.3.0-24") == f"{p}network/subnets/10.244.3.0-24"


def test_the_documented_layout_under_the_default_prefix() -> None:
    keys = Keys()
    assert [
        keys.unit("web@1.service"),
        keys.machine("m1"),
        keys.placement("m1", "web@1.service"),
        keys.state("m1", "web@1.service"),
        keys.unplaceable_unit("web@1.service"),
        keys.leader,
        keys.network_config,
        keys.subnet("10.244.3.0-24"),
    ] == [
        "/fleet/units/web@1.service",
        "/fleet/machines/m1",
        "/fleet/schedule/m1/web@1.service",
        "/fleet/states/m1/web@1.service",
        "/fleet/unplaceable/web@1.service",
        "/fleet/engine/leader",
        "/fleet/network/config",
        "/fleet/network/subnets/10.244.3.0-24",
    ]


def test_a_placement_lies_under_its_machines_schedule() -> None:
    keys = Keys()
    placement = keys.placement("m1", "a.service")
    assert placement.startswith(keys.schedule_of("m1"))
    assert not placement.startswith(keys.schedule_of("m"))
    assert not keys.placement("m10", "a.service").startswith(keys.schedule_of("m1"))


def test_sections_do_not_nest() -> None:
    keys = Keys()
    sections = [keys.units, keys.machines, keys.schedule, keys.states, keys.unplaceable]
    sections += [keys.metadata, keys.subnets]
    for a in sections:
        for b in sections:
            assert a == b or not a.startswith(b), (a, b)
    assert not any(k.startswith(s) for s in sections for k in (keys.leader, keys.network_config))


@pytest.mark.parametrize(
    ("parent", "key", "name"),
    [
        ("/fleet/units/", "/fleet/units/hello.service", "hello.service"),
        ("/fleet/machines/", f"/fleet/machines/{MACHINE}", MACHINE),
        ("/fleet/unplaceable/", "/fleet/unplaceable/web@1.service", "web@1.service"),
        ("/fleet/schedule/", "/fleet/schedule/m1/a.service", "m1/a.service"),
        ("/fleet/units/", "/fleet/units/", ""),
    ],
)
def test_name_under(parent: str, key: str, name: str) -> None:
    assert Keys().name_under(parent, key) == name


def test_name_under_inverts_the_builders() -> None:
    keys = Keys("/x")
    assert keys.name_under(keys.units, keys.unit("a.service")) == "a.service"
    assert keys.name_under(keys.machines, keys.machine(MACHINE)) == MACHINE
    assert keys.name_under(keys.unplaceable, keys.unplaceable_unit("b.service")) == "b.service"


@pytest.mark.parametrize(
    ("parent", "key"),
    [
        ("/fleet/units/", "/fleet/machines/m1"),
        ("/fleet/units/", "/fleet/units"),
        ("/fleet/units/", "/other/units/a.service"),
        ("/fleet/units/", ""),
    ],
)
def test_name_under_refuses_a_key_outside_the_parent(parent: str, key: str) -> None:
    with pytest.raises(ValueError, match="is not under") as caught:
        Keys().name_under(parent, key)
    assert str(caught.value) == f"key {key!r} is not under {parent!r}"


@pytest.mark.parametrize(
    ("key", "pair"),
    [
        ("/fleet/schedule/m1/a.service", ("m1", "a.service")),
        (f"/fleet/schedule/{MACHINE}/web@1.service", (MACHINE, "web@1.service")),
        ("/fleet/schedule/m1/a/b", ("m1", "a/b")),
    ],
)
def test_split_pair(key: str, pair: tuple[str, str]) -> None:
    keys = Keys()
    assert keys.split_pair(keys.schedule, key) == pair


def test_split_pair_inverts_placement_and_state() -> None:
    keys = Keys("/t")
    assert keys.split_pair(keys.schedule, keys.placement(MACHINE, "a.service")) == (
        MACHINE,
        "a.service",
    )
    assert keys.split_pair(keys.states, keys.state("m2", "b@x.service")) == ("m2", "b@x.service")


@pytest.mark.parametrize(
    "key",
    [
        "/fleet/schedule/m1",  # no separator
        "/fleet/schedule/m1/",  # no unit
        "/fleet/schedule//a.service",  # no machine
        "/fleet/schedule/",  # nothing at all
        "/fleet/schedule//",
    ],
)
def test_split_pair_refuses_a_key_that_is_not_machine_slash_unit(key: str) -> None:
    keys = Keys()
    with pytest.raises(ValueError, match="is not <machine>/<unit> under") as caught:
        keys.split_pair(keys.schedule, key)
    assert str(caught.value) == f"key {key!r} is not <machine>/<unit> under '/fleet/schedule/'"


def test_split_pair_refuses_a_key_outside_the_parent() -> None:
    keys = Keys()
    with pytest.raises(ValueError, match="is not under"):
        keys.split_pair(keys.schedule, "/fleet/states/m1/a.service")
