"""A unit's journal on this machine, read with `journalctl -o json`, bounded in lines and time.

`read_journal` runs `journalctl --unit=UNIT --lines=N --output=json` (plus `--follow` when asked)
and yields its entries one JSON line at a time, as journalctl prints them: one object per
entry, with `__CURSOR`, `__REALTIME_TIMESTAMP` and the fields `ENTRY_FIELDS` names. There is no
journal parser here; journalctl is systemd's own reader of its own files.

Bounds:
* lines: at most `MAX_LINES` entries are asked for (`--lines`), whatever the caller wants;
* size: journalctl prints a field over 4096 bytes as `null` (no `--all`), and a line longer
  than `MAX_LINE_BYTES` ends the read with `JournalError`;
* time: a read without `follow` ends within `within` seconds (journalctl is killed, and what
  it printed so far has been yielded); a followed read lasts until the caller stops iterating
  (the HTTP client hangs up, the unit moves), and journalctl is killed then, never left behind.

Invariants: the unit name is passed as one argument after `--unit=`, never through a shell;
journalctl is killed and reaped whenever the iteration ends, however it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Final

JOURNALCTL: Final = "journalctl"
MAX_LINES: Final = 10_000
DEFAULT_LINES: Final = 10
MAX_LINE_BYTES: Final = 1 << 20
READ_WITHIN: Final = 10.0
ENTRY_FIELDS: Final = (
    "MESSAGE",
    "PRIORITY",
    "SYSLOG_IDENTIFIER",
    "_PID",
    "_COMM",
    "_HOSTNAME",
    "_SYSTEMD_UNIT",
    "UNIT",
)
"""The fields asked for besides those journalctl always prints in JSON (cursor, timestamps,
boot id): what fleetctl's short output needs, and the unit fields that say whose entry it is."""


class JournalError(Exception):
    """journalctl is missing, failed to start, or printed what is not an entry."""


@dataclass(frozen=True, slots=True)
class JournalQuery:
    """Which entries: the last `lines` of `unit`, and with `follow`, every new one after them."""

    unit: str
    lines: int = DEFAULT_LINES
    follow: bool = False

    def __post_init__(self) -> None:
        if not self.unit:
            raise ValueError("a journal query needs a unit")
        if not 0 <= self.lines <= MAX_LINES:
            raise ValueError(f"lines must be between 0 and {MAX_LINES}, got {self.lines}")


def journalctl_argv(program: str, query: JournalQuery) -> list[str]:
    """The journalctl command line for `query` (no shell: the unit is one argument)."""
    argv = [
        program,
        f"--unit={query.unit}",
        f"--lines={query.lines}",
        "--output=json",
        f"--output-fields={','.join(ENTRY_FIELDS)}",
        "--no-pager",
        "--quiet",
    ]
    if query.follow:
        argv.append("--follow")
    return argv


async def read_journal(
    query: JournalQuery, *, program: str | None = None, within: float = READ_WITHIN
) -> AsyncGenerator[bytes, None]:
    """Yield the entries of `query`, one JSON line each (without the newline)."""
    found = program or shutil.which(JOURNALCTL)
    if found is None:
        raise JournalError("journalctl is not installed on this machine")
    try:
        process = await asyncio.create_subprocess_exec(
            *journalctl_argv(found, query),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=MAX_LINE_BYTES,
        )
    except OSError as exc:
        raise JournalError(f"cannot run journalctl: {exc.strerror}") from None
    assert process.stdout is not None
    loop = asyncio.get_running_loop()
    deadline = None if query.follow else loop.time() + within
    try:
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    line = await process.stdout.readline()
            except TimeoutError:
                return  # a one-shot read that ran out of time: what came is what there is
            except ValueError:  # asyncio's "separator is not found, and chunk exceed the limit"
                raise JournalError(f"a journal entry is over {MAX_LINE_BYTES} bytes") from None
            if not line:
                break
            line = line.rstrip(b"\n")
            if line:
                yield line
        code = await process.wait()
        if code != 0:
            assert process.stderr is not None
            error = (await process.stderr.read(4096)).decode("utf-8", "replace").strip()
            raise JournalError(f"journalctl exited with status {code}: {error}")
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await asyncio.shield(process.wait())
