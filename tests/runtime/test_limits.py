"""The open-files limit: raised to the hard limit at start, then shared out among listeners."""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest

from fleetd.runtime.limits import (
    MAX_CONNECTIONS_PER_LISTENER,
    connections_per_listener,
    open_files_limit,
)


@pytest.mark.parametrize(
    ("open_files", "listeners", "each"),
    [
        (65536, 2, MAX_CONNECTIONS_PER_LISTENER),  # the rig's fleet.service: the cap, not the limit
        (1024, 1, 768),  # systemd's default soft limit: 256 kept for the rest of fleetd
        (1024, 2, 384),
        (96, 2, 24),  # a small limit keeps half for the rest
        (3, 4, 1),  # never zero: a listener that can take nothing would be useless
    ],
)
def test_connections_per_listener(open_files: int, listeners: int, each: int) -> None:
    assert connections_per_listener(open_files, listeners) == each


def test_connections_need_a_listener() -> None:
    with pytest.raises(ValueError, match="at least one listener"):
        connections_per_listener(1024, 0)


def _limits_after_raising(soft: int, hard: int) -> str:
    """Run raise_open_files_limit in a child whose limit starts at (soft, hard)."""
    script = (
        "import resource\n"
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard}))\n"
        "from fleetd.runtime.limits import raise_open_files_limit\n"
        "now = raise_open_files_limit()\n"
        "print(now, *resource.getrlimit(resource.RLIMIT_NOFILE))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True
    )
    return done.stdout.splitlines()[-1]  # after structlog's line about it


def test_the_soft_limit_is_raised_to_the_hard_one() -> None:
    assert _limits_after_raising(64, 512) == "512 512 512"
    assert _limits_after_raising(512, 512) == "512 512 512"  # already there: untouched


def test_the_limit_in_force_is_read() -> None:
    assert open_files_limit() == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
