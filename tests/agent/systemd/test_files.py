"""The units directory: atomic writes, what counts as a unit file, and names that could escape."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from agent.systemd.files import UnitFileStore
from agent.systemd.port import UnsafeUnitName

TEXT = "[Service]\nExecStart=/bin/sleep infinity\n"


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_write_list_remove(tmp_path: Path) -> None:
    store = UnitFileStore(tmp_path / "run" / "units")
    assert store.list() == {}  # no directory yet
    path = store.write("web@1.service", TEXT)
    assert path == tmp_path / "run" / "units" / "web@1.service"
    assert path.read_text() == TEXT
    assert path.stat().st_mode & 0o777 == 0o644
    assert store.list() == {"web@1.service": hashlib.sha1(TEXT.encode()).hexdigest()}
    store.write("web@1.service", TEXT + "# changed\n")
    assert tree(tmp_path / "run" / "units") == {"web@1.service"}  # no temporary left behind
    store.remove("web@1.service")
    store.remove("web@1.service")  # already gone: fine
    assert store.list() == {}


def test_only_unit_files_are_listed(tmp_path: Path) -> None:
    store = UnitFileStore(tmp_path)
    store.write("a.service", TEXT)
    (tmp_path / ".launched.json").write_text("{}")
    (tmp_path / ".a.service.x1.tmp").write_text("partial")
    (tmp_path / "notes.txt").write_text("not a unit")
    (tmp_path / "dir.service").mkdir()
    os.symlink(tmp_path / "a.service", tmp_path / "link.service")
    assert set(store.list()) == {"a.service"}


@pytest.mark.parametrize(
    "name", ["../escape.service", "a/b.service", "/etc/passwd", "..", ".", ".hidden.service", ""]
)
def test_names_that_could_escape_are_refused_before_anything_is_written(
    tmp_path: Path, name: str
) -> None:
    store = UnitFileStore(tmp_path / "units")
    with pytest.raises(UnsafeUnitName):
        store.write(name, TEXT)
    with pytest.raises(UnsafeUnitName):
        store.remove(name)
    assert tree(tmp_path) == set()
