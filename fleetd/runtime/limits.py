"""The process's open-files limit: raised once at start, then shared out among the listeners.

systemd starts services with a soft `RLIMIT_NOFILE` of 1,024 (kept low for programs that still
use `select()`) and a much higher hard limit; a daemon that needs more raises its own soft limit
to the hard one, as `raise_open_files_limit` does when fleetd starts. fleetd uses epoll, never
`select()`, so descriptors above 1,024 are safe for it.

`connections_per_listener` turns the limit into a number of client connections each listener may
hold: a reserve is kept for everything else fleetd opens (etcd's channels, D-Bus, unit files,
fleet-pod's pipes), and the rest is split evenly, so no listener can starve another or the rest
of the process of descriptors.

Invariants: nothing here lowers a limit; `connections_per_listener` is pure and always at least 1.
"""

from __future__ import annotations

import resource
from typing import Final

import structlog

log = structlog.get_logger(__name__)

MAX_CONNECTIONS_PER_LISTENER: Final = 1024
"""What a listener holds at most however high the limit: beyond it a listener is a flood."""
RESERVED_FILES: Final = 256
"""Descriptors kept for the rest of fleetd (at most half the limit when the limit is small)."""


def open_files_limit() -> int:
    """The soft RLIMIT_NOFILE now in force (a very large number when unlimited)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 2**31 - 1


def raise_open_files_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # the kernel refuses "unlimited" for this limit: its ceiling is fs.nr_open
    wanted = _kernel_open_files_maximum() if hard == resource.RLIM_INFINITY else hard
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return open_files_limit()
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (OSError, ValueError) as exc:
        log.warning("cannot raise the open-files limit", soft=soft, hard=hard, error=str(exc))
    else:
        log.debug("open-files limit raised", previous=soft, limit=wanted)
    return open_files_limit()


def _kernel_open_files_maximum() -> int:
    try:
        with open("/proc/sys/fs/nr_open", encoding="ascii") as file:
            return int(file.read())
    except (OSError, ValueError):
        return 1024 * 1024  # Linux's default nr_open


def connections_per_listener(open_files: int, listeners: int) -> int:
    """How many connections each of `listeners` may hold within `open_files` descriptors."""
    if listeners < 1:
        raise ValueError(f"need at least one listener, got {listeners}")
    reserved = min(RESERVED_FILES, open_files // 2)
    return max(1, min(MAX_CONNECTIONS_PER_LISTENER, (open_files - reserved) // listeners))
