"""systemd's own words about a unit it refused, from the journal.

Over D-Bus, systemd's `LoadError` of a refused unit is generic ("Unit x.service has a bad unit
file setting."); the line that says what is wrong ("...: Neither a valid executable name nor an
absolute path: relative/path") goes to the journal. `last_error` reads that line for the agent,
which asks only for units systemd refused, so this is never a per-unit poll.

Invariants: it never raises and never takes longer than `within`; no journal, no `journalctl`,
or no such line gives "".
"""

from __future__ import annotations

import asyncio
import shutil

JOURNALCTL = "journalctl"
MAX_LINE = 512


async def last_error(unit: str, *, within: float = 2.0) -> str:
    """The newest error-priority journal line about `unit`, or ""."""
    program = shutil.which(JOURNALCTL)
    if program is None:
        return ""
    argv = [program, f"--unit={unit}", "--priority=err", "--lines=1", "--output=cat"]
    try:
        process = await asyncio.create_subprocess_exec(
            *argv, "--no-pager", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
        )
    except OSError:
        return ""
    try:
        async with asyncio.timeout(within):
            out, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        return ""
    lines = out.decode("utf-8", "replace").strip().splitlines()
    return lines[-1][:MAX_LINE] if lines and process.returncode == 0 else ""
