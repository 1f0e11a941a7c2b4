"""The addresses of this machine's pods, as fleet-pod hands them over (`fleetd.core.pod_address`).

fleet-pod writes `<directory>/<unit>` for a unit whose pod joined the cluster network, and
removes it when the pod stops. `PodAddresses` keeps unit -> address in memory, so the state
publisher's cost for a unit is one dict lookup, pod or not:

* `run(on_change)` makes the directory if it is missing, watches it with inotify (one watch for
  the whole directory; no polling), reads every file once, then reads only the file an event
  names and calls `on_change(units)` with the units whose address appeared, changed or went.
  A queue overflow, or the directory removed, reads everything again.
* A file that cannot be read or is not a pod-address record counts as no address (logged once
  per change); temporary files (names starting with `.`) are not units.
* Without inotify, or when the directory cannot be made or watched, it logs why and holds no
  addresses: units are published without one, nothing else changes.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import structlog

from fleetd.core.names import unit_file_name_problem
from fleetd.core.pod_address import PodAddressError, decode_pod_address, pod_address_file

log = structlog.get_logger(__name__)

IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
WATCH_MASK = (
    IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF
) | IN_ONLYDIR
RESCAN = IN_Q_OVERFLOW | IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF
_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (then the name)


def parse_events(data: bytes) -> Iterator[tuple[int, str]]:
    """(mask, name) of each `struct inotify_event` in `data`; name "" for the directory."""
    offset = 0
    while offset + _EVENT.size <= len(data):
        _, mask, _, length = _EVENT.unpack_from(data, offset)
        offset += _EVENT.size
        name = data[offset : offset + length].split(b"\0", 1)[0]
        offset += length
        yield mask, os.fsdecode(name)


class _Inotify:
    """One inotify instance watching one directory."""

    def __init__(self, directory: Path) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._fd: int = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self._fd < 0:
            error = ctypes.get_errno()
            raise OSError(error, f"inotify_init1: {os.strerror(error)}")
        if libc.inotify_add_watch(self._fd, os.fsencode(directory), WATCH_MASK) < 0:
            error = ctypes.get_errno()
            os.close(self._fd)
            raise OSError(error, f"inotify_add_watch({directory}): {os.strerror(error)}")

    def fileno(self) -> int:
        return self._fd

    def read(self) -> bytes:
        try:
            return os.read(self._fd, 64 * 1024)
        except BlockingIOError:
            return b""

    def close(self) -> None:
        os.close(self._fd)


class PodAddresses:
    """unit -> pod address on this machine; see the module docstring."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._addresses: dict[str, str] = {}

    def get(self, unit: str) -> str:
        """The address of `unit`'s pod, or "" when it has none."""
        return self._addresses.get(unit, "")

    def read(self, unit: str) -> str:
        """Read `unit`'s file again; its address, or ""."""
        try:
            raw = pod_address_file(self.directory, unit).read_bytes()
            address = decode_pod_address(raw).address
        except FileNotFoundError:
            address = ""
        except (OSError, PodAddressError) as exc:
            log.warning("pod address file not used", unit=unit, error=str(exc))
            address = ""
        if address:
            self._addresses[unit] = address
        else:
            self._addresses.pop(unit, None)
        return address

    def _reread(self, unit: str) -> bool:
        """Read `unit`'s file again; whether its address changed."""
        before = self.get(unit)
        return self.read(unit) != before

    def scan(self) -> set[str]:
        """Read every file again; the units whose address changed."""
        before = dict(self._addresses)
        self._addresses.clear()
        try:
            names = [n for n in os.listdir(self.directory) if unit_file_name_problem(n) is None]
        except OSError:
            names = []
        for name in names:
            self.read(name)
        return {n for n in before.keys() | self._addresses.keys() if before.get(n) != self.get(n)}

    def _handle(self, data: bytes) -> tuple[set[str], bool]:
        """The units an event batch names, and whether everything must be read again."""
        names: set[str] = set()
        for mask, name in parse_events(data):
            if mask & RESCAN:
                return names, True
            if name and unit_file_name_problem(name) is None:
                names.add(name)
        return names, False

    def _watch(self) -> _Inotify | None:
        try:
            self.directory.mkdir(mode=0o755, parents=True, exist_ok=True)
            return _Inotify(self.directory)
        except (OSError, AttributeError) as exc:  # AttributeError: a libc without inotify
            log.warning("pod addresses not watched", directory=str(self.directory), error=str(exc))
            return None

    async def run(self, on_change: Callable[[set[str]], None]) -> None:
        """Watch the directory and report changed units until cancelled (see the docstring)."""
        loop = asyncio.get_running_loop()
        while True:
            watch = self._watch()
            if watch is None:
                gone = set(self._addresses)
                self._addresses.clear()
                if gone:
                    on_change(gone)
                await asyncio.Event().wait()  # nothing to watch; the publisher carries on
                return
            ready = asyncio.Event()
            loop.add_reader(watch.fileno(), ready.set)
            try:
                changed = self.scan()
                if changed:
                    on_change(changed)
                rescan = False
                while not rescan:
                    await ready.wait()
                    ready.clear()
                    names, rescan = self._handle(watch.read())
                    changed = self.scan() if rescan else {n for n in names if self._reread(n)}
                    if changed:
                        on_change(changed)
            finally:
                loop.remove_reader(watch.fileno())
                watch.close()
