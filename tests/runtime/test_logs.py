"""ThrottledLog: a storm of occurrences gives one line per interval, and every one is counted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import MutableMapping
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from fleetd.runtime.logs import ThrottledLog
from tests.engine.cluster import wait_until

EVENT = "out of something"


def lines(
    logs: list[MutableMapping[str, Any]], event: str = EVENT
) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == event]


async def test_a_storm_gives_one_line_per_interval_and_loses_no_occurrence() -> None:
    interval = 0.2
    with capture_logs() as logs:
        report = ThrottledLog(structlog.get_logger(), EVENT, interval=interval, address="a")
        started = time.monotonic()
        for _ in range(5000):
            report.note(refused=2)

        async def all_counted() -> bool:
            return sum(int(e["count"]) for e in lines(logs)) == 5000

        await wait_until(all_counted, "the deferred line with the rest of the count")
        elapsed = time.monotonic() - started
    written = lines(logs)
    assert written[0]["count"] == 1  # the first occurrence is told at once
    assert 2 <= len(written) <= elapsed / interval + 2
    assert sum(e["refused"] for e in written) == 10_000
    assert all(e["log_level"] == "warning" and e["address"] == "a" for e in written)
    assert report.ongoing


async def test_end_reports_the_rest_and_a_new_episode_logs_at_once() -> None:
    with capture_logs() as logs:
        report = ThrottledLog(structlog.get_logger(), EVENT, interval=3600, address="a")
        report.end("over")  # nothing noted: nothing to say
        assert logs == []
        for _ in range(3):
            report.note()
        report.end("over")
        assert not report.ongoing
        report.note()
        report.close()  # nothing left to write
    assert [(e["event"], e.get("count"), e["log_level"]) for e in logs] == [
        (EVENT, 1, "warning"),
        ("over", 2, "info"),
        (EVENT, 1, "warning"),
    ]


async def test_close_writes_what_is_still_counted() -> None:
    with capture_logs() as logs:
        report = ThrottledLog(structlog.get_logger(), EVENT, interval=3600)
        for _ in range(4):
            report.note()
        report.close()
        await asyncio.sleep(0)
    assert [e["count"] for e in lines(logs)] == [1, 3]


def test_an_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="interval > 0"):
        ThrottledLog(structlog.get_logger(), EVENT, interval=0)
