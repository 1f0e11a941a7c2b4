"""`last_error`: the journal's newest error line about a unit, through a stand-in journalctl."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.systemd.journal import last_error


def journalctl(directory: Path, script: str) -> None:
    program = directory / "journalctl"
    program.write_text("#!/bin/sh\n" + script)
    program.chmod(0o755)


@pytest.fixture
def bin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PATH", str(tmp_path))
    return tmp_path


async def test_the_newest_error_line_of_the_unit(bin_dir: Path) -> None:
    journalctl(bin_dir, 'echo "asked: $*" >&2; echo "first"; echo "$1 $2 $3 $4 $5"\n')
    assert await last_error("x.service") == (
        "--unit=x.service --priority=err --lines=1 --output=cat --no-pager"
    )


@pytest.mark.parametrize(
    "script",
    [
        "echo partial; exit 1\n",  # journalctl failed (no journal)
        "exit 0\n",  # nothing about the unit
        "exec sleep 30\n",  # hangs: cut off at the deadline
    ],
)
async def test_nothing_to_say_gives_empty(bin_dir: Path, script: str) -> None:
    journalctl(bin_dir, script)
    assert await last_error("x.service", within=0.5) == ""


async def test_no_journalctl_gives_empty(bin_dir: Path) -> None:
    assert await last_error("x.service") == ""
