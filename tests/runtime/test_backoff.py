"""Backoff: ceiling growth, cap, reset, jitter bounds and determinism with a seeded RNG."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetd.runtime.backoff import Backoff


def test_ceiling_grows_by_factor_until_the_cap() -> None:
    backoff = Backoff(initial=1.0, maximum=10.0, factor=2.0, rng=random.Random(1))
    ceilings = []
    for _ in range(7):
        ceilings.append(backoff.ceiling)
        backoff.next_delay()
    assert ceilings == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]


def test_every_delay_is_within_its_ceiling() -> None:
    backoff = Backoff(initial=0.5, maximum=30.0, factor=3.0, rng=random.Random(7))
    for _ in range(200):
        ceiling = backoff.ceiling
        assert 0.0 <= backoff.next_delay() <= ceiling <= 30.0


def test_delays_use_the_full_jitter_range() -> None:
    # Full jitter: delays spread across [0, ceiling], not clustered at the top.
    backoff = Backoff(initial=8.0, maximum=8.0, rng=random.Random(3))
    delays = [backoff.next_delay() for _ in range(500)]
    assert min(delays) < 2.0
    assert max(delays) > 6.0


def test_reset_returns_to_the_initial_ceiling() -> None:
    backoff = Backoff(initial=1.0, maximum=60.0, rng=random.Random(0))
    for _ in range(5):
        backoff.next_delay()
    assert backoff.ceiling == 32.0
    backoff.reset()
    assert backoff.ceiling == 1.0
    assert backoff.next_delay() <= 1.0


@given(st.integers(min_value=0, max_value=2**32))
def test_same_seed_gives_the_same_delays(seed: int) -> None:
    first = Backoff(rng=random.Random(seed))
    second = Backoff(rng=random.Random(seed))
    assert [first.next_delay() for _ in range(20)] == [second.next_delay() for _ in range(20)]


def test_different_seeds_give_different_delays() -> None:
    first = Backoff(rng=random.Random(1))
    second = Backoff(rng=random.Random(2))
    assert [first.next_delay() for _ in range(5)] != [second.next_delay() for _ in range(5)]


def test_without_an_rng_it_still_respects_the_bounds() -> None:
    backoff = Backoff(initial=0.1, maximum=0.4)
    assert (backoff.initial, backoff.maximum, backoff.factor) == (0.1, 0.4, 2.0)
    assert all(0.0 <= backoff.next_delay() <= 0.4 for _ in range(50))


def test_a_huge_number_of_attempts_stays_capped() -> None:
    backoff = Backoff(initial=1.0, maximum=5.0, factor=10.0, rng=random.Random(0))
    for _ in range(10_000):  # the ceiling must not overflow to inf
        backoff.next_delay()
    assert backoff.ceiling == 5.0


@pytest.mark.parametrize(
    ("initial", "maximum", "factor"),
    [(0.0, 1.0, 2.0), (-1.0, 1.0, 2.0), (2.0, 1.0, 2.0), (1.0, 2.0, 0.5)],
)
def test_bad_parameters_are_rejected(initial: float, maximum: float, factor: float) -> None:
    with pytest.raises(ValueError, match="backoff needs"):
        Backoff(initial, maximum, factor)
