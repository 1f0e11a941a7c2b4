"""Placement: the checker chain, the least-loaded ranker (heap and narrowed paths), and `explain`.

The table of `test_able_to_run` follows fleet's `agent/agent_state_test.go` AbleToRun cases: a
unit against a machine holding given units, and the expected first rejection (or None).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetd.core.model import Machine, Unit
from fleetd.core.scheduler import (
    Board,
    Rejection,
    explain,
    machine_id_matches,
    replaces_one_way,
)
from tests.core.harness import machine, unit

ID_A = "aaaaaaaa" + "0" * 24
ID_B = "bbbbbbbb" + "1" * 24
ID_C = "cccccccc" + "2" * 24


def board(machines: Iterable[Machine], placed: Mapping[str, Iterable[Unit]] | None = None) -> Board:
    """A board over `machines`, with `placed` mapping a machine id to the units on it."""
    b = Board({m.id: m for m in machines})
    for machine_id, units in (placed or {}).items():
        for u in units:
            b.place(u, machine_id)
    return b


def ranked(b: Board, candidates: Iterable[str]) -> str | None:
    """The reference answer: the first candidate by (load, id)."""
    return min(candidates, key=lambda m: (b.load(m), m), default=None)


def brute_force_pick(b: Board, u: Unit) -> str | None:
    return ranked(b, [m for m in b.machines if b.rejection(u, m) is None])


# ---- machine_id_matches and replaces_one_way


@pytest.mark.parametrize(
    ("wanted", "machine_id", "matches"),
    [
        (ID_A, ID_A, True),
        ("aaaaaaaa", ID_A, True),
        ("aaaaaaa", ID_A, False),  # 7 characters: not the short id
        ("aaaaaaaa0", ID_A, False),  # 9 characters: neither
        (ID_B, ID_A, False),
        ("bbbbbbbb", ID_A, False),
        ("", ID_A, False),
        ("m1", "m1", True),  # an id shorter than 8 characters is its own short id
        ("m", "m1", False),
        (ID_A.upper(), ID_A, False),  # ids are compared exactly
    ],
)
def test_machine_id_matches(wanted: str, machine_id: str, matches: bool) -> None:
    assert machine_id_matches(wanted, Machine(machine_id)) is matches


@pytest.mark.parametrize(
    ("replacer", "replaced", "expected"),
    [
        (unit("a.service", "Replaces=b.service"), unit("b.service"), True),
        (unit("a.service", "Replaces=b*.service"), unit("bee.service"), True),
        (unit("a.service", "Replaces=c.service"), unit("b.service"), False),
        (unit("a.service"), unit("b.service"), False),
        (unit("b.service"), unit("a.service", "Replaces=b.service"), False),  # the wrong way
        # mutual replacement is ignored, both ways
        (
            unit("a.service", "Replaces=b.service"),
            unit("b.service", "Replaces=a.service"),
            False,
        ),
        (
            unit("a.service", "Replaces=b.service"),
            unit("b.service", "Replaces=*.service"),
            False,
        ),
        # a global unit is never displaced
        (unit("a.service", "Replaces=g.service"), unit("g.service", "Global=true"), False),
        # but a global unit may displace another
        (unit("g.service", "Global=true\nReplaces=b.service"), unit("b.service"), True),
    ],
)
def test_replaces_one_way(replacer: Unit, replaced: Unit, expected: bool) -> None:
    assert replaces_one_way(replacer, replaced) is expected


# ---- the checker chain: AbleToRun


M = machine(ID_A, role="web", zone="eu")
OTHER = machine(ID_B, role="db")


@pytest.mark.parametrize(
    ("candidate", "here", "elsewhere", "expected"),
    [
        pytest.param(unit("a.service"), [], [], None, id="nothing to worry about"),
        pytest.param(
            unit("a.service"), [unit("b.service"), unit("c.service")], [], None, id="busy machine"
        ),
        # MachineID
        pytest.param(unit("a.service", f"MachineID={ID_A}"), [], [], None, id="id: full"),
        pytest.param(unit("a.service", "MachineID=aaaaaaaa"), [], [], None, id="id: short"),
        pytest.param(
            unit("a.service", f"MachineID={ID_B}"),
            [],
            [],
            Rejection("machine_id", ID_B),
            id="id: other machine",
        ),
        pytest.param(
            unit("a.service", "MachineID=aaaa"),
            [],
            [],
            Rejection("machine_id", "aaaa"),
            id="id: too short a prefix",
        ),
        pytest.param(
            unit("a.service", "MachineID="),
            [],
            [],
            Rejection("machine_id", ""),
            id="id: pinned to the empty id",
        ),
        # MachineMetadata
        pytest.param(unit("a.service", "MachineMetadata=role=web"), [], [], None, id="meta: match"),
        pytest.param(
            unit("a.service", 'MachineMetadata="role=db" "role=web"'),
            [],
            [],
            None,
            id="meta: OR within a key",
        ),
        pytest.param(
            unit("a.service", "MachineMetadata=role=web\nMachineMetadata=zone=eu"),
            [],
            [],
            None,
            id="meta: AND across keys",
        ),
        pytest.param(
            unit("a.service", "MachineMetadata=role=db"),
            [],
            [],
            Rejection("metadata", "role=db"),
            id="meta: other value",
        ),
        pytest.param(
            unit("a.service", 'MachineMetadata="role=db" "role=api"'),
            [],
            [],
            Rejection("metadata", "role=api or role=db"),
            id="meta: none of the values, sorted",
        ),
        pytest.param(
            unit("a.service", "MachineMetadata=role=web\nMachineMetadata=zone=us"),
            [],
            [],
            Rejection("metadata", "zone=us"),
            id="meta: one key of two fails",
        ),
        pytest.param(
            unit("a.service", "MachineMetadata=rack=1"),
            [],
            [],
            Rejection("metadata", "rack=1"),
            id="meta: key missing",
        ),
        # MachineOf
        pytest.param(
            unit("a.service", "MachineOf=b.service"), [unit("b.service")], [], None, id="peer here"
        ),
        pytest.param(
            unit("a.service", "MachineOf=b.service"),
            [],
            [unit("b.service")],
            Rejection("machine_of", "b.service"),
            id="peer elsewhere",
        ),
        pytest.param(
            unit("a.service", "MachineOf=b.service"),
            [],
            [],
            Rejection("machine_of", "b.service"),
            id="peer nowhere",
        ),
        pytest.param(
            unit("a.service", "MachineOf=b.service\nMachineOf=c.service"),
            [unit("b.service")],
            [unit("c.service")],
            Rejection("machine_of", "c.service"),
            id="one peer of two missing",
        ),
        # Conflicts, both ways
        pytest.param(
            unit("a.service", "Conflicts=b.service"),
            [unit("b.service")],
            [],
            Rejection("conflicts", "b.service"),
            id="conflicts: new unit names the placed one",
        ),
        pytest.param(
            unit("a.service"),
            [unit("b.service", "Conflicts=a.service")],
            [],
            Rejection("conflicts", "b.service"),
            id="conflicts: placed unit names the new one",
        ),
        pytest.param(
            unit("web@2.service", "Conflicts=web@*.service"),
            [unit("web@1.service", "Conflicts=web@*.service")],
            [],
            Rejection("conflicts", "web@1.service"),
            id="conflicts: glob",
        ),
        pytest.param(
            unit("a.service", "Conflicts=*.service"),
            [unit("d.service"), unit("c.service"), unit("x.socket")],
            [],
            Rejection("conflicts", "c.service"),
            id="conflicts: the first by name",
        ),
        pytest.param(
            unit("a.service", "Conflicts=b.service"),
            [unit("c.service")],
            [unit("b.service")],
            None,
            id="conflicts: only on another machine",
        ),
        pytest.param(
            unit("a.service", "Conflicts=a.service"),
            [unit("a.service", "Conflicts=a.service")],
            [],
            None,
            id="conflicts: never with itself",
        ),
        # Replaces
        pytest.param(
            unit("b.service"),
            [unit("a.service", "Replaces=b.service")],
            [],
            Rejection("replaced", "a.service"),
            id="replaced by a unit there",
        ),
        pytest.param(
            unit("b.service"),
            [unit("z.service", "Replaces=b*"), unit("y.service", "Replaces=*.service")],
            [],
            Rejection("replaced", "y.service"),
            id="replaced: the first replacer by name",
        ),
        pytest.param(
            unit("a.service", "Replaces=b.service"),
            [unit("b.service")],
            [],
            None,
            id="the replacer may join the unit it replaces",
        ),
        pytest.param(
            unit("b.service", "Replaces=a.service"),
            [unit("a.service", "Replaces=b.service")],
            [],
            None,
            id="mutual replacement is ignored",
        ),
        pytest.param(
            unit("g.service", "Global=true"),
            [unit("a.service", "Replaces=g.service")],
            [],
            None,
            id="a global unit is never replaced",
        ),
        pytest.param(
            unit("b.service"),
            [],
            [unit("a.service", "Replaces=b.service")],
            None,
            id="replacer on another machine",
        ),
        # the order of the chain: the first failing check is reported
        pytest.param(
            unit("a.service", f"MachineID={ID_B}\nMachineMetadata=role=db"),
            [],
            [],
            Rejection("machine_id", ID_B),
            id="order: id before metadata",
        ),
        pytest.param(
            unit("a.service", "MachineMetadata=role=db\nMachineOf=b.service"),
            [],
            [],
            Rejection("metadata", "role=db"),
            id="order: metadata before peer",
        ),
        pytest.param(
            unit("a.service", "MachineOf=b.service\nConflicts=c.service"),
            [unit("c.service")],
            [],
            Rejection("machine_of", "b.service"),
            id="order: peer before conflicts",
        ),
        pytest.param(
            unit("b.service", "Conflicts=c.service"),
            [unit("c.service"), unit("a.service", "Replaces=b.service")],
            [],
            Rejection("conflicts", "c.service"),
            id="order: conflicts before replaced",
        ),
    ],
)
def test_able_to_run(
    candidate: Unit, here: list[Unit], elsewhere: list[Unit], expected: Rejection | None
) -> None:
    b = board([M, OTHER], {M.id: here, OTHER.id: elsewhere})
    assert b.rejection(candidate, M.id) == expected


# ---- the board's bookkeeping


def test_place_and_remove_keep_load_and_where() -> None:
    b = board([machine("m1"), machine("m2")])
    a, g = unit("a.service"), unit("g.service", "Global=true")
    assert (b.load("m1"), b.load("m2")) == (0, 0)
    assert b.machines_of("a.service") == set()
    b.place(a, "m1")
    b.place(g, "m1")
    b.place(g, "m2")
    assert (b.load("m1"), b.load("m2")) == (2, 1)
    assert b.machines_of("a.service") == {"m1"}
    assert b.machines_of("g.service") == {"m1", "m2"}
    assert b.units_on["m1"] == {"a.service": a, "g.service": g}
    b.remove("g.service", "m1")
    assert b.machines_of("g.service") == {"m2"}
    assert b.load("m1") == 1
    b.remove("g.service", "m2")
    assert b.machines_of("g.service") == set()
    assert "g.service" not in b.where
    assert (b.load("m1"), b.load("m2")) == (1, 0)


def test_placing_a_unit_twice_on_one_machine_counts_once() -> None:
    b = board([machine("m1")])
    b.place(unit("a.service"), "m1")
    b.place(unit("a.service"), "m1")
    assert b.load("m1") == 1


def test_conflict_and_replace_indexes_follow_remove() -> None:
    m1 = machine("m1")
    b = board([m1], {"m1": [unit("c.service", "Conflicts=x.service")]})
    b.place(unit("r.service", "Replaces=y.service"), "m1")
    assert b.rejection(unit("x.service"), "m1") == Rejection("conflicts", "c.service")
    assert b.rejection(unit("y.service"), "m1") == Rejection("replaced", "r.service")
    b.remove("c.service", "m1")
    b.remove("r.service", "m1")
    assert b.rejection(unit("x.service"), "m1") is None
    assert b.rejection(unit("y.service"), "m1") is None
    assert b.conflicting_on["m1"] == {}
    assert b.replacing_on["m1"] == {}


def test_replaced_by() -> None:
    b = board(
        [machine("m1"), machine("m2")],
        {
            "m1": [
                unit("z.service", "Replaces=b.service"),
                unit("k.service", "Replaces=b*"),
                unit("b.service", "Replaces=b.service"),
            ]
        },
    )
    assert b.replaced_by(unit("b.service"), "m1") == "k.service"
    assert b.replaced_by(unit("b.service"), "m2") is None
    assert b.replaced_by(unit("c.service"), "m1") is None


# ---- pick: the least-loaded machine, ties broken by id


def test_pick_least_loaded_then_id() -> None:
    b = board([machine("m3"), machine("m1"), machine("m2")])
    order = []
    for i in range(7):
        u = unit(f"u{i}.service")
        picked = b.pick(u)
        assert picked is not None
        order.append(picked)
        b.place(u, picked)
    assert order == ["m1", "m2", "m3", "m1", "m2", "m3", "m1"]


def test_pick_does_not_place() -> None:
    b = board([machine("m1"), machine("m2")])
    u = unit("a.service")
    assert b.pick(u) == "m1"
    assert b.pick(u) == "m1"
    assert b.load("m1") == 0


def test_pick_prefers_the_lower_load_over_the_lower_id() -> None:
    b = board([machine("m1"), machine("m2")], {"m1": [unit("x.service")]})
    assert b.pick(unit("a.service")) == "m2"


def test_pick_skips_machines_that_reject_and_forgets_nothing() -> None:
    b = board([machine("m1"), machine("m2"), machine("m3")])
    b.place(unit("c.service", "Conflicts=a.service"), "m1")
    b.place(unit("x.service"), "m2")
    b.place(unit("y.service"), "m3")
    # m2 and m3 tie at load 1; m1 has the same load but conflicts
    assert b.pick(unit("a.service")) == "m2"
    # the machines popped and rejected are back in the heap
    assert b.pick(unit("b.service")) == "m1"
    b.remove("c.service", "m1")
    assert b.pick(unit("a.service")) == "m1"


def test_pick_returns_none_when_no_machine_passes() -> None:
    b = board(
        [machine("m1"), machine("m2")],
        {"m1": [unit("x.service")], "m2": [unit("x.service")]},
    )
    assert b.pick(unit("a.service", "Conflicts=x.service")) is None
    # and the heap is intact afterwards
    assert b.pick(unit("b.service")) == "m1"


def test_pick_with_no_machines() -> None:
    b = board([])
    assert b.pick(unit("a.service")) is None
    assert b.pick(unit("a.service", "MachineMetadata=role=db")) is None


def test_pick_after_remove_sees_the_lower_load() -> None:
    b = board([machine("m1"), machine("m2")])
    for name in ("a", "b", "c"):
        b.place(unit(f"{name}.service"), "m1")
    b.place(unit("d.service"), "m2")
    assert b.pick(unit("z.service")) == "m2"
    for name in ("a", "b", "c"):
        b.remove(f"{name}.service", "m1")
    assert b.pick(unit("z.service")) == "m1"
    b.place(unit("e.service"), "m1")
    assert b.pick(unit("z.service")) == "m1"  # tie at 1: lower id
    b.place(unit("f.service"), "m1")
    assert b.pick(unit("z.service")) == "m2"


# ---- pick on narrowed candidates


def test_pick_pinned_by_machine_id_ignores_load() -> None:
    b = board([Machine(ID_A), Machine(ID_B)], {ID_B: [unit("x.service"), unit("y.service")]})
    assert b.pick(unit("a.service", f"MachineID={ID_B}")) == ID_B
    assert b.pick(unit("a.service", "MachineID=bbbbbbbb")) == ID_B
    assert b.pick(unit("a.service", "MachineID=dddddddd")) is None


def test_pick_pinned_by_a_short_id_two_machines_share() -> None:
    long_id = "aaaaaaaa" + "9" * 24
    b = board([Machine("aaaaaaaa"), Machine(long_id)], {"aaaaaaaa": [unit("x.service")]})
    assert b.pick(unit("a.service", "MachineID=aaaaaaaa")) == long_id
    b.place(unit("y.service"), long_id)
    assert b.pick(unit("a.service", "MachineID=aaaaaaaa")) == "aaaaaaaa"


def test_pick_pinned_to_a_machine_that_rejects() -> None:
    b = board([machine("m1"), machine("m2")], {"m1": [unit("x.service")]})
    assert b.pick(unit("a.service", "MachineID=m1\nConflicts=x.service")) is None


def test_pick_by_metadata_ranks_the_matching_machines() -> None:
    machines = [
        machine("m1", role="web"),
        machine("m2", role="db"),
        machine("m3", role="db"),
        machine("m4", role="db"),
    ]
    b = board(machines, {"m2": [unit("x.service")]})
    db = unit("a.service", "MachineMetadata=role=db")
    assert b.pick(db) == "m3"
    b.place(unit("y.service"), "m3")
    assert b.pick(db) == "m4"
    b.place(unit("z.service"), "m4")
    assert b.pick(db) == "m2"  # all at 1: lowest id
    assert b.pick(unit("b.service", "MachineMetadata=role=web")) == "m1"
    assert b.pick(unit("c.service", "MachineMetadata=role=api")) is None
    either = unit("d.service", 'MachineMetadata="role=web" "role=db"')
    assert b.pick(either) == "m1"


def test_pick_by_metadata_intersects_keys() -> None:
    machines = [
        machine("m1", role="db", zone="a"),
        machine("m2", role="db", zone="b"),
        machine("m3", role="web", zone="b"),
    ]
    b = board(machines)
    assert b.pick(unit("a.service", "MachineMetadata=role=db\nMachineMetadata=zone=b")) == "m2"
    assert b.pick(unit("a.service", "MachineMetadata=role=web\nMachineMetadata=zone=a")) is None


def test_pick_by_metadata_skips_a_candidate_that_rejects() -> None:
    machines = [machine("m1", role="db"), machine("m2", role="db"), machine("m3")]
    b = board(machines, {"m1": [unit("c.service", "Conflicts=a.service")]})
    b.place(unit("x.service"), "m2")
    b.place(unit("y.service"), "m2")
    assert b.pick(unit("a.service", "MachineMetadata=role=db")) == "m2"


def test_pick_follows_the_machine_of_peer() -> None:
    b = board(
        [machine("m1"), machine("m2"), machine("m3")],
        {"m2": [unit("p.service"), unit("x.service")]},
    )
    assert b.pick(unit("a.service", "MachineOf=p.service")) == "m2"
    assert b.pick(unit("a.service", "MachineOf=nothere.service")) is None


def test_pick_follows_a_global_peer_to_its_least_loaded_machine() -> None:
    g = unit("g.service", "Global=true")
    b = board(
        [machine("m1"), machine("m2"), machine("m3")],
        {"m1": [g, unit("x.service")], "m2": [g, unit("y.service")], "m3": [g]},
    )
    follower = unit("f.service", "MachineOf=g.service")
    assert b.pick(follower) == "m3"
    b.place(unit("z.service"), "m3")
    assert b.pick(follower) == "m1"


def test_pick_needs_every_peer_and_the_metadata() -> None:
    g = unit("g.service", "Global=true")
    machines = [machine("m1", role="db"), machine("m2", role="web"), machine("m3", role="db")]
    b = board(machines, {"m1": [g, unit("p.service")], "m2": [g], "m3": [g]})
    assert b.pick(unit("a.service", "MachineOf=g.service\nMachineOf=p.service")) == "m1"
    assert b.pick(unit("a.service", "MachineOf=g.service\nMachineMetadata=role=db")) == "m3"
    assert b.pick(unit("a.service", "MachineOf=p.service\nMachineMetadata=role=web")) is None


# ---- properties: the heap never gives a stale answer; pick equals the brute-force choice

MACHINE_IDS = ("m0", "m1", "m2", "m3", "m4")
ROLES = ("web", "db", "api")
PLAIN = unit("probe.service")
PROBES = {role: unit(f"probe-{role}.service", f"MachineMetadata=role={role}") for role in ROLES}

op = st.one_of(
    st.tuples(st.just("place"), st.integers(0, 30), st.sampled_from(MACHINE_IDS)),
    st.tuples(st.just("remove"), st.integers(0, 1000), st.just("")),
    st.tuples(st.just("pick"), st.integers(0, 0), st.sampled_from(("", *ROLES))),
)


@settings(deadline=None)
@given(
    roles=st.lists(st.sampled_from(ROLES), min_size=1, max_size=len(MACHINE_IDS)),
    ops=st.lists(op, max_size=60),
)
def test_stale_heap_entries_never_give_a_wrong_answer(
    roles: list[str], ops: list[tuple[str, int, str]]
) -> None:
    machines = [machine(f"m{i}", role=role) for i, role in enumerate(roles)]
    ids = [m.id for m in machines]
    b = board(reversed(machines))
    placed: list[tuple[str, str]] = []
    for step, (kind, number, target) in enumerate(ops):
        if kind == "place" and target in ids:
            name = f"u{number}.service"
            b.place(unit(name), target)
            if (name, target) not in placed:
                placed.append((name, target))
        elif kind == "remove" and placed:
            name, source = placed.pop(number % len(placed))
            b.remove(name, source)
        elif kind == "pick":
            picked = b.pick(PROBES[target] if target else PLAIN)
            if picked is not None:
                b.place(unit(f"picked{step}.service"), picked)
                placed.append((f"picked{step}.service", picked))
        assert b.pick(PLAIN) == ranked(b, ids)
        for role, probe in PROBES.items():
            matching = [m.id for m in machines if m.metadata["role"] == role]
            assert b.pick(probe) == ranked(b, matching), role
    for m in ids:
        assert b.load(m) == sum(1 for _, where in placed if where == m)


@st.composite
def boards_and_units(draw: st.DrawFn) -> tuple[Board, list[Unit]]:
    """A board with random metadata and placements, and units with every kind of requirement."""
    n = draw(st.integers(0, 5))
    machines = [machine(f"m{i}", role=draw(st.sampled_from(ROLES))) for i in range(n)]
    b = board(machines)
    names = [f"u{i}.service" for i in range(8)]
    kinds = ["plain", "conflicts", "machine_of", "metadata", "machine_id", "replaces"]

    def make(name: str) -> Unit:
        kind = draw(st.sampled_from(kinds))
        line = ""
        if kind == "conflicts":
            line = "Conflicts=" + draw(st.sampled_from(["u*.service", *names]))
        elif kind == "machine_of":
            line = "MachineOf=" + draw(st.sampled_from(names))
        elif kind == "metadata":
            line = "MachineMetadata=role=" + draw(st.sampled_from(ROLES))
        elif kind == "machine_id":
            line = "MachineID=" + draw(st.sampled_from(["m0", "m1", "m9"]))
        elif kind == "replaces":
            line = "Replaces=" + draw(st.sampled_from(names))
        return unit(name, line)

    for name in names:
        for m in machines:
            if draw(st.integers(0, 3)) == 0:
                b.place(make(name), m.id)
    # churn, so the heap holds stale entries
    for name in names:
        where = sorted(b.machines_of(name))
        if where and draw(st.integers(0, 1)) == 1:
            b.remove(name, where[0])
    probes = [make(f"p{i}.service") for i in range(4)]
    return b, probes


@settings(deadline=None)
@given(boards_and_units())
def test_pick_is_the_least_loaded_machine_that_passes(case: tuple[Board, list[Unit]]) -> None:
    b, probes = case
    for probe in probes:
        expected = brute_force_pick(b, probe)
        assert b.pick(probe) == expected
        if expected is not None:
            b.place(probe, expected)


@settings(deadline=None)
@given(
    roles=st.lists(st.sampled_from(ROLES), min_size=1, max_size=6),
    loads=st.lists(st.integers(0, 3), min_size=6, max_size=6),
    wanted=st.sampled_from(ROLES),
)
def test_narrowed_candidates_are_ranked_like_the_heap(
    roles: list[str], loads: list[int], wanted: str
) -> None:
    machines = [machine(f"m{i}", role=role) for i, role in enumerate(roles)]
    b = board(machines)
    for i, m in enumerate(machines):
        for j in range(loads[i]):
            b.place(unit(f"x{i}-{j}.service"), m.id)
    matching = [m.id for m in machines if m.metadata["role"] == wanted]
    assert b.pick(unit("a.service", f"MachineMetadata=role={wanted}")) == ranked(b, matching)
    assert b.pick(PLAIN) == ranked(b, [m.id for m in machines])


# ---- explain


def test_explain_without_machines() -> None:
    assert explain(unit("a.service"), board([])) == ("no machines are available",)


def test_explain_pin_to_a_missing_machine() -> None:
    b = board([Machine(ID_A), Machine(ID_B)])
    assert explain(unit("a.service", "MachineID=dddddddd"), b) == ("no machine has id dddddddd",)


def test_explain_pin_to_a_machine_that_refuses_lets_that_machine_explain() -> None:
    b = board([Machine(ID_A, {"role": "web"}), Machine(ID_B), Machine(ID_C)])
    u = unit("a.service", f"MachineID={ID_A}\nMachineMetadata=role=db")
    assert explain(u, b) == ("1 of 3 machines lack metadata role=db",)


def test_explain_peer_not_placed() -> None:
    b = board([machine("m1"), machine("m2")], {"m1": [unit("x.service")]})
    assert explain(unit("a.service", "MachineOf=p.service"), b) == (
        "MachineOf peer p.service is not placed on any machine",
    )


def test_explain_peer_placed_on_a_machine_that_refuses() -> None:
    b = board(
        [machine("m1"), machine("m2")],
        {"m1": [unit("p.service"), unit("x.service")]},
    )
    u = unit("a.service", "MachineOf=p.service\nConflicts=x.service")
    assert explain(u, b) == ("conflicts with x.service on m1",)


def test_explain_peer_not_placed_is_reported_even_when_some_machines_lack_metadata() -> None:
    # m2 lacks the metadata; m1 has it but p.service is on no machine. Without the peer reason,
    # "1 of 2 machines lack metadata role=db" suggests m1 could take the unit.
    b = board([machine("m1", role="db"), machine("m2", role="web")])
    u = unit("a.service", "MachineOf=p.service\nMachineMetadata=role=db")
    reasons = explain(u, b)
    assert "MachineOf peer p.service is not placed on any machine" in reasons
    assert "1 of 2 machines lack metadata role=db" in reasons


def test_explain_metadata_on_no_machine() -> None:
    b = board([machine("m1", role="web"), machine("m2")])
    assert explain(unit("a.service", "MachineMetadata=role=db"), b) == (
        "no machine has metadata role=db",
    )
    either = unit("a.service", 'MachineMetadata="role=db" "role=api"')
    assert explain(either, b) == ("no machine has metadata role=api or role=db",)


def test_explain_metadata_lacking_on_some_machines() -> None:
    machines = [machine("m1", role="web"), machine("m2", role="db"), machine("m3", role="db")]
    b = board(machines, {"m2": [unit("x.service")], "m3": [unit("x.service")]})
    u = unit("a.service", "MachineMetadata=role=db\nConflicts=x.service")
    assert explain(u, b) == (
        "conflicts with x.service on m2, m3",
        "1 of 3 machines lack metadata role=db",
    )


def test_explain_each_metadata_key_separately() -> None:
    machines = [
        machine("m1", role="web", zone="a"),
        machine("m2", role="db", zone="b"),
        machine("m3", role="db", zone="c"),
    ]
    u = unit("a.service", "MachineMetadata=role=db\nMachineMetadata=zone=a")
    assert explain(u, board(machines)) == (
        "1 of 3 machines lack metadata role=db",
        "2 of 3 machines lack metadata zone=a",
    )


def test_explain_conflicts_on_every_machine() -> None:
    b = board(
        [machine("m1"), machine("m2")],
        {"m1": [unit("x.service")], "m2": [unit("x.service")]},
    )
    assert explain(unit("a.service", "Conflicts=x.service"), b) == (
        "conflicts with x.service on every machine",
    )
    # the other way round: the placed units name the new one
    c = unit("c.service", "Conflicts=a.service")
    b2 = board([machine("m1"), machine("m2")], {"m1": [c], "m2": [c]})
    assert explain(unit("a.service"), b2) == ("conflicts with c.service on every machine",)


def test_explain_conflicts_with_different_units_are_separate_reasons() -> None:
    b = board(
        [machine("m1"), machine("m2"), machine("m3")],
        {"m1": [unit("y.service")], "m2": [unit("x.service")], "m3": [unit("x.service")]},
    )
    assert explain(unit("a.service", "Conflicts=x.service y.service"), b) == (
        "conflicts with x.service on m2, m3",
        "conflicts with y.service on m1",
    )


def _ids(n: int) -> list[str]:
    return [f"{chr(ord('a') + i) * 8}{i:024d}" for i in range(n)]


@pytest.mark.parametrize(
    ("n_machines", "n_conflicting", "where"),
    [
        (2, 1, "aaaaaaaa"),
        (4, 3, "aaaaaaaa, bbbbbbbb, cccccccc"),
        (5, 4, "aaaaaaaa, bbbbbbbb, cccccccc and 1 more"),
        (7, 6, "aaaaaaaa, bbbbbbbb, cccccccc and 3 more"),
    ],
)
def test_explain_names_short_ids_and_counts_the_rest(
    n_machines: int, n_conflicting: int, where: str
) -> None:
    ids = _ids(n_machines)
    x = unit("x.service")
    b = board([Machine(i) for i in ids], {i: [x] for i in ids[:n_conflicting]})
    # the machines without x.service are pinned away: the unit may run on none of them
    b.place(unit("c.service", "Conflicts=a.service"), ids[-1])
    reasons = explain(unit("a.service", "Conflicts=x.service"), b)
    assert reasons == (
        "conflicts with c.service on " + ids[-1][:8],
        f"conflicts with x.service on {where}",
    )


def test_explain_replaced() -> None:
    r = unit("r.service", "Replaces=a.service")
    b = board([machine("m1"), machine("m2")], {"m1": [r], "m2": [r]})
    # named even when it is every machine
    assert explain(unit("a.service"), b) == ("replaced by r.service on m1, m2",)
    b2 = board(
        [machine("m1"), machine("m2")], {"m1": [r], "m2": [unit("c.service", "Conflicts=a*")]}
    )
    assert explain(unit("a.service"), b2) == (
        "conflicts with c.service on m2",
        "replaced by r.service on m1",
    )


def test_explain_falls_back_when_no_machine_explains_itself() -> None:
    b = board([machine("m1"), machine("m2")], {"m1": [unit("x.service")]})
    # nothing refuses: explain is only asked after pick failed, but must still say something
    assert explain(unit("a.service"), b) == ("no machine can run it",)
    # the pinned machine is free, and the others' pin rejections are not worded
    assert explain(unit("a.service", "MachineID=m2"), b) == ("no machine can run it",)


def test_explain_mixes_reasons_in_a_stable_order() -> None:
    machines = [
        machine("m1", role="db"),
        machine("m2", role="db"),
        machine("m3", role="web"),
        machine("m4", role="db"),
    ]
    r = unit("r.service", "Replaces=a.service")
    b = board(
        machines,
        {
            "m1": [unit("x.service")],
            "m2": [r],
            "m4": [unit("x.service")],
        },
    )
    u = unit("a.service", "MachineMetadata=role=db\nConflicts=x.service")
    assert explain(u, b) == (
        "conflicts with x.service on m1, m4",
        "1 of 4 machines lack metadata role=db",
        "replaced by r.service on m2",
    )


EXPLAIN_IN_A_FRESH_PROCESS = """
import json
from tests.core.test_scheduler import explained_example
print(json.dumps(explained_example()))
"""


def explained_example() -> tuple[str, ...]:
    """A board whose reasons come from sets and dicts of machines: order must not leak in."""
    machines = [machine(f"m{i}", role="web" if i % 3 else "db") for i in range(12)]
    placed = {f"m{i}": [unit("x.service")] for i in range(0, 12, 2)}
    placed["m5"] = [unit("r.service", "Replaces=a.service")]
    b = board(machines, placed)
    return explain(unit("a.service", "MachineMetadata=role=db\nConflicts=x.service"), b)


@pytest.mark.parametrize("seed", ["0", "1", "12345"])
def test_reasons_are_the_same_under_any_hash_seed(seed: str) -> None:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    out = subprocess.run(
        [sys.executable, "-c", EXPLAIN_IN_A_FRESH_PROCESS],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert tuple(json.loads(out)) == explained_example()
