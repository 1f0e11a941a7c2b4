"""What an image archive may hold: every member checked by name and type, in one pass.

An image tar holds `manifest` (a regular file) and `rootfs/` (the filesystem). `MemberChecker`
sees the members in archive order and keeps the tree they make (a node per name, and one per
directory a name implies), so each member is checked against its parent alone: the cost is
linear in the size of the archive's headers, whatever the depth of the tree.

Refused, each as an `ImageError` naming the member and the reason:
* names: empty, with a NUL byte, absolute, with `.` / `..` / empty components, outside
  `manifest` and `rootfs/`, twice in the archive, a non-directory where an earlier member made a
  directory, anything under a member that is not a directory (a symlink included);
* symlinks: an empty, NUL-holding, absolute or longer-than-`MAX_LINK_TARGET` target, a target
  that climbs above `rootfs/` as written, and (checked by `finish`, once every member is known)
  a target that climbs above `rootfs/` once the symlinks it passes through are followed, as the
  kernel follows them (`rootfs/a/L -> ..` makes `a/L/a/L/../..` leave the root). A target that
  reaches a missing name, a file used as a directory, a loop, or symlinks nested more than
  `MAX_LINK_HOPS` deep resolves to nothing and is kept: the kernel stops there too (ENOENT,
  ENOTDIR, ELOOP). Each symlink is resolved once (later ones reuse the result), so this is
  linear too;
* hard links to anything but an earlier regular file under `rootfs/`;
* device nodes and fifos unless `allow_devices` and running as root; every other member type.

Modes (`mode_of`, applied by the render): unless the image is trusted to keep them, a member that
is not a directory loses its set-user-ID, set-group-ID and world-write bits, and a directory its
set-user-ID bit and, when it is not sticky, its world-write bit (a sticky world-writable
directory such as `/tmp` stays usable; set-group-ID on a directory only makes new entries
inherit its group). Set-ID bits are always dropped when not running as root.
"""

from __future__ import annotations

import os
import stat
import tarfile
from typing import Literal

from fleetpod.errors import ImageError

MANIFEST = "manifest"
ROOTFS = "rootfs"
MAX_LINK_TARGET = 4095  # PATH_MAX less its NUL: the longest target the kernel stores
MAX_LINK_HOPS = 40  # the kernel's MAXSYMLINKS: a longer chain fails with ELOOP anyway

SPECIAL_FILE_BITS = stat.S_ISUID | stat.S_ISGID | stat.S_IWOTH

Kind = Literal["dir", "file", "symlink", "other"]


def mode_of(info: tarfile.TarInfo, *, keep_modes: bool, root: bool) -> int:
    """The permission bits a rendered member gets (see the module's docstring)."""
    mode = info.mode & 0o7777
    if not root:
        mode &= ~(stat.S_ISUID | stat.S_ISGID)
    if keep_modes:
        return mode
    if not info.isdir():
        return mode & ~SPECIAL_FILE_BITS
    if not mode & stat.S_ISVTX:
        mode &= ~stat.S_IWOTH
    return mode & ~stat.S_ISUID


def special_mode(info: tarfile.TarInfo) -> bool:
    """Whether a render drops bits of this member unless the image is trusted to keep them."""
    if info.issym() or info.islnk():
        return False
    return mode_of(info, keep_modes=False, root=True) != info.mode & 0o7777


class _Node:
    """One name in the archive's tree; `explicit` when a member (not only a path) names it."""

    __slots__ = ("children", "explicit", "kind", "name", "parent", "target")

    def __init__(self, name: str, kind: Kind, parent: _Node | None, *, explicit: bool) -> None:
        self.name = name
        self.kind: Kind = kind
        self.parent = parent
        self.explicit = explicit
        self.target = ""
        self.children: dict[str, _Node] = {}

    def path(self) -> str:
        parts: list[str] = []
        node: _Node | None = self
        while node is not None and node.parent is not None:
            parts.append(node.name)
            node = node.parent
        return "/".join(reversed(parts))


