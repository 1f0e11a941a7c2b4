"""The scale benchmark's arithmetic: how machines are split over processes, and percentiles."""

from __future__ import annotations

import pytest

from bench.scale import split
from bench.scale_proc import percentiles


@pytest.mark.parametrize(
    ("machines", "procs"), [(1000, 4), (10000, 4), (2, 1), (2, 4), (250, 3), (199, 2)]
)
def test_every_machine_once_and_one_percent_in_the_last_process(machines: int, procs: int) -> None:
    spans = split(machines, procs)
    indexes = [i for first, count in spans for i in range(first, first + count)]
    assert indexes == list(range(machines))
    assert all(count > 0 for _, count in spans)
    assert spans[-1][1] == max(1, machines // 100)
    assert len(spans) == min(procs, machines - spans[-1][1]) + 1


def test_percentiles() -> None:
    assert percentiles([]) is None
    values = [float(v) for v in range(1, 101)]  # 1..100, shuffled below
    values = values[50:] + values[:50]
    assert percentiles(values) == {"n": 100, "p50": 51.0, "p99": 100.0, "max": 100.0}
    assert percentiles([0.12345], 3) == {"n": 1, "p50": 0.123, "p99": 0.123, "max": 0.123}
