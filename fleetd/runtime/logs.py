"""structlog setup for the daemons: JSON lines for journald, readable lines on a terminal.

fleetd writes to stdout and lets journald collect it. `configure_logging` is the only place that
configures structlog; modules just call `structlog.get_logger(__name__)`. Calling it again
replaces the previous configuration (SIGHUP reloads may change the verbosity).
"""

from __future__ import annotations

import logging
import sys

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
