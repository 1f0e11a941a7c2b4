"""Render an image's `rootfs/` into a directory, and remove such a tree, at any depth.

Invariants:
* Every path is reached from a directory descriptor one component at a time with
  `O_NOFOLLOW | O_DIRECTORY` (the effect of `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS)`):
  a symlink or a non-directory on the way is a refusal naming the member, files are created
  with `O_EXCL | O_NOFOLLOW` in their parent's descriptor, and attributes are set through the
  new file's own descriptor (or without following a link). So nothing is ever written outside
  the destination, whatever the archive holds, and a tree deeper than PATH_MAX renders too.
* The members are checked by `MemberChecker` as they are written, and the whole tree by its
  `finish` before the directory attributes are applied; on any failure the destination is
  removed.
* Modes are `members.mode_of`: set-ID and world-write bits dropped unless `keep_modes`, set-ID
  bits and ownership always dropped when not running as root. Directory modes and times are
  applied last, deepest first, so a read-only directory does not stop its own extraction.
* `force_rmtree` walks with descriptors too, one directory open at a time, so it removes trees
  of any depth and never follows a symlink.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tarfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, cast

from fleetpod.errors import ImageError
from fleetpod.image import ARCHIVE_ERRORS, CHUNK, open_decompressed, open_tar
from fleetpod.members import ROOTFS, MemberChecker, mode_of

DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
IMPLIED_DIRECTORY_MODE = 0o755


def _is_root() -> bool:
    return os.geteuid() == 0


def render_rootfs(
    tar_path: Path, dest: Path, *, allow_devices: bool = False, keep_modes: bool = False
) -> None:
    """Extract the image's `rootfs/` into the new directory `dest` (checked member by member)."""
    try:
        dest.mkdir(mode=0o700)
    except FileExistsError:
        raise ImageError(f"cannot render into {str(dest)!r}: it already exists") from None
    except OSError as error:
        raise ImageError(f"cannot render into {str(dest)!r}: {error.strerror}") from None
    try:
        root_fd = os.open(dest, DIRECTORY_FLAGS)
        try:
            _render(tar_path, _Tree(root_fd), allow_devices, keep_modes)
        finally:
            os.close(root_fd)
    except BaseException:
        force_rmtree(dest)
        raise


class _Tree:
    """The directories of the tree being rendered, reached from its root descriptor.

    Directories are named by their path under rootfs/ (`""` is rootfs itself). The tree keeps
    one directory open, the last one asked for, and moves from it to the next: down from it when
    the next is below, up with `..` when the next is above and that is shorter than starting
    again from the root. Over an archive, that costs no more system calls than its names have
    components, and names are compared as strings, not component by component."""

    def __init__(self, root_fd: int) -> None:
        self.root_fd = root_fd
        self.name = ""
        self.fd = root_fd

    def close(self) -> None:
        if self.fd != self.root_fd:
            os.close(self.fd)
        self.fd, self.name = self.root_fd, ""

    def directory(self, name: str, member: str, *, create: bool = True) -> int:
        """The descriptor of directory `name` (made, when missing and `create`)."""
        if name == self.name:
            return self.fd
        if not self.name or name.startswith(self.name + "/"):
            below = name[len(self.name) + 1 :] if self.name else name
            self._descend(below.split("/"), member, create=create)
            return self.fd
        if not name or self.name.startswith(name + "/"):
            up = self.name.count("/", len(name)) + (0 if name else 1)
            if up <= _depth(name):
                for _ in range(up):
                    self._step("..", member, create=False)  # a directory we came through
                self.name = name
                return self.fd
        self.close()
        if name:
            self._descend(name.split("/"), member, create=create)
        return self.fd

    def _descend(self, parts: Sequence[str], member: str, *, create: bool) -> None:
        for index, part in enumerate(parts):
            try:
                self._step(part, member, create=create)
            except _Refused as refused:
                inside = "/".join(
                    [ROOTFS, *([self.name] if self.name else []), *parts[: index + 1]]
                )
                raise ImageError(refused.message.format(member=member, inside=inside)) from None
        self.name = "/".join([self.name, *parts]) if self.name else "/".join(parts)

    def _step(self, name: str, member: str, *, create: bool = True) -> None:
        try:
            fd = os.open(name, DIRECTORY_FLAGS, dir_fd=self.fd)
        except FileNotFoundError:
            if not create:
                raise _Refused("image member {member!r} links into missing {inside!r}") from None
            os.mkdir(name, 0o700, dir_fd=self.fd)
            fd = os.open(name, DIRECTORY_FLAGS, dir_fd=self.fd)
            os.fchmod(fd, IMPLIED_DIRECTORY_MODE)
        except OSError as error:
            if error.errno not in (errno.ENOTDIR, errno.ELOOP):
                raise
            if stat.S_ISLNK(os.stat(name, dir_fd=self.fd, follow_symlinks=False).st_mode):
                action = "would be written" if create else "links to a file"
                raise _Refused(
                    f"image member {{member!r}} {action} through the symlink {{inside!r}}"
                ) from None
            raise _Refused(
                "image member {member!r} is under {inside!r}, which is not a directory"
            ) from None
        if self.fd != self.root_fd:
            os.close(self.fd)
        self.fd = fd


