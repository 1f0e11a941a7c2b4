"""`write_atomically`: the old bytes or the new, the mode asked for, no temporary file left."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fleetd.runtime.files import write_atomically


def test_replaces_the_file_with_its_mode_and_leaves_nothing_else(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "state.json"  # the directory is made
    assert write_atomically(path, b"old") == path
    write_atomically(path, b"new", mode=0o600)
    assert path.read_bytes() == b"new"
    assert path.stat().st_mode & 0o777 == 0o600
    assert sorted(os.listdir(path.parent)) == ["state.json"]


def test_a_failed_write_keeps_the_old_bytes_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_atomically(tmp_path / "state.json", b"old")

    def refuse(source: str, destination: str) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="disk gone"):
        write_atomically(path, b"new")
    assert path.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["state.json"]
