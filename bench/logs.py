"""Benchmarks log only warnings and errors, to stderr: their stdout is the JSON result, and
formatting a line for every placement and every agent task would be measured as well."""

from __future__ import annotations

import logging
import sys

import structlog


def warnings_only() -> None:
    """Configure structlog for a benchmark process: warnings and errors, one line each, stderr."""
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.dev.ConsoleRenderer(
                colors=False, exception_formatter=structlog.dev.plain_traceback
            ),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
