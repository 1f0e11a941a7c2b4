"""Rendering an image's rootfs: the same refusals as the checks, never through a symlink,
modes and owners, trees deeper than PATH_MAX, and removing them."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from fleetpod.errors import ImageError
from fleetpod.image import check_archive
from fleetpod.members import MemberChecker
from fleetpod.render import force_rmtree, render_rootfs
from tests.fleetpod.conftest import (
    ArchiveFactory,
    Entry,
    nested_directories,
    open_at_depth,
    write_archive,
)
from tests.fleetpod.test_image import ARCHIVE_REFUSALS, MANIFEST, ROOTFS
from tests.fleetpod.test_members import COMPOSED_ESCAPES


def switch_the_checks_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """Defence in depth: what the writer does when the checker lets everything through."""
    monkeypatch.setattr(MemberChecker, "check", lambda self, info: None)
    monkeypatch.setattr(MemberChecker, "finish", lambda self: None)


@pytest.mark.parametrize(
    ("entries", "base", "message"),
    [r[1:] for r in ARCHIVE_REFUSALS if r[0] != "bad manifest"],  # rendering skips the manifest
    ids=[r[0] for r in ARCHIVE_REFUSALS if r[0] != "bad manifest"],
)
def test_render_refuses_the_same_archives_and_leaves_nothing(
    tmp_path: Path,
    make_archive: ArchiveFactory,
    entries: list[Entry],
    base: bool,
    message: str,
) -> None:
    archive = make_archive(*entries, base=base)
    dest = tmp_path / "tree"
    with pytest.raises(ImageError) as raised:
        render_rootfs(archive, dest)
    assert message in str(raised.value)
    assert not dest.exists()
    assert not (tmp_path / "etc").exists()


def test_fifos_are_allowed_only_with_allow_devices_as_root(
    tmp_path: Path, make_archive: ArchiveFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = make_archive(Entry("rootfs/fifo", kind="fifo", mode=0o640))
    assert check_archive(archive, allow_devices=True).name == "example.com/app"
    render_rootfs(archive, tmp_path / "tree", allow_devices=True)
    fifo = os.lstat(tmp_path / "tree" / "fifo")
    assert stat.S_ISFIFO(fifo.st_mode)
    assert stat.S_IMODE(fifo.st_mode) == 0o640

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(ImageError, match="device node or fifo"):
        check_archive(archive, allow_devices=True)


def test_render_reproduces_the_tree(tmp_path: Path, image_file: Path) -> None:
    dest = tmp_path / "tree"
    render_rootfs(image_file, dest)

    hello = dest / "bin" / "hello"
    assert hello.read_text() == "#!/bin/sh\necho hello\n"
    assert stat.S_IMODE(os.lstat(hello).st_mode) == 0o755
    assert stat.S_IMODE(os.lstat(dest / "var" / "empty").st_mode) == 0o700
    assert os.readlink(dest / "etc" / "motd") == "hostname"
    assert (
        os.lstat(dest / "etc" / "hostname").st_ino
        == os.lstat(dest / "etc" / "hostname.hard").st_ino
    )
    assert not (dest / "manifest").exists()
    assert sorted(os.listdir(dest)) == ["bin", "etc", "var"]


def test_render_keeps_ownership_times_and_set_id_bits_of_a_trusted_image_as_root(
    tmp_path: Path, make_archive: ArchiveFactory
) -> None:
    archive = make_archive(
        Entry("rootfs/bin/tool", data=b"x", mode=0o4755, uid=1234, gid=99),
        Entry("rootfs/data", kind="dir", mode=0o750, uid=7, gid=8),
        Entry("rootfs/data/link", kind="symlink", target="../bin/tool", uid=7, gid=8),
        Entry("rootfs/shared", data=b"x", mode=0o666),
    )
    dest = tmp_path / "tree"
    render_rootfs(archive, dest, keep_modes=True)
    tool = os.lstat(dest / "bin" / "tool")
    assert (tool.st_uid, tool.st_gid, stat.S_IMODE(tool.st_mode)) == (1234, 99, 0o4755)
    assert tool.st_mtime == 1_000_000
    data = os.lstat(dest / "data")
    assert (data.st_uid, data.st_gid, stat.S_IMODE(data.st_mode)) == (7, 8, 0o750)
    assert data.st_mtime == 1_000_000
    assert os.lstat(dest / "data" / "link").st_uid == 7
    assert stat.S_IMODE(os.lstat(dest / "shared").st_mode) == 0o666


def modes_after_render(
    tmp_path: Path, make_archive: ArchiveFactory, **options: bool
) -> dict[str, int]:
    archive = make_archive(
        Entry("rootfs/bin/su", data=b"x", mode=0o4755),
        Entry("rootfs/bin/wall", data=b"x", mode=0o2755),
        Entry("rootfs/bin/both", data=b"x", mode=0o6777),
        Entry("rootfs/shared", data=b"x", mode=0o666),
        Entry("rootfs/tmp", kind="dir", mode=0o1777),
        Entry("rootfs/drop", kind="dir", mode=0o777),
        Entry("rootfs/mail", kind="dir", mode=0o2775),
        Entry("rootfs/odd", kind="dir", mode=0o4755),
    )
    dest = tmp_path / "tree"
    render_rootfs(archive, dest, **options)
    names = ["bin/su", "bin/wall", "bin/both", "shared", "tmp", "drop", "mail", "odd"]
    return {name: stat.S_IMODE(os.lstat(dest / name).st_mode) for name in names}


def test_render_drops_set_id_and_world_write_bits_unless_the_image_keeps_them(
    tmp_path: Path, make_archive: ArchiveFactory
) -> None:
    assert modes_after_render(tmp_path, make_archive) == {
        "bin/su": 0o755,
        "bin/wall": 0o755,
        "bin/both": 0o775,
        "shared": 0o664,
        "tmp": 0o1777,  # sticky: each user can remove only their own entries
        "drop": 0o775,
        "mail": 0o2775,  # set-group-ID on a directory only passes its group on
        "odd": 0o755,
    }


def test_render_as_a_user_drops_set_id_bits_and_ownership(
    tmp_path: Path, make_archive: ArchiveFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_uid = os.geteuid()
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    archive = make_archive(Entry("rootfs/bin/tool", data=b"x", mode=0o6755, uid=1234, gid=99))
    render_rootfs(archive, tmp_path / "tree", keep_modes=True)
    tool = os.lstat(tmp_path / "tree" / "bin" / "tool")
    assert stat.S_IMODE(tool.st_mode) == 0o755
    assert tool.st_uid == real_uid


def test_render_creates_missing_parent_directories(
    tmp_path: Path, make_archive: ArchiveFactory
) -> None:
    archive = make_archive(Entry("rootfs/usr/share/doc/readme", data=b"docs"))
    render_rootfs(archive, tmp_path / "tree")
    assert (tmp_path / "tree" / "usr" / "share" / "doc" / "readme").read_bytes() == b"docs"


def test_render_refuses_an_existing_destination(tmp_path: Path, image_file: Path) -> None:
    dest = tmp_path / "tree"
    dest.mkdir()
    (dest / "keep").write_text("mine")
    with pytest.raises(ImageError, match="already exists"):
        render_rootfs(image_file, dest)
    assert (dest / "keep").read_text() == "mine"


def test_render_never_writes_through_a_symlink_even_if_the_checker_let_it_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defence in depth: with the name checks switched off, the writer still refuses."""
    switch_the_checks_off(monkeypatch)
    outside = tmp_path / "outside"
    outside.mkdir()
    archive = write_archive(
        tmp_path / "evil.aci",
        [
            MANIFEST,
            ROOTFS,
            Entry("rootfs/escape", kind="symlink", target=str(outside)),
            Entry("rootfs/escape/planted", data=b"gotcha"),
        ],
    )
    with pytest.raises(ImageError, match="would be written through the symlink 'rootfs/escape'"):
        render_rootfs(archive, tmp_path / "tree")
    assert os.listdir(outside) == []
    assert not (tmp_path / "tree").exists()


