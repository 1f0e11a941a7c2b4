"""Capped exponential backoff with full jitter, for retrying failed passes and reconnects.

Each `next_delay()` draws uniformly from `[0, ceiling]`, then multiplies the ceiling by `factor`
up to `maximum`; `reset()` brings the ceiling back to `initial` after a success. Full jitter
spreads the retries of many fleetds that lost etcd at the same moment.

Invariants: every delay is in `[0, maximum]`; the ceiling never exceeds `maximum`; the only
side effect is drawing from the `random.Random` passed in, so a seeded generator gives the same
delays every run.
"""

from __future__ import annotations

import os
import random


class Backoff:
    def __init__(
        self,
        initial: float = 0.5,
        maximum: float = 30.0,
        factor: float = 2.0,
        *,
        rng: random.Random | None = None,
    ) -> None:
        if initial <= 0 or maximum < initial or factor < 1:
            raise ValueError(
                f"backoff needs 0 < initial <= maximum and factor >= 1, "
                f"got initial={initial}, maximum={maximum}, factor={factor}"
            )
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self._rng = rng if rng is not None else random.Random(os.urandom(16))
        self._ceiling = initial

    @property
    def ceiling(self) -> float:
        """The upper bound of the next delay."""
        return self._ceiling

    def next_delay(self) -> float:
        """Seconds to wait before the next attempt; each call widens the following one."""
        delay = self._rng.uniform(0.0, self._ceiling)
        self._ceiling = min(self.maximum, self._ceiling * self.factor)
        return delay

    def reset(self) -> None:
        """Start over from `initial`, after an attempt succeeded."""
        self._ceiling = self.initial
