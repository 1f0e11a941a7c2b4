"""Image archives: build one from a directory, compute its id, read and validate it.

An image is one tar (optionally gzip, bzip2 or xz compressed) holding exactly two top-level
names: `manifest` (a regular file, appc JSON) and `rootfs/` (the filesystem). Its id is
`sha512-` + the hex SHA-512 of the *uncompressed* tar, so it does not depend on compression.

Invariants:
* Every archive is read as a stream, in constant memory, and never extracted with tarfile's own
  extraction: `MemberChecker` (`fleetpod.members`) validates each member by name and type and
  then the tree as a whole, in time linear in the archive; `fleetpod.render` re-applies those
  checks while writing (an earlier `check_archive` is never trusted). Each refusal is an
  `ImageError` naming the member and the reason.
* `inspect_archive` also reports the members whose set-ID or world-write bits a render drops
  unless the image is trusted to keep them (`members.special_mode`).
* `build_image` validates the manifest, writes members in sorted order with numeric ownership,
  refuses what `check_archive` would refuse, and replaces `output` atomically.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import os
import tarfile
import tempfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, Literal, cast

from fleetpod.errors import ImageError
from fleetpod.image_manifest import (
    App,
    ImageManifest,
    MountPoint,
    check_identifier,
    host_arch,
    parse_image_manifest,
)
from fleetpod.members import MANIFEST, ROOTFS, MemberChecker, special_mode

MAX_MANIFEST_BYTES = 1 << 20
SPECIAL_NAMES_SHOWN = 5
CHUNK = 1 << 20
ARCHIVE_ERRORS = (tarfile.TarError, EOFError, OSError, lzma.LZMAError, zlib.error)
IMAGE_ID_PREFIX = "sha512-"
SHORT_IMAGE_ID = len(IMAGE_ID_PREFIX) + 32  # how much of an id a listing shows


def image_id(sha512_hex: str) -> str:
    """The id of an image whose uncompressed tar has the SHA-512 `sha512_hex` (hex digits)."""
    return IMAGE_ID_PREFIX + sha512_hex


def compression_of(path: Path) -> str | None:
    """`gzip`, `xz` or `bzip2` by the file's magic bytes; None for anything else."""
    with open(path, "rb") as raw:
        magic = raw.read(6)
    if magic.startswith(b"\x1f\x8b"):
        return "gzip"
    if magic.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    return "bzip2" if magic.startswith(b"BZh") else None


def open_decompressed(path: Path) -> BinaryIO:
    """`path` opened for reading, decompressed if its magic bytes say gzip, xz or bzip2."""
    compression = compression_of(path)
    if compression == "gzip":
        return cast(BinaryIO, gzip.open(path, "rb"))
    if compression == "xz":
        return cast(BinaryIO, lzma.open(path, "rb"))
    if compression == "bzip2":
        return cast(BinaryIO, bz2.open(path, "rb"))
    return open(path, "rb")


def image_id_of(path: Path) -> str:
    """`sha512-<hex>` of the uncompressed tar in `path`."""
    digest = hashlib.sha512()
    try:
        with open_decompressed(path) as stream:
            while chunk := stream.read(CHUNK):
                digest.update(chunk)
    except ARCHIVE_ERRORS as error:
        raise ImageError(f"cannot read image archive {str(path)!r}: {error}") from None
    return image_id(digest.hexdigest())


def open_tar(stream: BinaryIO) -> tarfile.TarFile:
    return tarfile.open(fileobj=stream, mode="r|")


@dataclass(frozen=True)
class Inspected:
    """What `inspect_archive` found: the manifest (parsed and as written), and the members
    with set-ID or world-write bits (`special_count` of them, the first few by name)."""

    manifest: ImageManifest
    manifest_bytes: bytes
    special_count: int = 0
    special_names: tuple[str, ...] = ()


def check_archive(tar_path: Path, *, allow_devices: bool = False) -> ImageManifest:
    """Validate every member of the image in `tar_path` without extracting; the manifest."""
    return inspect_archive(tar_path, allow_devices=allow_devices).manifest


def inspect_archive(tar_path: Path, *, allow_devices: bool = False) -> Inspected:
    """`check_archive`, also returning the manifest's bytes and the members with special modes."""
    manifest: bytes | None = None
    checker = MemberChecker(allow_devices=allow_devices)
    special: list[str] = []
    special_count = 0
    try:
        with open_decompressed(tar_path) as stream, open_tar(stream) as tar:
            for info in tar:
                checker.check(info)
                if special_mode(info):
                    special_count += 1
                    if len(special) < SPECIAL_NAMES_SHOWN:
                        special.append(info.name)
                if info.name == MANIFEST:
                    if info.size > MAX_MANIFEST_BYTES:
                        limit = MAX_MANIFEST_BYTES
                        raise ImageError(f"image manifest is larger than {limit} bytes")
                    manifest = cast(IO[bytes], tar.extractfile(info)).read()
    except ARCHIVE_ERRORS as error:
        raise ImageError(f"{str(tar_path)!r} is not a valid image archive: {error}") from None
    checker.finish()
    assert manifest is not None
    return Inspected(parse_image_manifest(manifest), manifest, special_count, tuple(special))


