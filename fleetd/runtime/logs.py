"""structlog setup for the daemons: JSON lines for journald, readable lines on a terminal.

fleetd writes to stdout and lets journald collect it. `configure_logging` is the only place that
configures structlog; modules just call `structlog.get_logger(__name__)`. Calling it again
replaces the previous configuration (SIGHUP reloads may change the verbosity).

A condition that can repeat without bound (a file-descriptor limit hit on every accept, a flood
of refused connections) is logged through a `ThrottledLog`: one line per interval with a count,
never one line per occurrence, so a storm cannot fill the journal.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sys
from collections import Counter

import structlog


def configure_logging(verbosity: int, *, json: bool | None = None) -> None:
    """Log at info (verbosity 0) or debug (>= 1); JSON unless stdout is a TTY, or as `json` says."""
    if json is None:
        json = not sys.stdout.isatty()
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if json:
        processors += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        processors.append(structlog.dev.ConsoleRenderer())
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.DEBUG if verbosity > 0 else logging.INFO
        ),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=False,
    )


class ThrottledLog:
    """One log line per `interval` for a condition that may repeat thousands of times a second.

    The first `note()` logs at once with `count=1`. Later ones are only counted; the count (and
    the sums of any counters passed to `note`) of everything since the last line goes out
    `interval` seconds after that line, on the event loop, whether or not more come. So N
    occurrences over T seconds give at most T / interval + 2 lines, however large N is, and every
    occurrence is in some line's count. `end(event)` says the condition is over (at info level,
    with what was not reported yet); the next `note` starts a new episode and logs at once.

    Call it from the event loop's thread, with a loop running (the deferred line is a timer).
    """

    def __init__(
        self,
        logger: structlog.typing.FilteringBoundLogger,
        event: str,
        *,
        interval: float,
        **fields: object,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"a throttled log needs an interval > 0, got {interval}")
        self._log = logger
        self._event = event
        self._interval = interval
        self._fields = fields
        self._count = 0
        self._sums: Counter[str] = Counter()
        self._quiet_until = -math.inf  # loop time before which no line is written
        self._deferred: asyncio.TimerHandle | None = None
        self._ongoing = False

    @property
    def ongoing(self) -> bool:
        """True from a `note` until the next `end`."""
        return self._ongoing

    def note(self, **counters: int) -> None:
        """One more occurrence; `counters` are added to the sums the next line reports."""
        self._ongoing = True
        self._count += 1
        self._sums.update(counters)
        loop = asyncio.get_running_loop()
        if loop.time() >= self._quiet_until:
            self._write()
        elif self._deferred is None:
            self._deferred = loop.call_at(self._quiet_until, self._write)

    def end(self, event: str) -> None:
        """The condition is over: log `event` with the occurrences not reported yet."""
        if not self._ongoing:
            return
        self._ongoing = False
        self._cancel_deferred()
        pending = self._take() if self._count else {}
        self._log.info(event, **pending, **self._fields)
        self._quiet_until = -math.inf

    def close(self) -> None:
        """Write what is still counted now rather than later (its owner is going away)."""
        self._cancel_deferred()
        self._write()

    def _write(self) -> None:
        self._deferred = None
        if self._count:
            taken = self._take()
            self._log.warning(self._event, **taken, interval=self._interval, **self._fields)
            self._quiet_until = asyncio.get_running_loop().time() + self._interval

    def _take(self) -> dict[str, object]:
        taken: dict[str, object] = {"count": self._count, **self._sums}
        self._count = 0
        self._sums.clear()
        return taken

    def _cancel_deferred(self) -> None:
        if self._deferred is not None:
            self._deferred.cancel()
            self._deferred = None
