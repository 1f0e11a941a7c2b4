"""The units directory: atomic writes, what counts as a unit file, and names that could escape."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from agent.systemd import files
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


CONTAINER = "[Unit]\nDescription=c\n\n[X-Container]\nImage=example.com/hello\nMemory=64M\n"


def test_a_container_unit_gets_a_dropin_and_keeps_its_hash(tmp_path: Path) -> None:
    dropins = tmp_path / "system"
    store = UnitFileStore(tmp_path / "units", dropins=dropins, container_program="/bin/fleet-pod")
    store.write("c.service", CONTAINER)
    assert store.list() == {"c.service": hashlib.sha1(CONTAINER.encode()).hexdigest()}
    dropin = dropins / "c.service.d" / "50-fleet-container.conf"
    text = dropin.read_text()
    assert 'ExecStart="/bin/fleet-pod" "run" "--memory" "64M" "example.com/hello"' in text
    assert "MemoryMax=64000000" in text
    store.write("c.service", TEXT)  # no longer a container: the drop-in goes
    assert not dropin.parent.exists()
    store.write("c.service", CONTAINER)
    store.remove("c.service")
    assert tree(dropins) == set()


def test_fleet_pods_runtime_limits_go_with_a_rewrite_or_removal(tmp_path: Path) -> None:
    store = UnitFileStore(tmp_path / "units", dropins=tmp_path / "system")
    control = tmp_path / "system.control" / "c.service.d"
    control.mkdir(parents=True)
    (control / "50-MemoryMax.conf").write_text("[Service]\nMemoryMax=64000000\n")
    (control / "50-Nice.conf").write_text("[Service]\nNice=5\n")  # not fleet-pod's: kept
    store.write("c.service", TEXT)
    assert tree(control) == {"50-Nice.conf"}
    (control / "50-CPUQuota.conf").write_text("[Service]\nCPUQuota=50%\n")
    store.remove("c.service")
    assert tree(control) == {"50-Nice.conf"}


def test_no_dropins_directory_no_dropins(tmp_path: Path) -> None:
    store = UnitFileStore(tmp_path / "units")
    store.write("c.service", CONTAINER)
    assert tree(tmp_path) == {"units", "units/c.service"}


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


def test_list_reads_a_settled_file_once_and_sees_every_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    later = 0

    def clock_ns() -> int:
        return time.time_ns() + later

    store = UnitFileStore(tmp_path / "units", clock_ns=clock_ns)
    path = store.write("a.service", TEXT)
    later = 10**9  # hashed a second after the write: settled
    reads: list[str] = []
    digest = files.file_digest

    def counting_digest(target: Path) -> str:
        reads.append(target.name)
        return digest(target)

    monkeypatch.setattr(files, "file_digest", counting_digest)
    sha = hashlib.sha1(TEXT.encode()).hexdigest()
    for _ in range(3):
        assert store.list() == {"a.service": sha}
    assert reads == ["a.service"]  # once, then from its stat
    with path.open("a") as file:  # changed in place
        file.write("# more\n")
    assert store.list() == {"a.service": hashlib.sha1((TEXT + "# more\n").encode()).hexdigest()}
    store.write("a.service", TEXT)  # replaced: a new inode
    assert store.list() == {"a.service": sha}
    assert reads == ["a.service", "a.service", "a.service"]


def test_list_hashes_again_a_file_that_changed_just_before_it_was_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = UnitFileStore(tmp_path / "units")
    store.write("a.service", TEXT)  # its times are now: a change in the same tick is possible
    reads: list[str] = []
    digest = files.file_digest

    def counting_digest(target: Path) -> str:
        reads.append(target.name)
        return digest(target)

    monkeypatch.setattr(files, "file_digest", counting_digest)
    store.list()
    store.list()
    assert reads == ["a.service", "a.service"]


def test_list_of_names_looks_at_those_files_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = UnitFileStore(tmp_path / "units", clock_ns=lambda: time.time_ns() + 10**9)
    for name in ("a.service", "b.service", "c.service"):
        store.write(name, f"{TEXT}# {name}\n")
    (tmp_path / "units" / "notes.txt").write_text("not a unit")
    everything = store.list()
    looked: list[str] = []
    stat = os.stat

    def counting_stat(path: str, **kwargs: bool) -> os.stat_result:
        looked.append(os.path.basename(path))
        return stat(path, **kwargs)

    monkeypatch.setattr(os, "stat", counting_stat)
    names = ["b.service", "gone.service", "notes.txt", "../escape.service"]
    assert store.list(names) == {"b.service": everything["b.service"]}
    assert looked == ["b.service", "gone.service"]  # no listing, no look at bad names
    store.remove("b.service")
    assert store.list(["b.service"]) == {}
    monkeypatch.setattr(os, "stat", stat)
    assert store.list() == {name: everything[name] for name in ("a.service", "c.service")}