def build_image(
    source: Path,
    output: Path,
    *,
    name: str,
    version: str,
    exec_: Sequence[str],
    user: str = "0",
    group: str = "0",
    environment: Sequence[tuple[str, str]] = (),
    working_directory: str = "/",
    mount_points: Sequence[MountPoint] = (),
    isolators: Sequence[tuple[str, Any]] = (),
    compression: Literal["none", "gzip", "xz"] = "gzip",
) -> str:
    """Write an image of directory `source` to `output`; returns its image id."""
    check_identifier(name, "image name")
    if not version or any(c.isspace() or not c.isprintable() for c in version):
        raise ImageError(f"image version {version!r} must be non-empty, without whitespace")
    manifest = ImageManifest(
        name=name,
        labels=(("version", version), ("os", "linux"), ("arch", host_arch())),
        app=App(
            exec=tuple(exec_),
            user=user,
            group=group,
            environment=tuple(environment),
            working_directory=working_directory,
            mount_points=tuple(mount_points),
            isolators=tuple(isolators),
        ),
    )
    manifest_bytes = manifest.to_json()
    parse_image_manifest(manifest_bytes)  # the same rules as an import
    if not source.is_dir():
        raise ImageError(f"image source {str(source)!r} is not a directory")
    if output.absolute().resolve().is_relative_to(source.resolve()):
        raise ImageError(f"image output {str(output)!r} must not be inside the source directory")
    output.parent.mkdir(parents=True, exist_ok=True)
    tar_fd, tar_name = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.", suffix=".tar")
    out_fd, out_name = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.", suffix=".tmp")
    os.close(out_fd)
    try:
        with os.fdopen(tar_fd, "w+b") as tar_file:
            _write_tar(tar_file, source, manifest_bytes)
            tar_file.seek(0)
            image_id = _compress(tar_file, Path(out_name), compression)
        os.chmod(out_name, 0o644)
        os.replace(out_name, output)
    finally:
        Path(tar_name).unlink(missing_ok=True)
        Path(out_name).unlink(missing_ok=True)
    return image_id


def _write_tar(tar_file: IO[bytes], source: Path, manifest_bytes: bytes) -> None:
    checker = MemberChecker(allow_devices=False)
    with tarfile.open(fileobj=tar_file, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(MANIFEST)
        info.size, info.mode = len(manifest_bytes), 0o644
        info.mtime = int(source.stat().st_mtime)
        checker.check(info)
        tar.addfile(info, io.BytesIO(manifest_bytes))
        for path, arcname in [(source, ROOTFS), *_walk(source)]:
            try:
                member = tar.gettarinfo(path, arcname=arcname)
            except OSError as error:
                raise ImageError(f"cannot read {str(path)!r}: {error}") from None
            if member is None:  # a socket
                raise ImageError(f"cannot put {str(path)!r} in an image: sockets are not allowed")
            member.uname = member.gname = ""
            member.mtime = int(member.mtime)
            try:
                checker.check(member)
            except ImageError as error:
                raise ImageError(f"{error} (from {str(path)!r})") from None
            if member.isreg():
                with open(path, "rb") as data:
                    tar.addfile(member, data)
            else:
                tar.addfile(member)
    checker.finish()


def _walk(source: Path) -> list[tuple[Path, str]]:
    found: list[tuple[Path, str]] = []
    for directory, dirs, files in os.walk(source):
        relative = Path(directory).relative_to(source)
        for entry in [*dirs, *files]:
            found.append((Path(directory, entry), (Path(ROOTFS) / relative / entry).as_posix()))
    return sorted(found, key=lambda pair: pair[1])


def _compressor(raw: IO[bytes], compression: str) -> IO[bytes]:
    if compression == "gzip":
        return cast(IO[bytes], gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0))
    if compression == "xz":
        return cast(IO[bytes], lzma.LZMAFile(raw, mode="wb"))
    if compression == "none":
        return raw
    raise ImageError(f"unknown compression {compression!r} (none, gzip or xz)")


def _compress(tar_file: IO[bytes], output: Path, compression: str) -> str:
    digest = hashlib.sha512()
    with open(output, "wb") as raw, _compressor(raw, compression) as sink:
        while chunk := tar_file.read(CHUNK):
            digest.update(chunk)
            sink.write(chunk)
    return image_id(digest.hexdigest())
