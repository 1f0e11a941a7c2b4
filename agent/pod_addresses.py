"""The addresses of this machine's pods, as fleet-pod hands them over (`fleetd.core.pod_address`).

fleet-pod writes `<directory>/<unit>` for a unit whose pod joined the cluster network, and
removes it when the pod stops. `PodAddresses` keeps unit -> address in memory, so the state
publisher's cost for a unit is one dict lookup, pod or not:

* `run(on_change)` makes the directory if it is missing, watches it (watchfiles: inotify on
  Linux, one watch for the directory, no polling), reads every file once, then reads only the
  files a burst of changes names and calls `on_change(units)` with the units whose address
  appeared, changed or went. The directory removed: it is made, read and watched again.
* A file that cannot be read or is not a pod-address record counts as no address (logged once
  per change); temporary files (names starting with `.`) are not units.
* When the directory cannot be made, it logs why and holds no addresses: units are published
  without one, nothing else changes.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import structlog
import watchfiles

from fleetd.core.names import unit_file_name_problem
from fleetd.core.pod_address import PodAddressError, decode_pod_address, pod_address_file

log = structlog.get_logger(__name__)

WATCH_STEP_MS = 20
"""How long a burst of changes may pause before it is reported (watchfiles' `step`)."""
WATCH_DEBOUNCE_MS = 200
"""The longest a burst is gathered before it is reported anyway (watchfiles' `debounce`)."""


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

    def _make(self) -> bool:
        try:
            self.directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        except OSError as exc:
            log.warning("pod addresses not watched", directory=str(self.directory), error=str(exc))
            return False
        return True

    async def run(self, on_change: Callable[[set[str]], None]) -> None:
        """Watch the directory and report changed units until cancelled (see the docstring)."""
        while True:
            if not self._make():
                gone = set(self._addresses)
                self._addresses.clear()
                if gone:
                    on_change(gone)
                await asyncio.Event().wait()  # nothing to watch; the publisher carries on
                return
            changed = self.scan()
            if changed:
                on_change(changed)
            await self._follow(on_change)

    async def _follow(self, on_change: Callable[[set[str]], None]) -> None:
        """Report the units the directory's changes name; return once the directory is gone."""
        watching = watchfiles.awatch(
            self.directory,
            watch_filter=None,
            recursive=False,
            step=WATCH_STEP_MS,
            debounce=WATCH_DEBOUNCE_MS,
        )
        try:
            async for batch in watching:
                if not await asyncio.to_thread(self.directory.is_dir):  # removed or replaced
                    changed = self.scan()
                    if changed:
                        on_change(changed)
                    return
                names = {Path(path).name for _, path in batch if Path(path) != self.directory}
                units = {name for name in names if unit_file_name_problem(name) is None}
                changed = {unit for unit in units if self._reread(unit)}
                if changed:
                    on_change(changed)
        except FileNotFoundError:  # gone before the watch began: made and watched again
            return
        finally:
            await watching.aclose()
