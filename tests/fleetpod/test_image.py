"""Image archives: building, ids, validation of every member, and safe rendering."""

from __future__ import annotations

import bz2
import json
import os
import socket
import tarfile
from pathlib import Path
from typing import Literal

import pytest

from fleetpod.errors import ImageError
from fleetpod.image import (
    build_image,
    check_archive,
    image_id_of,
    inspect_archive,
    open_decompressed,
)
from fleetpod.image_manifest import MountPoint, host_arch
from tests.fleetpod.conftest import (
    ArchiveFactory,
    Entry,
    manifest_document,
)


def members_of(path: Path) -> list[tarfile.TarInfo]:
    with open_decompressed(path) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
        return list(tar)


def test_build_writes_exactly_manifest_and_rootfs_in_sorted_order(
    tmp_path: Path, rootfs_dir: Path
) -> None:
    output = tmp_path / "app.aci"
    image_id = build_image(
        rootfs_dir,
        output,
        name="example.com/app",
        version="1.0",
        exec_=["/bin/hello", "--loud"],
        environment=[("MODE", "test")],
        mount_points=[MountPoint("data", "/var/data")],
    )

    members = members_of(output)
    names = [m.name for m in members]
    assert names == [
        "manifest",
        "rootfs",
        "rootfs/bin",
        "rootfs/bin/hello",
        "rootfs/etc",
        "rootfs/etc/hostname",
        "rootfs/etc/hostname.hard",
        "rootfs/etc/motd",
        "rootfs/var",
        "rootfs/var/empty",
    ]
    by_name = {m.name: m for m in members}
    assert by_name["rootfs/bin/hello"].mode == 0o755
    assert by_name["rootfs/var/empty"].mode == 0o700
    assert by_name["rootfs/etc/motd"].issym()
    assert by_name["rootfs/etc/motd"].linkname == "hostname"
    assert by_name["rootfs/etc/hostname.hard"].islnk()
    assert by_name["rootfs/etc/hostname.hard"].linkname == "rootfs/etc/hostname"
    assert all(m.uname == "" and m.gname == "" for m in members)
    assert image_id == image_id_of(output)
    manifest = check_archive(output)
    assert manifest.name == "example.com/app"
    assert manifest.version == "1.0"
    assert manifest.arch == host_arch()
    assert manifest.app is not None
    assert manifest.app.exec == ("/bin/hello", "--loud")
    assert manifest.app.environment == (("MODE", "test"),)
    assert manifest.app.mount_points == (MountPoint("data", "/var/data"),)


def test_build_keeps_numeric_ownership_from_the_files(tmp_path: Path, rootfs_dir: Path) -> None:
    os.chown(rootfs_dir / "etc" / "hostname", 1234, 5678)  # the suite runs as root
    output = tmp_path / "app.aci"
    build_image(rootfs_dir, output, name="example.com/app", version="1", exec_=["/bin/hello"])
    info = {m.name: m for m in members_of(output)}["rootfs/etc/hostname"]
    assert (info.uid, info.gid, info.uname, info.gname) == (1234, 5678, "", "")


@pytest.mark.parametrize("compression", ["none", "gzip", "xz"])
def test_the_image_id_does_not_depend_on_compression(
    tmp_path: Path, rootfs_dir: Path, compression: Literal["none", "gzip", "xz"]
) -> None:
    plain = tmp_path / "plain.aci"
    other = tmp_path / f"{compression}.aci"
    expected = build_image(
        rootfs_dir, plain, name="example.com/a", version="1", exec_=["/x"], compression="none"
    )
    image_id = build_image(
        rootfs_dir, other, name="example.com/a", version="1", exec_=["/x"], compression=compression
    )
    assert image_id == expected == image_id_of(other)
    assert image_id.startswith("sha512-")
    assert len(image_id) == len("sha512-") + 128
    magic = other.read_bytes()[:6]
    assert magic.startswith(
        {"none": b"manife", "gzip": b"\x1f\x8b", "xz": b"\xfd7zXZ"}[compression]
    )


