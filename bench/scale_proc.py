"""The scale benchmark's processes: how the driver starts, asks and stops its children.

Each child (`bench.scale_fleetd`, `bench.scale_agents`, `bench.scale_probe`) is `python -m` of its
module. It speaks JSON lines: on stdout, first one `{"ready": ...}` line once it is up, then one
reply line per command; on stdin it reads commands, one per line: `stats` (reply with what it
counted so far) and `stop` (reply with its final figures, then exit). End of input is `stop`.
Its logs (warnings and errors) go to stderr, which the driver sends to a file per child.

`Child` is the driver's side, every wait bounded; `serve_commands` is the child's side.
`rss_kib(pid)` and `cpu_seconds(pid)` read a process's resident set (and its peak) and the CPU
time it has used from /proc.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

Reply = dict[str, Any]


class ChildFailed(RuntimeError):
    """A child exited, or did not answer within its deadline."""


class Child:
    """One child process of the benchmark, started with `start` and spoken to in JSON lines."""

    def __init__(self, name: str, module: str, args: list[str], log: Path) -> None:
        self.name = name
        self.module = module
        self.args = args
        self.log = log
        self.process: asyncio.subprocess.Process | None = None
        self._log_file: TextIO | None = None
        self._cpu = 0.0

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def cpu(self) -> float:
        """CPU seconds the child has used (its last known figure once it is gone)."""
        if self.process is not None:
            self._cpu = max(self._cpu, cpu_seconds(self.process.pid))
        return self._cpu

    async def start(self) -> None:
        self._log_file = self.log.open("w", encoding="utf-8")
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            self.module,
            *self.args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=self._log_file,
            limit=64 * 1024 * 1024,  # a final reply may carry many samples
        )

    async def read(self, within: float) -> Reply:
        """The child's next line; ChildFailed if it exits or says nothing within `within`."""
        assert self.process is not None
        assert self.process.stdout is not None
        try:
            line = await asyncio.wait_for(self.process.stdout.readline(), within)
        except TimeoutError:
            raise ChildFailed(
                f"{self.name}: no answer within {within:.0f}s (log: {self.log})"
            ) from None
        if not line:
            code = await self.process.wait()
            raise ChildFailed(f"{self.name} exited with {code} (log: {self.log})")
        reply: Reply = json.loads(line)
        return reply

    async def ask(self, command: str, within: float) -> Reply:
        assert self.process is not None
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(f"{command}\n".encode())
            await self.process.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            raise ChildFailed(f"{self.name} is gone (log: {self.log})") from None
        return await self.read(within)

    async def stop(self, within: float) -> Reply | None:
        """Ask for the final figures and wait for the exit; kill it if that takes too long."""
        if self.process is None or self.process.returncode is not None:
            return None
        reply: Reply | None = None
        try:
            reply = await self.ask("stop", within)
            await asyncio.wait_for(self.process.wait(), within)
        except (ChildFailed, TimeoutError):
            pass
        finally:
            self.kill()
        return reply

    def kill(self) -> None:
        """SIGKILL, at once (no-op when it has exited)."""
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGKILL)

    async def reap(self) -> None:
        if self.process is not None:
            await self.process.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of `pid` in KiB: its resident set now and at its peak; (0, 0) if gone."""
    found = {"VmRSS": 0, "VmHWM": 0}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                name, _, value = line.partition(":")
                if name in found:
                    found[name] = int(value.split()[0])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return found["VmRSS"], found["VmHWM"]


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time `pid` has used so far, in seconds (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def say(reply: Reply) -> None:
    """Write one reply line on stdout (the child's side)."""
    sys.stdout.write(json.dumps(reply, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def serve_commands(stats: Callable[[], Reply], final: Callable[[], Reply]) -> None:
    """Answer `stats` and `stop` from stdin until `stop` or end of input (the child's side)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).decode().strip()
        if line == "stats":
            say(stats())
        elif line in ("stop", ""):
            say(final())
            return
        else:
            say({"error": f"unknown command {line!r}"})


def percentiles(values: list[float], digits: int = 1) -> dict[str, float] | None:
    """p50, p99 and max of `values` (None when there are none)."""
    if not values:
        return None
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], digits)

    return {"n": len(ordered), "p50": at(0.5), "p99": at(0.99), "max": round(ordered[-1], digits)}