def test_render_never_hard_links_to_a_file_outside_even_if_the_checker_let_it_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    switch_the_checks_off(monkeypatch)
    secret = tmp_path / "secret"
    secret.write_text("secret")
    archive = write_archive(
        tmp_path / "evil.aci",
        [
            MANIFEST,
            ROOTFS,
            Entry("rootfs/up", kind="symlink", target=str(tmp_path)),
            Entry("rootfs/stolen", kind="hardlink", target="rootfs/up/secret"),
        ],
    )
    with pytest.raises(
        ImageError, match="'rootfs/stolen' links to a file through the symlink 'rootfs/up'"
    ):
        render_rootfs(archive, tmp_path / "tree")
    assert os.stat(secret).st_nlink == 1


def test_the_composed_escape_would_read_the_host_if_it_were_rendered(
    tmp_path: Path, make_archive: ArchiveFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the refusal prevents: with the checks off, the rendered `esc` reaches the host's
    /etc/hostname. The writer itself never follows it."""
    switch_the_checks_off(monkeypatch)
    archive = make_archive(*COMPOSED_ESCAPES[0][1])
    render_rootfs(archive, tmp_path / "tree")
    assert os.path.realpath(tmp_path / "tree" / "esc") == "/etc/hostname"


def test_a_directory_listed_after_its_contents_is_accepted(
    tmp_path: Path, make_archive: ArchiveFactory
) -> None:
    archive = make_archive(
        Entry("rootfs/a/b/c", data=b"x"), Entry("rootfs/a", kind="dir", mode=0o750)
    )
    render_rootfs(archive, tmp_path / "tree")
    assert stat.S_IMODE(os.lstat(tmp_path / "tree" / "a").st_mode) == 0o750
    assert stat.S_IMODE(os.lstat(tmp_path / "tree" / "a" / "b").st_mode) == 0o755
    assert (tmp_path / "tree" / "a" / "b" / "c").read_bytes() == b"x"


@pytest.mark.timeout(60)
def test_rendering_a_3000_deep_tree_and_removing_it(
    deep_tmp_path: Path, make_archive: ArchiveFactory
) -> None:
    """Deeper than PATH_MAX allows in one path: rendered and removed one level at a time."""
    archive = make_archive(
        *nested_directories(3000),
        Entry("rootfs" + "/d" * 3000 + "/leaf", data=b"deep"),
        Entry("rootfs" + "/d" * 3000 + "/up", kind="symlink", target="../" * 1300 + "d"),
        compression="gzip",
    )
    dest = deep_tmp_path / "tree"
    render_rootfs(archive, dest)
    fd = open_at_depth(dest, 3000)
    try:
        with open(os.open("leaf", os.O_RDONLY, dir_fd=fd), "rb") as leaf:
            assert leaf.read() == b"deep"
        assert os.readlink("up", dir_fd=fd) == "../" * 1300 + "d"
    finally:
        os.close(fd)
    force_rmtree(dest)
    assert not os.path.lexists(dest)
