"""The units directory: where the agent writes the unit files it links into systemd.

Shared by the D-Bus adapter and the fake, so both handle files the same way.

Invariants:
* Every path comes from `path_for`, which refuses (`UnsafeUnitName`) any name that is not a plain
  unit file name before anything touches the disk: no `/`, no `..`, a valid unit name.
* Writes are atomic (a temporary file in the same directory, then `os.replace`), mode 0644, so
  systemd never reads half a file and a crash leaves the old file or the new one.
* `list` returns only regular files whose names are valid unit names, each with the SHA-1 of its
  bytes; temporary files and the agent's own records (names starting with `.`) are not units.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from agent.systemd.port import UnsafeUnitName
from fleetd.core.agent_plan import unit_file_name_problem

FILE_MODE = 0o644


class UnitFileStore:
    """Unit files in one directory, by unit name."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def path_for(self, name: str) -> Path:
        """The file of unit `name`; raises `UnsafeUnitName` for a name that could escape."""
        problem = unit_file_name_problem(name)
        if problem is not None:
            raise UnsafeUnitName(problem)
        return self.directory / name

    def write(self, name: str, text: str) -> Path:
        path = self.path_for(name)
        self.directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(text.encode("utf-8"))
            os.chmod(temporary, FILE_MODE)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return path

    def remove(self, name: str) -> None:
        self.path_for(name).unlink(missing_ok=True)

    def list(self) -> dict[str, str]:
        """Unit name -> SHA-1 hex of the file's bytes, for every unit file in the directory."""
        found: dict[str, str] = {}
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return found
        for entry in entries:
            if unit_file_name_problem(entry.name) is not None:
                continue
            if not entry.is_file(follow_symlinks=False):
                continue
            try:
                data = Path(entry.path).read_bytes()
            except FileNotFoundError:  # removed while we looked
                continue
            found[entry.name] = hashlib.sha1(data).hexdigest()
        return found