def test_a_bzip2_archive_has_the_id_of_its_tar(tmp_path: Path, rootfs_dir: Path) -> None:
    plain = tmp_path / "plain.aci"
    image_id = build_image(
        rootfs_dir, plain, name="example.com/a", version="1", exec_=["/x"], compression="none"
    )
    bzipped = tmp_path / "bz.aci"
    bzipped.write_bytes(bz2.compress(plain.read_bytes()))
    assert image_id_of(bzipped) == image_id
    assert check_archive(bzipped).name == "example.com/a"


def test_building_twice_gives_the_same_bytes(tmp_path: Path, rootfs_dir: Path) -> None:
    first, second = tmp_path / "one.aci", tmp_path / "two.aci"
    build_image(rootfs_dir, first, name="example.com/a", version="1", exec_=["/x"])
    build_image(rootfs_dir, second, name="example.com/a", version="1", exec_=["/x"])
    assert first.read_bytes() == second.read_bytes()


def test_build_replaces_the_output_and_leaves_no_temporary_files(
    tmp_path: Path, rootfs_dir: Path
) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    output = out_dir / "app.aci"
    output.write_bytes(b"old")
    build_image(rootfs_dir, output, name="example.com/a", version="1", exec_=["/x"])
    assert os.listdir(out_dir) == ["app.aci"]
    assert output.read_bytes() != b"old"


def test_a_refused_build_leaves_no_output(tmp_path: Path, rootfs_dir: Path) -> None:
    (rootfs_dir / "etc" / "escape").symlink_to("/etc/passwd")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(ImageError, match="absolute path '/etc/passwd'"):
        build_image(rootfs_dir, out_dir / "a.aci", name="example.com/a", version="1", exec_=["/x"])
    assert os.listdir(out_dir) == []


def _socket_in(directory: Path) -> None:
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(directory / "sock"))
    server.close()


BUILD_REFUSALS = [
    ("bad name", {"name": "Foo Bar"}, None, "image name 'Foo Bar' is not an AC identifier"),
    ("empty version", {"version": ""}, None, "image version '' must be non-empty"),
    ("spaces in version", {"version": "1 0"}, None, "image version '1 0'"),
    ("no exec", {"exec_": []}, None, "app.exec must be a non-empty list"),
    ("relative workdir", {"working_directory": "srv"}, None, "is not absolute"),
    ("bad isolator", {"isolators": [("resource/memory", {"limit": "x"})]}, None, "memory quantity"),
    (
        "absolute symlink",
        {},
        lambda d: (d / "l").symlink_to("/bin"),
        "symlink to the absolute path",
    ),
    ("escaping symlink", {}, lambda d: (d / "l").symlink_to("../.."), "escapes the root"),
    ("fifo", {}, lambda d: os.mkfifo(d / "f"), "device node or fifo"),
    ("socket", {}, _socket_in, "sockets are not allowed"),
]


@pytest.mark.parametrize(
    ("overrides", "prepare", "message"),
    [r[1:] for r in BUILD_REFUSALS],
    ids=[r[0] for r in BUILD_REFUSALS],
)
def test_build_refuses_what_an_import_would_refuse(
    tmp_path: Path, rootfs_dir: Path, overrides: dict[str, object], prepare: object, message: str
) -> None:
    if callable(prepare):
        prepare(rootfs_dir)
    arguments: dict[str, object] = {"name": "example.com/a", "version": "1", "exec_": ["/x"]}
    arguments.update(overrides)
    with pytest.raises(ImageError) as raised:
        build_image(rootfs_dir, tmp_path / "a.aci", **arguments)  # type: ignore[arg-type]
    assert message in str(raised.value)
    assert not (tmp_path / "a.aci").exists()


