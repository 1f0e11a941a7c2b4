"""The stop grace kept for fleet's Go `restart` (`fleetd.api.stop_grace`), on a fake clock."""

from __future__ import annotations

import pytest

from fleetd.api import stop_grace
from fleetd.api.stop_grace import GRACE, StopGrace


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_stopped_unit_reads_launched_for_the_grace_then_loaded() -> None:
    clock = Clock()
    grace = StopGrace(clock)
    assert not grace.holds("a.service")
    grace.note("a.service")
    assert grace.holds("a.service")
    clock.now += GRACE - 0.01
    assert grace.holds("a.service")
    clock.now += 0.01
    assert not grace.holds("a.service")
    grace.note("a.service")
    grace.forget("a.service")  # launched again: nothing to pretend
    assert not grace.holds("a.service")


def test_the_grace_covers_fleets_first_poll() -> None:
    assert GRACE >= 0.25 * 4  # fleet polls first after 250 ms; room for a remote client


def test_at_most_max_tracked_units_are_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stop_grace, "MAX_TRACKED", 3)
    clock = Clock()
    grace = StopGrace(clock)
    for name in ("a", "b", "c"):
        grace.note(name)
    clock.now += GRACE  # a, b, c expired: dropped when d comes
    grace.note("d")
    assert [grace.holds(n) for n in ("a", "b", "c", "d")] == [False, False, False, True]
    for name in ("e", "f"):
        grace.note(name)
    grace.note("g")  # all live: the oldest (d) makes room
    assert [grace.holds(n) for n in ("d", "e", "f", "g")] == [False, True, True, True]
