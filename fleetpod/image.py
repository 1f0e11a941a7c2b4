"""Image archives: build one from a directory, compute its id, validate it, render its rootfs.

An image is one tar (optionally gzip, bzip2 or xz compressed) holding exactly two top-level
names: `manifest` (a regular file, appc JSON) and `rootfs/` (the filesystem). Its id is
`sha512-` + the hex SHA-512 of the *uncompressed* tar, so it does not depend on compression.

Invariants:
* Every archive is read as a stream, in constant memory, and never extracted with tarfile's own
  extraction: `_MemberChecker` validates each member by name and type, and `render_rootfs`
  re-applies those checks member by member while writing (an earlier `check_archive` is never
  trusted). Refused: absolute names, `..` components, names outside `manifest`/`rootfs/`,
  duplicates, symlinks with an absolute target or a target that climbs above the root, hard
  links to anything but an earlier regular file under `rootfs/`, device nodes and fifos (unless
  `allow_devices` and running as root), and any other member type. Each refusal is an
  `ImageError` naming the member and the reason.
* `render_rootfs` never follows a symlink while writing: every parent directory of a member is
  checked with `lstat` to be a real directory inside `dest`; files are created with `O_EXCL |
  O_NOFOLLOW`. Ownership is applied only when running as root (set-id bits are dropped
  otherwise); directory modes are applied last, deepest first. On failure `dest` is removed.
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
import shutil
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Sequence
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

MANIFEST = "manifest"
ROOTFS = "rootfs"
MAX_MANIFEST_BYTES = 1 << 20
CHUNK = 1 << 20
ARCHIVE_ERRORS = (tarfile.TarError, EOFError, OSError, lzma.LZMAError, zlib.error)
_O_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _is_root() -> bool:
    return os.geteuid() == 0


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
    return "sha512-" + digest.hexdigest()


class _MemberChecker:
    """Validates members in archive order; remembers names to refuse duplicates and bad links."""

    def __init__(self, *, allow_devices: bool) -> None:
        self.allow_devices = allow_devices
        self.seen: dict[str, str] = {}  # name -> "dir", "file" or "other"

    def check(self, info: tarfile.TarInfo) -> None:
        problem = self._problem(info)
        if problem is not None:
            raise ImageError(f"image member {info.name!r} {problem}")
        kind = "dir" if info.isdir() else "file" if info.isreg() else "other"
        self.seen[info.name] = kind

    def finish(self) -> None:
        if self.seen.get(MANIFEST) != "file":
            raise ImageError("image archive has no 'manifest' file")
        if self.seen.get(ROOTFS) != "dir":
            raise ImageError("image archive has no 'rootfs/' directory")

    def _problem(self, info: tarfile.TarInfo) -> str | None:
        problem = _name_problem(info.name, "")
        if problem is not None:
            return problem
        if info.name in self.seen:
            return "appears twice in the archive"
        parts = info.name.split("/")
        if parts[0] == MANIFEST:
            if len(parts) > 1:
                return "is outside 'manifest' and 'rootfs/'"
            return None if info.isreg() else "must be a regular file"
        if len(parts) == 1 and not info.isdir():
            return "must be a directory"
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if self.seen.get(parent, "dir") != "dir":
                return f"is under {parent!r}, which is not a directory"
        if (info.isreg() and not info.issparse()) or info.isdir():
            return None
        if info.issym():
            return _symlink_problem(parts[1:-1], info.linkname)
        if info.islnk():
            target_problem = _name_problem(info.linkname, "is a hard link that ")
            if target_problem is not None:
                return target_problem
            if info.linkname.split("/")[0] != ROOTFS or self.seen.get(info.linkname) != "file":
                return f"is a hard link to {info.linkname!r}, not to an earlier file in rootfs/"
            return None
        if info.ischr() or info.isblk() or info.isfifo():
            if self.allow_devices and _is_root():
                return None
            return "is a device node or fifo (allowed only as root with devices enabled)"
        return "has an unsupported member type"


def _name_problem(name: str, prefix: str) -> str | None:
    if not name or "\0" in name:
        return f"{prefix}has an empty name or a NUL byte in it"
    if name.startswith("/"):
        return f"{prefix}has an absolute name"
    parts = name.split("/")
    if ".." in parts:
        return f"{prefix}escapes the root ('..')"
    if any(part in ("", ".") for part in parts):
        return f"{prefix}is not a normalised path"
    if parts[0] not in (MANIFEST, ROOTFS):
        return f"{prefix}is outside 'manifest' and 'rootfs/'"
    return None


def _symlink_problem(directory: Sequence[str], target: str) -> str | None:
    if not target or "\0" in target:
        return "is a symlink with an empty target or a NUL byte in it"
    if target.startswith("/"):
        return f"is a symlink to the absolute path {target!r}"
    depth = len(directory)
    for part in target.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return f"is a symlink to {target!r}, which escapes the root ('..')"
        elif part not in ("", "."):
            depth += 1
    return None


def _open_tar(stream: BinaryIO) -> tarfile.TarFile:
    return tarfile.open(fileobj=stream, mode="r|")


def check_archive(tar_path: Path, *, allow_devices: bool = False) -> ImageManifest:
    """Validate every member of the image in `tar_path` without extracting; the manifest."""
    return inspect_archive(tar_path, allow_devices=allow_devices)[0]


def inspect_archive(tar_path: Path, *, allow_devices: bool = False) -> tuple[ImageManifest, bytes]:
    """`check_archive`, also returning the manifest's original bytes."""
    manifest: bytes | None = None
    checker = _MemberChecker(allow_devices=allow_devices)
    try:
        with open_decompressed(tar_path) as stream, _open_tar(stream) as tar:
            for info in tar:
                checker.check(info)
                if info.name == MANIFEST:
                    if info.size > MAX_MANIFEST_BYTES:
                        limit = MAX_MANIFEST_BYTES
                        raise ImageError(f"image manifest is larger than {limit} bytes")
                    manifest = cast(IO[bytes], tar.extractfile(info)).read()
    except ARCHIVE_ERRORS as error:
        raise ImageError(f"{str(tar_path)!r} is not a valid image archive: {error}") from None
    checker.finish()
    assert manifest is not None
    return parse_image_manifest(manifest), manifest