class _Refused(Exception):
    """A step the tree refuses; `message` has `{member}` and `{inside}` to fill in."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _depth(name: str) -> int:
    return name.count("/") + 1 if name else 0


def _under_rootfs(name: str) -> str:
    """`rootfs/a/b` -> `a/b`; `rootfs` -> ``."""
    return name.partition("/")[2]


def _render(tar_path: Path, tree: _Tree, allow_devices: bool, keep_modes: bool) -> None:
    checker = MemberChecker(allow_devices=allow_devices)
    directories: list[tarfile.TarInfo] = []
    try:
        with open_decompressed(tar_path) as stream, open_tar(stream) as tar:
            for info in tar:
                checker.check(info)
                if info.name.partition("/")[0] != ROOTFS:
                    continue  # the manifest
                if info.isdir():
                    _make_directory(tree, info)
                    directories.append(info)
                    continue
                parent_name, _, leaf = _under_rootfs(info.name).rpartition("/")
                parent = tree.directory(parent_name, info.name)
                try:
                    _write_member(tar, info, parent, leaf, tree, keep_modes=keep_modes)
                except FileExistsError:
                    raise ImageError(
                        f"image member {info.name!r} clashes with an earlier one"
                    ) from None
        checker.finish()
        for info in reversed(directories):
            with _opened_directory(tree, info) as fd:
                _set_attributes(fd, info, keep_modes)
    except ImageError:
        raise
    except ARCHIVE_ERRORS as error:
        raise ImageError(f"cannot render {str(tar_path)!r}: {error}") from None
    finally:
        tree.close()


def _make_directory(tree: _Tree, info: tarfile.TarInfo) -> None:
    name = _under_rootfs(info.name)
    if not name:
        return  # rootfs itself: the destination
    parent_name, _, leaf = name.rpartition("/")
    parent = tree.directory(parent_name, info.name)
    with contextlib.suppress(FileExistsError):  # made earlier for a member under it
        os.mkdir(leaf, 0o700, dir_fd=parent)
    tree.directory(name, info.name)  # refuses a symlink or a file in its place


@contextmanager
def _opened_directory(tree: _Tree, info: tarfile.TarInfo) -> Iterator[int]:
    name = _under_rootfs(info.name)
    if not name:
        yield tree.root_fd
        return
    parent_name, _, leaf = name.rpartition("/")
    parent = tree.directory(parent_name, info.name, create=False)
    fd = os.open(leaf, DIRECTORY_FLAGS, dir_fd=parent)
    try:
        yield fd
    finally:
        os.close(fd)


def _write_member(
    tar: tarfile.TarFile,
    info: tarfile.TarInfo,
    parent: int,
    name: str,
    tree: _Tree,
    *,
    keep_modes: bool,
) -> None:
    if info.isreg():
        fd = os.open(name, _O_CREATE, 0o600, dir_fd=parent)
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(cast(IO[bytes], tar.extractfile(info)), out, CHUNK)
            out.flush()
            _set_attributes(fd, info, keep_modes)
        return
    if info.islnk():
        _hard_link(info, name, tree)
        return  # a hard link shares the attributes of its target
    if info.issym():
        os.symlink(info.linkname, name, dir_fd=parent)
    elif info.isfifo():
        os.mkfifo(name, 0o600, dir_fd=parent)
    else:
        kind = stat.S_IFCHR if info.ischr() else stat.S_IFBLK
        os.mknod(name, 0o600 | kind, os.makedev(info.devmajor, info.devminor), dir_fd=parent)
    if _is_root():
        os.chown(name, info.uid, info.gid, dir_fd=parent, follow_symlinks=False)
    if not info.issym():  # a fifo or a device node just made here, not a link
        os.chmod(name, mode_of(info, keep_modes=keep_modes, root=_is_root()), dir_fd=parent)
    os.utime(name, (info.mtime, info.mtime), dir_fd=parent, follow_symlinks=False)


def _hard_link(info: tarfile.TarInfo, name: str, tree: _Tree) -> None:
    source_parent, _, source = _under_rootfs(info.linkname).rpartition("/")
    target_parent = tree.name
    source_fd = os.dup(tree.directory(source_parent, info.name, create=False))
    try:
        if not stat.S_ISREG(os.stat(source, dir_fd=source_fd, follow_symlinks=False).st_mode):
            raise ImageError(f"image member {info.name!r} is a hard link to a non-file")
        parent = tree.directory(target_parent, info.name)
        os.link(
            source,
            name,
            src_dir_fd=source_fd,
            dst_dir_fd=parent,
            follow_symlinks=False,
        )
    finally:
        os.close(source_fd)


def _set_attributes(fd: int, info: tarfile.TarInfo, keep_modes: bool) -> None:
    root = _is_root()
    if root:
        os.fchown(fd, info.uid, info.gid)
    os.fchmod(fd, mode_of(info, keep_modes=keep_modes, root=root))
    os.utime(fd, (info.mtime, info.mtime))


def force_rmtree(path: Path) -> None:
    """Remove `path` and all under it, at any depth, making directories writable on the way
    when not root; a symlink is removed, never followed."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(mode):
        path.unlink()
        return
    parent_fd = os.open(path.parent, DIRECTORY_FLAGS)
    try:
        _remove_directory(parent_fd, path.name)
    finally:
        os.close(parent_fd)


