"""The member checks as a whole tree: symlinks resolved through other symlinks, directories
implied by deeper members, and checks that stay linear on very deep archives."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fleetpod.errors import ImageError
from fleetpod.image import check_archive
from fleetpod.render import render_rootfs
from tests.fleetpod.conftest import ArchiveFactory, Entry, nested_directories


def climbing_target(pairs: int, then: str) -> str:
    """`a/L/a/L/.../../../<then>`: lexically inside the root (each `a/L` looks like two levels
    down), but `a/L` is the root itself when `rootfs/a/L -> ..`, so every `..` climbs."""
    return "/".join(["a/L"] * pairs + [".."] * (2 * pairs) + [then])


COMPOSED_ESCAPES: list[tuple[str, list[Entry]]] = [
    (
        "link then its user",
        [
            Entry("rootfs/a", kind="dir", mode=0o755),
            Entry("rootfs/a/L", kind="symlink", target=".."),
            Entry("rootfs/esc", kind="symlink", target=climbing_target(20, "etc/hostname")),
        ],
    ),
    (
        "user before the link",
        [
            Entry("rootfs/esc", kind="symlink", target=climbing_target(20, "etc/hostname")),
            Entry("rootfs/a", kind="dir", mode=0o755),
            Entry("rootfs/a/L", kind="symlink", target=".."),
        ],
    ),
    (
        "through a chain of links",
        [
            Entry("rootfs/a", kind="dir", mode=0o755),
            Entry("rootfs/a/b", kind="dir", mode=0o755),
            Entry("rootfs/a/b/up", kind="symlink", target="../.."),
            Entry("rootfs/a/hop", kind="symlink", target="b/up"),
            Entry("rootfs/esc", kind="symlink", target="a/hop/a/hop/../../etc/hostname"),
        ],
    ),
    (
        "a link to a link that climbs",
        [
            Entry("rootfs/a", kind="dir", mode=0o755),
            Entry("rootfs/a/L", kind="symlink", target=".."),
            Entry("rootfs/a/M", kind="symlink", target="L/a/L/a/L"),
            Entry("rootfs/a/b", kind="dir", mode=0o755),
            Entry("rootfs/a/b/esc", kind="symlink", target="../M/.."),
        ],
    ),
]


@pytest.mark.parametrize(
    "entries", [r[1] for r in COMPOSED_ESCAPES], ids=[r[0] for r in COMPOSED_ESCAPES]
)
def test_symlinks_that_climb_out_through_other_symlinks_are_refused(
    tmp_path: Path, make_archive: ArchiveFactory, entries: list[Entry]
) -> None:
    archive = make_archive(*entries)
    with pytest.raises(ImageError, match=r"which leaves rootfs/ through the symlinks on its way"):
        check_archive(archive)
    dest = tmp_path / "tree"
    with pytest.raises(ImageError, match=r"which leaves rootfs/ through the symlinks on its way"):
        render_rootfs(archive, dest)
    assert not dest.exists()


def test_symlinks_through_other_symlinks_that_stay_inside_are_kept(
    tmp_path: Path, make_archive: ArchiveFactory
) -> None:
    archive = make_archive(
        Entry("rootfs/usr", kind="dir", mode=0o755),
        Entry("rootfs/usr/lib", kind="dir", mode=0o755),
        Entry("rootfs/usr/bin", kind="dir", mode=0o755),
        Entry("rootfs/lib", kind="symlink", target="usr/lib"),
        Entry("rootfs/tools", kind="symlink", target="lib/../bin"),  # usr/lib/.. is usr
        Entry("rootfs/a", kind="dir", mode=0o755),
        Entry("rootfs/a/L", kind="symlink", target=".."),
        Entry("rootfs/same", kind="symlink", target="a/L/a/L/bin/hello"),
        Entry("rootfs/loop1", kind="symlink", target="loop2"),  # a loop reaches nothing
        Entry("rootfs/loop2", kind="symlink", target="loop1/x"),
        Entry("rootfs/dangling", kind="symlink", target="a/L/nowhere/../.."),  # ENOENT first
        Entry("rootfs/through-a-file", kind="symlink", target="a/L/bin/hello/x/../../.."),
    )
    assert check_archive(archive).name == "example.com/app"
    dest = tmp_path / "tree"
    render_rootfs(archive, dest)
    assert os.path.realpath(dest / "tools") == str(dest / "usr" / "bin")
    assert (dest / "same").read_text() == "#!/bin/sh\necho hello\n"


@pytest.mark.timeout(60)
def test_a_long_chain_of_symlinks_is_resolved_once_each(make_archive: ArchiveFactory) -> None:
    """5,000 links, each to the one before, listed last first: no recursion without bound."""
    chain = [Entry(f"rootfs/l{i}", kind="symlink", target=f"l{i - 1}") for i in range(4999, 0, -1)]
    chain.append(Entry("rootfs/l0", kind="symlink", target="bin"))
    assert check_archive(make_archive(*chain)).name == "example.com/app"
    escaping = [*chain[-30:-1], Entry("rootfs/l0", kind="symlink", target="a/L/..")]
    up = [Entry("rootfs/a", kind="dir"), Entry("rootfs/a/L", kind="symlink", target="..")]
    with pytest.raises(ImageError, match=r"'rootfs/l0' is a symlink to 'a/L/\.\.', which leaves"):
        check_archive(make_archive(*up, *escaping))


def test_a_member_over_a_directory_made_for_an_earlier_member_is_refused(
    make_archive: ArchiveFactory,
) -> None:
    archive = make_archive(Entry("rootfs/a/b/c", data=b"x"), Entry("rootfs/a", data=b"x"))
    with pytest.raises(ImageError, match="'rootfs/a' clashes with the directory made for"):
        check_archive(archive)


@pytest.mark.timeout(60)
def test_checking_4000_nested_directories_is_linear(make_archive: ArchiveFactory) -> None:
    """Each member is checked against its parent only, so this is quick (it was cubic)."""
    archive = make_archive(*nested_directories(4000), compression="gzip")
    assert check_archive(archive).name == "example.com/app"
    link = Entry("rootfs" + "/d" * 4000 + "/l", kind="symlink", target="../" * 1000 + "d")
    under = Entry("rootfs" + "/d" * 4000 + "/l/x", data=b"x")
    deep = make_archive(*nested_directories(4000), link, under, compression="gzip")
    with pytest.raises(ImageError, match=r"/d/l', which is not a directory$"):
        check_archive(deep)