def render_rootfs(tar_path: Path, dest: Path, *, allow_devices: bool = False) -> None:
    """Extract the image's `rootfs/` into the new directory `dest` (checked member by member)."""
    try:
        dest.mkdir(mode=0o700)
    except FileExistsError:
        raise ImageError(f"cannot render into {str(dest)!r}: it already exists") from None
    except OSError as error:
        raise ImageError(f"cannot render into {str(dest)!r}: {error.strerror}") from None
    try:
        _render(tar_path, dest, allow_devices)
    except BaseException:
        force_rmtree(dest)
        raise


def _render(tar_path: Path, dest: Path, allow_devices: bool) -> None:
    checker = _MemberChecker(allow_devices=allow_devices)
    known_dirs = {dest}
    directories: list[tuple[Path, tarfile.TarInfo]] = []
    try:
        with open_decompressed(tar_path) as stream, _open_tar(stream) as tar:
            for info in tar:
                checker.check(info)
                if info.name == MANIFEST:
                    continue
                parts = info.name.split("/")[1:]
                if not parts:
                    directories.append((dest, info))
                    continue
                target = _real_parent(dest, parts[:-1], info.name, known_dirs) / parts[-1]
                try:
                    _write_member(tar, info, target, dest, known_dirs)
                except FileExistsError:
                    raise ImageError(
                        f"image member {info.name!r} clashes with an earlier one"
                    ) from None
                if info.isdir():
                    directories.append((target, info))
    except ImageError:
        raise
    except ARCHIVE_ERRORS as error:
        raise ImageError(f"cannot render {str(tar_path)!r}: {error}") from None
    checker.finish()
    for path, info in reversed(directories):
        _set_attributes(path, info, is_link=False)


def _real_parent(
    dest: Path, parts: Sequence[str], name: str, known_dirs: set[Path], *, create: bool = True
) -> Path:
    """`dest/parts`, creating missing directories; refuses a parent that is a symlink."""
    current = dest
    for index, part in enumerate(parts):
        current = current / part
        if current in known_dirs:
            continue
        inside = "/".join([ROOTFS, *parts[: index + 1]])
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            if not create:
                raise ImageError(f"image member {name!r} links into missing {inside!r}") from None
            os.mkdir(current, 0o755)
            known_dirs.add(current)
            continue
        if stat.S_ISLNK(mode):
            action = "would be written" if create else "links to a file"
            raise ImageError(f"image member {name!r} {action} through the symlink {inside!r}")
        if not stat.S_ISDIR(mode):
            raise ImageError(f"image member {name!r} is under {inside!r}, which is not a directory")
        known_dirs.add(current)
    return current


def _write_member(
    tar: tarfile.TarFile, info: tarfile.TarInfo, target: Path, dest: Path, known_dirs: set[Path]
) -> None:
    if info.isdir():
        if target not in known_dirs:
            os.mkdir(target, 0o700)
            known_dirs.add(target)
        return
    if info.isreg():
        fd = os.open(target, _O_CREATE, 0o600)
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(cast(IO[bytes], tar.extractfile(info)), out, CHUNK)
    elif info.issym():
        os.symlink(info.linkname, target)
    elif info.islnk():
        parts = info.linkname.split("/")[1:]
        source = _real_parent(dest, parts[:-1], info.name, known_dirs, create=False) / parts[-1]
        if not stat.S_ISREG(os.lstat(source).st_mode):
            raise ImageError(f"image member {info.name!r} is a hard link to a non-file")
        os.link(source, target, follow_symlinks=False)
        return  # a hard link shares the attributes of its target
    elif info.isfifo():
        os.mkfifo(target, 0o600)
    else:
        kind = stat.S_IFCHR if info.ischr() else stat.S_IFBLK
        os.mknod(target, 0o600 | kind, os.makedev(info.devmajor, info.devminor))
    _set_attributes(target, info, is_link=info.issym())


def _set_attributes(path: Path, info: tarfile.TarInfo, *, is_link: bool) -> None:
    root = _is_root()
    if root:
        os.chown(path, info.uid, info.gid, follow_symlinks=False)
    if not is_link:
        os.chmod(path, info.mode & (0o7777 if root else 0o1777))
    os.utime(path, (info.mtime, info.mtime), follow_symlinks=False)


def force_rmtree(path: Path) -> None:
    """Remove a tree even where extracted modes made directories read-only."""
    if not os.path.lexists(path):
        return
    if path.is_dir() and not path.is_symlink():
        for directory, _dirs, _files in os.walk(path):
            os.chmod(directory, 0o700)
        shutil.rmtree(path)
    else:
        path.unlink()


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
    checker = _MemberChecker(allow_devices=False)
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
    return "sha512-" + digest.hexdigest()