class MemberChecker:
    """Validates members in archive order (`check`), then the tree as a whole (`finish`)."""

    def __init__(self, *, allow_devices: bool) -> None:
        self.allow_devices = allow_devices
        self.top = _Node("", "dir", None, explicit=True)
        self._symlinks: list[_Node] = []
        self._recent: tuple[str, _Node] | None = None  # the last directory looked up, by name
        self._resolved: dict[_Node, _Node | None] = {}
        self._resolving: set[_Node] = set()

    def check(self, info: tarfile.TarInfo) -> None:
        problem = self._problem(info)
        if problem is not None:
            raise ImageError(f"image member {info.name!r} {problem}")

    def finish(self) -> None:
        manifest = self.top.children.get(MANIFEST)
        if manifest is None or manifest.kind != "file":
            raise ImageError("image archive has no 'manifest' file")
        rootfs = self.top.children.get(ROOTFS)
        if rootfs is None or not rootfs.explicit:
            raise ImageError("image archive has no 'rootfs/' directory")
        for link in self._symlinks:
            try:
                self._resolve(link, rootfs, hops=0)
            except _TooDeep:
                self._resolved[link] = None  # nested beyond MAX_LINK_HOPS: ELOOP

    def _problem(self, info: tarfile.TarInfo) -> str | None:
        problem = name_problem(info.name, "")
        if problem is not None:
            return problem
        parent_name, _, leaf = info.name.rpartition("/")
        if not parent_name:
            if leaf == MANIFEST and not info.isreg():
                return "must be a regular file"
            if leaf == ROOTFS and not info.isdir():
                return "must be a directory"
        elif info.name.startswith(MANIFEST + "/"):
            return "is outside 'manifest' and 'rootfs/'"
        parent = self._directory(parent_name)
        if isinstance(parent, str):
            return parent
        assert parent is not None  # made when missing
        existing = parent.children.get(leaf)
        if existing is not None:
            if existing.explicit:
                return "appears twice in the archive"
            if not info.isdir():
                return "clashes with the directory made for the members under it"
            existing.explicit = True
            self._recent = (info.name, existing)
            return None
        problem, kind = self._type_problem(info)
        if problem is not None:
            return problem
        node = _Node(leaf, kind, parent, explicit=True)
        parent.children[leaf] = node
        if kind == "dir":
            self._recent = (info.name, node)
        elif kind == "symlink":
            node.target = info.linkname
            self._symlinks.append(node)
        return None

    def _type_problem(self, info: tarfile.TarInfo) -> tuple[str | None, Kind]:
        if info.isdir():
            return None, "dir"
        if info.isreg() and not info.issparse():
            return None, "file"
        if info.issym():
            return symlink_problem(info.name.count("/") - 1, info.linkname), "symlink"
        if info.islnk():
            return self._hard_link_problem(info.linkname), "other"
        if info.ischr() or info.isblk() or info.isfifo():
            if self.allow_devices and os.geteuid() == 0:
                return None, "other"
            return "is a device node or fifo (allowed only as root with devices enabled)", "other"
        return "has an unsupported member type", "other"

    def _hard_link_problem(self, target: str) -> str | None:
        problem = name_problem(target, "is a hard link that ")
        if problem is not None:
            return problem
        parent_name, _, leaf = target.rpartition("/")
        parent = self._directory(parent_name, create=False) if parent_name else None
        source = parent.children.get(leaf) if isinstance(parent, _Node) else None
        if not target.startswith(ROOTFS + "/") or source is None or source.kind != "file":
            return f"is a hard link to {target!r}, not to an earlier file in rootfs/"
        return None

    def _directory(self, name: str, *, create: bool = True) -> _Node | str | None:
        """The directory node `name` (made, implicitly, when missing and `create`), or the
        problem that stops it being one (None when missing and not `create`)."""
        if self._recent is not None and self._recent[0] == name:
            return self._recent[1]
        node = self.top
        parts = name.split("/") if name else []
        for depth, part in enumerate(parts):
            child = node.children.get(part)
            if child is None:
                if not create:
                    return None
                child = _Node(part, "dir", node, explicit=False)
                node.children[part] = child
            elif child.kind != "dir":
                return f"is under {'/'.join(parts[: depth + 1])!r}, which is not a directory"
            node = child
        if create:
            self._recent = (name, node)
        return node

    def _resolve(self, link: _Node, rootfs: _Node, *, hops: int) -> _Node | None:
        """The node `link` leads to, following symlinks; None where the kernel would stop."""
        if link in self._resolved:
            return self._resolved[link]
        if link in self._resolving:
            return None  # a loop: ELOOP
        if hops > MAX_LINK_HOPS:
            raise _TooDeep  # nothing is remembered for the links on the way: only for the first
        self._resolving.add(link)
        try:
            node = self._walk(link, rootfs, hops)
        finally:
            self._resolving.discard(link)
        self._resolved[link] = node
        return node

    def _walk(self, link: _Node, rootfs: _Node, hops: int) -> _Node | None:
        node = link.parent
        assert node is not None
        parts = [part for part in link.target.split("/") if part not in ("", ".")]
        for index, part in enumerate(parts):
            if part == "..":
                if node is rootfs:
                    raise ImageError(
                        f"image member {link.path()!r} is a symlink to {link.target!r}, which "
                        "leaves rootfs/ through the symlinks on its way"
                    )
                assert node.parent is not None
                node = node.parent
                continue
            child = node.children.get(part)
            if child is not None and child.kind == "symlink":
                child = self._resolve(child, rootfs, hops=hops + 1)
            if child is None or (child.kind != "dir" and index < len(parts) - 1):
                return None  # missing, a loop, or a file used as a directory
            node = child
        return node


class _TooDeep(Exception):
    """Symlinks nested beyond `MAX_LINK_HOPS` while resolving one link."""


def name_problem(name: str, prefix: str) -> str | None:
    """Why `name` cannot be a member's name (or a hard link's target), or None (string
    searches, not a split: this runs once per member on names of any length)."""
    if not name or "\0" in name:
        return f"{prefix}has an empty name or a NUL byte in it"
    if name.startswith("/"):
        return f"{prefix}has an absolute name"
    framed = f"/{name}/"
    if "/../" in framed:
        return f"{prefix}escapes the root ('..')"
    if "//" in framed or "/./" in framed:
        return f"{prefix}is not a normalised path"
    if name.partition("/")[0] not in (MANIFEST, ROOTFS):
        return f"{prefix}is outside 'manifest' and 'rootfs/'"
    return None


def symlink_problem(depth: int, target: str) -> str | None:
    """Why a symlink `depth` directories below rootfs/ may not point to `target`, as written
    (without following other symlinks; `MemberChecker.finish` does that)."""
    if not target or "\0" in target:
        return "is a symlink with an empty target or a NUL byte in it"
    if target.startswith("/"):
        return f"is a symlink to the absolute path {target!r}"
    if len(target.encode("utf-8", "surrogateescape")) > MAX_LINK_TARGET:
        return f"is a symlink with a target longer than {MAX_LINK_TARGET} bytes"
    for part in target.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return f"is a symlink to {target!r}, which escapes the root ('..')"
        elif part not in ("", "."):
            depth += 1
    return None