def test_build_refuses_a_missing_source_and_an_output_inside_it(
    tmp_path: Path, rootfs_dir: Path
) -> None:
    with pytest.raises(ImageError, match="is not a directory"):
        build_image(tmp_path / "nope", tmp_path / "a.aci", name="a", version="1", exec_=["/x"])
    with pytest.raises(ImageError, match="must not be inside the source"):
        build_image(rootfs_dir, rootfs_dir / "a.aci", name="a", version="1", exec_=["/x"])
    with pytest.raises(ImageError, match="unknown compression 'zip'"):
        build_image(
            rootfs_dir,
            tmp_path / "a.aci",
            name="a",
            version="1",
            exec_=["/x"],
            compression="zip",  # type: ignore[arg-type]
        )


def test_inspect_archive_returns_the_original_manifest_bytes(make_archive: ArchiveFactory) -> None:
    document = manifest_document(annotations=[{"name": "authors", "value": "ops"}])
    archive = make_archive(manifest=document)
    inspected = inspect_archive(archive)
    assert json.loads(inspected.manifest_bytes) == document
    assert inspected.manifest.annotations == (("authors", "ops"),)
    assert (inspected.special_count, inspected.special_names) == (0, ())


def test_inspect_archive_names_the_members_whose_modes_a_render_drops(
    make_archive: ArchiveFactory,
) -> None:
    archive = make_archive(
        Entry("rootfs/bin/su", data=b"x", mode=0o4755),
        Entry("rootfs/bin/wall", data=b"x", mode=0o2755),
        Entry("rootfs/shared", data=b"x", mode=0o666),
        Entry("rootfs/tmp", kind="dir", mode=0o1777),  # sticky: kept
        Entry("rootfs/drop", kind="dir", mode=0o777),
        Entry("rootfs/mail", kind="dir", mode=0o2775),  # set-group-ID directory: kept
        Entry("rootfs/link", kind="symlink", target="bin/su", mode=0o777),
    )
    inspected = inspect_archive(archive)
    assert inspected.special_count == 4
    assert inspected.special_names == (
        "rootfs/bin/su",
        "rootfs/bin/wall",
        "rootfs/shared",
        "rootfs/drop",
    )


def test_a_gzip_archive_is_checked_through_its_compression(make_archive: ArchiveFactory) -> None:
    assert check_archive(make_archive(compression="gzip")).name == "example.com/app"


MANIFEST = Entry("manifest", data=json.dumps(manifest_document()).encode())
ROOTFS = Entry("rootfs", kind="dir", mode=0o755)
NAMELESS_MANIFEST = Entry(
    "manifest",
    data=json.dumps({k: v for k, v in manifest_document().items() if k != "name"}).encode(),
)

