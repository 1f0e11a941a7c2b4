"""`fleetd.runtime.journal`: journalctl's command line, and reading its output bounded in lines,
size and time. journalctl is replaced by a small script (the real one reads the rig's journal in
`tests/rig/test_journal.py`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetd.runtime.journal import (
    MAX_LINES,
    JournalError,
    JournalQuery,
    journalctl_argv,
    read_journal,
)


def fake_journalctl(tmp_path: Path, body: str) -> str:
    path = tmp_path / "journalctl"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


async def collect(query: JournalQuery, program: str, within: float = 10.0) -> list[bytes]:
    return [line async for line in read_journal(query, program=program, within=within)]


def test_the_command_line() -> None:
    argv = journalctl_argv("/bin/journalctl", JournalQuery("a b;$(x).service", 25))
    assert argv[:4] == ["/bin/journalctl", "--unit=a b;$(x).service", "--lines=25", "--output=json"]
    assert "--follow" not in argv
    assert "--no-pager" in argv
    assert argv[-1] != "--all"  # fields over 4 KiB stay null: entries are bounded
    assert journalctl_argv("j", JournalQuery("x.service", 0, follow=True))[-1] == "--follow"


@pytest.mark.parametrize("lines", [-1, MAX_LINES + 1])
def test_lines_are_bounded(lines: int) -> None:
    with pytest.raises(ValueError, match="lines must be between"):
        JournalQuery("x.service", lines)


async def test_entries_come_one_line_each(tmp_path: Path) -> None:
    program = fake_journalctl(
        tmp_path, 'printf \'{"MESSAGE":"a"}\\n\\n{"MESSAGE":"b"}\\n\'\necho "$@" > "$0.args"\n'
    )
    got = await collect(JournalQuery("x.service", 2), program)
    assert got == [b'{"MESSAGE":"a"}', b'{"MESSAGE":"b"}']
    assert text_of(program + ".args").split()[:2] == ["--unit=x.service", "--lines=2"]


async def test_a_failing_journalctl_is_an_error(tmp_path: Path) -> None:
    program = fake_journalctl(tmp_path, "echo 'Failed to open journal' >&2\nexit 1\n")
    with pytest.raises(JournalError, match="status 1: Failed to open journal"):
        await collect(JournalQuery("x.service"), program)


async def test_a_missing_journalctl_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="cannot run journalctl"):
        await collect(JournalQuery("x.service"), str(tmp_path / "absent"))


async def test_a_one_shot_read_ends_in_time_and_kills_journalctl(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    program = fake_journalctl(
        tmp_path, f'echo $$ > {pid_file}\necho \'{{"MESSAGE":"first"}}\'\nexec sleep 600\n'
    )
    got = await collect(JournalQuery("x.service"), program, within=0.5)
    assert got == [b'{"MESSAGE":"first"}']
    assert not process_alive(int(pid_file.read_text()))


async def test_a_followed_read_stops_when_the_reader_does(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    program = fake_journalctl(
        tmp_path,
        f'echo $$ > {pid_file}\nwhile :; do echo \'{{"MESSAGE":"tick"}}\'; sleep 0.05; done\n',
    )
    entries = read_journal(JournalQuery("x.service", follow=True), program=program, within=0.01)
    got = [await anext(entries) for _ in range(3)]  # more than `within` would allow
    assert got == [b'{"MESSAGE":"tick"}'] * 3
    await entries.aclose()
    assert not process_alive(int(pid_file.read_text()))


async def test_an_entry_over_the_limit_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("fleetd.runtime.journal.MAX_LINE_BYTES", 1024)
    program = fake_journalctl(tmp_path, "head -c 5000 /dev/zero | tr '\\\\0' x\necho\n")
    with pytest.raises(JournalError, match="over 1024 bytes"):
        await collect(JournalQuery("x.service"), program)


def text_of(path: str) -> str:
    return Path(path).read_text()


def process_alive(pid: int) -> bool:
    """Whether `pid` still runs (a zombie counts as gone: it was killed, not yet reaped)."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return status.rsplit(")", 1)[1].split()[0] != "Z"
