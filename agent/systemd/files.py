"""The units directory: where the agent writes the unit files it links into systemd.

Shared by the D-Bus adapter and the fake, so both handle files the same way.

Invariants:
* Every path comes from `path_for`, which refuses (`UnsafeUnitName`) any name that is not a plain
  unit file name before anything touches the disk: no `/`, no `..`, a valid unit name.
* Writes are atomic (a temporary file in the same directory, then `os.replace`), mode 0644, so
  systemd never reads half a file and a crash leaves the old file or the new one.
* `list` returns only regular files whose names are valid unit names, each with the SHA-1 of its
  bytes; temporary files and the agent's own records (names starting with `.`) are not units.
  A file is read again only when its inode, size, mtime or ctime changed since it was hashed,
  or when it had changed less than `RACY_NS` before it was hashed (a change within the same
  clock tick could leave all four as they were): listing a thousand settled units costs a
  thousand `stat`s, not a thousand reads. `list(names)` looks at those names only (the state
  publisher's pass after a few units changed), not at the whole directory.
* A unit with an `[X-Container]` section (`fleetd.core.container`) also gets a drop-in,
  `<dropins>/<name>.d/50-fleet-container.conf`, whose `ExecStart=` runs `fleet-pod run ...`:
  the unit file stays byte for byte what was submitted, so its hash does too. Writing a unit
  without the section, or removing the unit, removes the drop-in. Without a `dropins` directory
  (or when the section cannot be read; submission refuses such units) no drop-in is written.
* fleet-pod sets a container's limits with `systemctl set-property --runtime`, which leaves
  drop-ins in `system.control/<name>.d/` that outrank every other; writing or removing the unit
  removes those (`LIMIT_DROPINS`), so a unit resubmitted without `Memory=` has no limit left.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import sys
import time
from collections.abc import Callable, Collection
from pathlib import Path

from agent.systemd.port import UnsafeUnitName
from fleetd.core.container import ContainerError, container_dropin, parse_container
from fleetd.core.names import unit_file_name_problem
from fleetd.core.unitfile import UnitFileError, parse_unit
from fleetd.runtime.files import write_atomically

FILE_MODE = 0o644
CONTAINER_DROPIN = "50-fleet-container.conf"
SYSTEM_DROPINS = Path("/run/systemd/system")
"""Where systemd looks for runtime drop-ins (`<name>.d/*.conf`) of every unit."""
LIMIT_DROPINS = ("50-MemoryMax.conf", "50-CPUQuota.conf", "50-TasksMax.conf")
"""What `systemctl set-property --runtime` writes for fleet-pod's limits, beside `dropins` in
`system.control/<name>.d/`."""
RACY_NS = 100_000_000
"""A file that changed less than this (0.1 s) before it was hashed is hashed again next time."""

Signature = tuple[int, int, int, int]
"""What `stat` says of a file's content: inode, size, mtime and ctime (ns)."""


def file_digest(path: Path) -> str:
    """SHA-1 hex of the file's bytes."""
    return hashlib.sha1(path.read_bytes()).hexdigest()


def default_container_program() -> str:
    """The `fleet-pod` installed beside the running Python (fleetd's virtual environment), else
    the one on PATH, else the bare name (systemd searches its own PATH)."""
    beside = Path(sys.executable).parent / "fleet-pod"
    if beside.is_file():
        return str(beside)
    return shutil.which("fleet-pod") or "fleet-pod"


def _container_dropin(text: str, program: str) -> str | None:
    try:
        spec = parse_container(parse_unit(text))
    except (UnitFileError, ContainerError):
        return None
    return container_dropin(spec, program) if spec is not None else None


class UnitFileStore:
    """Unit files in one directory, by unit name, and the drop-ins of container units."""

    def __init__(
        self,
        directory: Path,
        *,
        dropins: Path | None = None,
        container_program: str = "fleet-pod",
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.directory = Path(directory)
        self._clock_ns = clock_ns
        self.dropins = dropins
        self.container_program = container_program
        self._digests: dict[str, tuple[Signature, str, bool]] = {}  # name -> (stat, SHA-1, settled)

    def path_for(self, name: str) -> Path:
        """The file of unit `name`; raises `UnsafeUnitName` for a name that could escape."""
        problem = unit_file_name_problem(name)
        if problem is not None:
            raise UnsafeUnitName(problem)
        return self.directory / name

    def dropin_path(self, name: str) -> Path | None:
        """Where the container drop-in of unit `name` goes (None: no drop-ins here)."""
        self.path_for(name)
        return None if self.dropins is None else self.dropins / f"{name}.d" / CONTAINER_DROPIN

    def write(self, name: str, text: str) -> Path:
        path = self.path_for(name)
        dropin = self.dropin_path(name)
        self._remove_limits(name)
        if dropin is not None:
            expanded = _container_dropin(text, self.container_program)
            if expanded is None:
                self._remove_dropin(dropin)
            else:
                write_atomically(dropin, expanded.encode("utf-8"), mode=FILE_MODE)
        return write_atomically(path, text.encode("utf-8"), mode=FILE_MODE)

    def remove(self, name: str) -> None:
        self.path_for(name).unlink(missing_ok=True)
        dropin = self.dropin_path(name)
        if dropin is not None:
            self._remove_dropin(dropin)
        self._remove_limits(name)

    def _remove_limits(self, name: str) -> None:
        if self.dropins is None:
            return
        control = self.dropins.parent / "system.control" / f"{name}.d"
        for limit in LIMIT_DROPINS:
            self._remove_dropin(control / limit)

    @staticmethod
    def _remove_dropin(dropin: Path) -> None:
        dropin.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # absent, or holds drop-ins that are not ours
            dropin.parent.rmdir()

    def list(self, names: Collection[str] | None = None) -> dict[str, str]:
        """Unit name -> SHA-1 hex of the file's bytes, for every unit file in the directory; or,
        given `names`, for those of them that are unit files there (a `stat` each, not a listing
        of the directory)."""
        if names is None:
            try:
                paths = {entry.name: entry.path for entry in os.scandir(self.directory)}
            except FileNotFoundError:
                paths = {}
            for gone in self._digests.keys() - paths.keys():
                del self._digests[gone]
        else:
            paths = {name: os.path.join(self.directory, name) for name in names}
        found: dict[str, str] = {}
        for name, path in paths.items():
            digest = self._digest_of(name, path)
            if digest is None:
                self._digests.pop(name, None)
            else:
                found[name] = digest
        return found

    def _digest_of(self, name: str, path: str) -> str | None:
        """The SHA-1 of the unit file `name` at `path` (from the cache while its signature
        holds), None when it is not a unit file (or no longer there)."""
        known = self._digests.get(name)
        if known is None and unit_file_name_problem(name) is not None:
            return None
        try:
            info = os.stat(path, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):  # removed while we looked
            return None
        if not stat.S_ISREG(info.st_mode):
            return None
        signature = (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
        if known is not None and known[0] == signature and known[2]:
            return known[1]
        hashed_at = self._clock_ns()
        try:
            digest = file_digest(Path(path))
        except FileNotFoundError:
            return None
        settled = max(info.st_mtime_ns, info.st_ctime_ns) < hashed_at - RACY_NS
        self._digests[name] = (signature, digest, settled)
        return digest