ARCHIVE_REFUSALS: list[tuple[str, list[Entry], bool, str]] = [
    (
        "dot-dot",
        [Entry("rootfs/../etc/passwd", data=b"x")],
        True,
        "image member 'rootfs/../etc/passwd' escapes the root ('..')",
    ),
    (
        "absolute name",
        [Entry("/etc/passwd", data=b"x")],
        True,
        "image member '/etc/passwd' has an absolute name",
    ),
    (
        "absolute symlink",
        [Entry("rootfs/passwd", kind="symlink", target="/etc/passwd")],
        True,
        "image member 'rootfs/passwd' is a symlink to the absolute path '/etc/passwd'",
    ),
    (
        "escaping symlink",
        [Entry("rootfs/bin/up", kind="symlink", target="../../x")],
        True,
        "is a symlink to '../../x', which escapes the root",
    ),
    (
        "empty symlink",
        [Entry("rootfs/empty", kind="symlink", target="")],
        True,
        "symlink with an empty target",
    ),
    (
        "nul in name",
        [Entry("rootfs/\u00e9\0x", data=b"x")],
        True,
        "has an empty name or a NUL byte in it",
    ),
    (
        "nul in symlink",
        [Entry("rootfs/l", kind="symlink", target="\u00e9\0x")],
        True,
        "is a symlink with an empty target or a NUL byte in it",
    ),
    (
        "extra top level",
        [Entry("README", data=b"x")],
        True,
        "image member 'README' is outside 'manifest' and 'rootfs/'",
    ),
    (
        "under manifest",
        [Entry("manifest/x", data=b"x")],
        True,
        "is outside 'manifest' and 'rootfs/'",
    ),
    (
        "duplicate",
        [Entry("rootfs/bin/hello", data=b"again")],
        True,
        "image member 'rootfs/bin/hello' appears twice",
    ),
    ("not normalised", [Entry("rootfs/./x", data=b"x")], True, "is not a normalised path"),
    ("double slash", [Entry("rootfs//x", data=b"x")], True, "is not a normalised path"),
    (
        "manifest a dir",
        [Entry("manifest", kind="dir"), ROOTFS],
        False,
        "image member 'manifest' must be a regular file",
    ),
    (
        "rootfs a file",
        [MANIFEST, Entry("rootfs", data=b"x")],
        False,
        "image member 'rootfs' must be a directory",
    ),
    ("no manifest", [ROOTFS], False, "has no 'manifest' file"),
    ("no rootfs", [MANIFEST], False, "has no 'rootfs/' directory"),
    (
        "hard link outside",
        [Entry("rootfs/m", kind="hardlink", target="manifest")],
        True,
        "not to an earlier file in rootfs/",
    ),
    (
        "hard link missing",
        [Entry("rootfs/h", kind="hardlink", target="rootfs/later")],
        True,
        "not to an earlier file in rootfs/",
    ),
    (
        "hard link dot-dot",
        [Entry("rootfs/h", kind="hardlink", target="rootfs/../../etc/shadow")],
        True,
        "is a hard link that escapes the root",
    ),
    (
        "hard link absolute",
        [Entry("rootfs/h", kind="hardlink", target="/etc/shadow")],
        True,
        "is a hard link that has an absolute name",
    ),
    (
        "hard link to a dir",
        [Entry("rootfs/h", kind="hardlink", target="rootfs/bin")],
        True,
        "not to an earlier file",
    ),
    (
        "fifo",
        [Entry("rootfs/fifo", kind="fifo")],
        True,
        "image member 'rootfs/fifo' is a device node or fifo",
    ),
    ("device", [Entry("rootfs/null", kind="chr")], True, "is a device node or fifo"),
    (
        "under a symlink",
        [Entry("rootfs/l", kind="symlink", target="bin"), Entry("rootfs/l/x", data=b"x")],
        True,
        "is under 'rootfs/l', which is not a directory",
    ),
    (
        "symlink dance",
        [
            Entry("rootfs/y", kind="symlink", target="."),
            Entry("rootfs/x", kind="symlink", target="y/.."),
            Entry("rootfs/x/evil", data=b"x"),
        ],
        True,
        "is under 'rootfs/x', which is not a directory",
    ),
    (
        "under a file",
        [Entry("rootfs/bin/hello/x", data=b"x")],
        True,
        "is under 'rootfs/bin/hello', which is not a directory",
    ),
    ("bad manifest", [NAMELESS_MANIFEST, ROOTFS], False, "manifest has no name"),
]


@pytest.mark.parametrize(
    ("entries", "base", "message"),
    [r[1:] for r in ARCHIVE_REFUSALS],
    ids=[r[0] for r in ARCHIVE_REFUSALS],
)
def test_check_archive_refuses_naming_the_member_and_reason(
    make_archive: ArchiveFactory,
    entries: list[Entry],
    base: bool,
    message: str,
) -> None:
    archive = make_archive(*entries, base=base)
    with pytest.raises(ImageError) as raised:
        check_archive(archive)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"this is not a tar archive at all" * 40, "is not a valid image archive"),
        (b"\x1f\x8b\x08\x00garbage", "is not a valid image archive"),
        (b"", "is not a valid image archive"),
    ],
)
def test_check_archive_refuses_files_that_are_not_archives(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "junk.aci"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=message):
        check_archive(path)


def test_a_truncated_archive_is_refused(tmp_path: Path, image_file: Path) -> None:
    truncated = tmp_path / "cut.aci"
    truncated.write_bytes(image_file.read_bytes()[:200])
    with pytest.raises(ImageError, match="not a valid image archive"):
        check_archive(truncated)
    with pytest.raises(ImageError, match="cannot read image archive"):
        image_id_of(truncated)