def _remove_directory(parent_fd: int, name: str) -> None:
    fd = _open_to_remove(parent_fd, name)
    stack: list[tuple[str, list[str]]] = [(name, _remove_entries(fd))]
    try:
        while stack:
            current, subdirectories = stack[-1]
            if subdirectories:
                child = subdirectories.pop()
                child_fd = _open_to_remove(fd, child)
                os.close(fd)
                fd = child_fd
                stack.append((child, _remove_entries(fd)))
                continue
            stack.pop()
            if stack:
                up = os.open("..", DIRECTORY_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = up
                os.rmdir(current, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent_fd)


def _open_to_remove(parent_fd: int, name: str) -> int:
    """`name` opened without following a link, and made writable (and searchable) for us."""
    if not _is_root():
        with contextlib.suppress(OSError):  # not ours: rmdir will say why
            os.chmod(name, 0o700, dir_fd=parent_fd)  # a directory: scandir or lstat said so
    return os.open(name, DIRECTORY_FLAGS, dir_fd=parent_fd)


def _remove_entries(fd: int) -> list[str]:
    """Unlink everything in directory `fd` but its subdirectories; their names."""
    subdirectories: list[str] = []
    with os.scandir(fd) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                subdirectories.append(entry.name)
            else:
                os.unlink(entry.name, dir_fd=fd)
    return subdirectories
