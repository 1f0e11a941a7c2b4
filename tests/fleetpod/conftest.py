"""fleet-pod fixtures: a tiny rootfs, a key pair, built and signed images, the stores, and a
factory for hand-made (often malicious) image archives.

Fixtures: `rootfs_dir`, `key_pair`, `other_key_pair`, `image_file` (example.com/app 1.0,
gzip), `signed_image` (with `.sig` by `key_pair`), `pod_paths`, `pod_settings`, `trust_store`
(empty), `trusted_trust_store` (`key_pair` trusted for `example.com/app`), `image_store`,
`make_archive` (see `ArchiveFactory`), `warnings_seen` + `warn`, `pod_address_dir` (every test's
pod-address handoff directory, never the machine's); `nested_directories` and
`open_at_depth` for very deep trees, which go in `deep_tmp_path`.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import tarfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetpod.config import PodPaths, PodSettings
from fleetpod.image import build_image
from fleetpod.keys import generate_key_pair, load_private_key
from fleetpod.signature import sign_image
from fleetpod.store import ImageStore
from fleetpod.trust import TrustStore
from fleetpod.unit_address import ADDRESS_DIR_ENV

IMAGE_NAME = "example.com/app"
IMAGE_VERSION = "1.0"


def manifest_document(**overrides: Any) -> dict[str, Any]:
    """A valid appc image manifest as a dict; `overrides` replace top-level fields."""
    document: dict[str, Any] = {
        "acKind": "ImageManifest",
        "acVersion": "0.8.11",
        "name": IMAGE_NAME,
        "labels": [
            {"name": "version", "value": IMAGE_VERSION},
            {"name": "os", "value": "linux"},
            {"name": "arch", "value": "amd64"},
        ],
        "app": {"exec": ["/bin/hello"], "user": "0", "group": "0"},
    }
    document.update(overrides)
    return document


@dataclass(frozen=True)
class Entry:
    """One member of a hand-made archive."""

    name: str
    kind: Literal["file", "dir", "symlink", "hardlink", "fifo", "chr"] = "file"
    data: bytes = b""
    target: str = ""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0


def write_archive(
    path: Path,
    entries: Sequence[Entry],
    *,
    compression: Literal["none", "gzip"] = "none",
) -> Path:
    """Write `entries`, in order and exactly as given, as a tar at `path`."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.name)
            info.mode, info.uid, info.gid, info.mtime = entry.mode, entry.uid, entry.gid, 1_000_000
            info.type = {
                "file": tarfile.REGTYPE,
                "dir": tarfile.DIRTYPE,
                "symlink": tarfile.SYMTYPE,
                "hardlink": tarfile.LNKTYPE,
                "fifo": tarfile.FIFOTYPE,
                "chr": tarfile.CHRTYPE,
            }[entry.kind]
            info.linkname = entry.target
            if entry.kind == "file":
                info.size = len(entry.data)
                tar.addfile(info, io.BytesIO(entry.data))
            else:
                tar.addfile(info)
    data = buffer.getvalue()
    path.write_bytes(gzip.compress(data, mtime=0) if compression == "gzip" else data)
    return path


ArchiveFactory = Callable[..., Path]
BOMB_CHUNK = 1 << 20


def write_gzip_bomb(path: Path, expanded_bytes: int) -> Path:
    """A gzip image whose `rootfs/zeros` expands to `expanded_bytes` (a multiple of 1 MiB):
    the manifest and rootfs/, then one gzip member per MiB of zeros, each about 1 KiB. A 10 GiB
    bomb is a 10 MB file, written in no time."""
    head = io.BytesIO()
    with tarfile.open(fileobj=head, mode="w", format=tarfile.PAX_FORMAT) as tar:
        manifest = json.dumps(manifest_document()).encode()
        info = tarfile.TarInfo("manifest")
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))
        rootfs = tarfile.TarInfo("rootfs")
        rootfs.type, rootfs.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(rootfs)
        zeros = tarfile.TarInfo("rootfs/zeros")
        zeros.size = expanded_bytes
        tar.addfile(zeros)  # the header only: the data follows as separate gzip members
        end = head.tell()
    header = head.getvalue()[:end]
    member = gzip.compress(bytes(BOMB_CHUNK), compresslevel=9, mtime=0)
    with open(path, "wb") as out:
        out.write(gzip.compress(header, mtime=0))
        for _ in range(expanded_bytes // BOMB_CHUNK):
            out.write(member)
    return path


def nested_directories(depth: int, name: str = "d") -> list[Entry]:
    """`rootfs/d`, `rootfs/d/d`, ... `depth` directories each inside the one before."""
    entries, path = [], "rootfs"
    for _ in range(depth):
        path += "/" + name
        entries.append(Entry(path, kind="dir", mode=0o755))
    return entries


def open_at_depth(root: Path, depth: int, name: str = "d") -> int:
    """A descriptor of `root/d/d/...` (`depth` levels), opened one level at a time (the whole
    path may be longer than PATH_MAX), never through a symlink."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(root, flags)
    for _ in range(depth):
        child = os.open(name, flags, dir_fd=fd)
        os.close(fd)
        fd = child
    return fd


@pytest.fixture(autouse=True)
def pod_address_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where fleet-pod hands pod addresses to fleetd in this test (not /run/fleet/...)."""
    directory = tmp_path / "pod-addresses"
    monkeypatch.setenv(ADDRESS_DIR_ENV, str(directory))
    return directory


@pytest.fixture
def make_archive(tmp_path: Path) -> ArchiveFactory:
    """`make_archive(*entries, manifest=..., base=True, name="crafted.aci")`: a valid image
    (manifest + rootfs/ + rootfs/bin/hello) followed by `entries`; `base=False` writes only
    `entries`; `manifest` (bytes or dict) replaces the manifest."""

    def make(
        *entries: Entry,
        manifest: bytes | dict[str, Any] | None = None,
        base: bool = True,
        name: str = "crafted.aci",
        compression: Literal["none", "gzip"] = "none",
    ) -> Path:
        if manifest is None:
            manifest = manifest_document()
        manifest_bytes = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
        members = list(entries)
        if base:
            members = [
                Entry("manifest", data=manifest_bytes),
                Entry("rootfs", kind="dir", mode=0o755),
                Entry("rootfs/bin", kind="dir", mode=0o755),
                Entry("rootfs/bin/hello", data=b"#!/bin/sh\necho hello\n", mode=0o755),
                *members,
            ]
        return write_archive(tmp_path / name, members, compression=compression)

    return make


@pytest.fixture
def deep_tmp_path(tmp_path: Path) -> Iterator[Path]:
    """`tmp_path`, removed with `rm -rf` at teardown whatever happened: pytest's own cleanup of
    old temporary directories recurses and cannot remove a tree thousands of levels deep."""
    yield tmp_path
    subprocess.run(["rm", "-rf", "--", str(tmp_path)], check=False)


@pytest.fixture
def rootfs_dir(tmp_path: Path) -> Path:
    """bin/hello (0755), etc/hostname, etc/hostname.hard (hard link), etc/motd -> hostname,
    an empty var/empty (0700)."""
    root = tmp_path / "rootfs-src"
    (root / "bin").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "var" / "empty").mkdir(parents=True)
    hello = root / "bin" / "hello"
    hello.write_text("#!/bin/sh\necho hello\n")
    hello.chmod(0o755)
    (root / "etc" / "hostname").write_text("pod\n")
    os.link(root / "etc" / "hostname", root / "etc" / "hostname.hard")
    (root / "etc" / "motd").symlink_to("hostname")
    (root / "var" / "empty").chmod(0o700)
    return root


@dataclass(frozen=True)
class KeyPair:
    private: Ed25519PrivateKey
    private_path: Path
    public_path: Path
    keyid: str


def _key_pair(directory: Path, name: str) -> KeyPair:
    directory.mkdir(parents=True, exist_ok=True)
    private_path, public_path = directory / f"{name}.key", directory / f"{name}.pub"
    keyid = generate_key_pair(private_path, public_path, comment=name)
    return KeyPair(load_private_key(private_path), private_path, public_path, keyid)


@pytest.fixture
def key_pair(tmp_path: Path) -> KeyPair:
    return _key_pair(tmp_path / "keys", "publisher")


@pytest.fixture
def other_key_pair(tmp_path: Path) -> KeyPair:
    return _key_pair(tmp_path / "keys", "stranger")


@pytest.fixture
def image_file(tmp_path: Path, rootfs_dir: Path) -> Path:
    output = tmp_path / "images-out" / "app-1.0.aci"
    build_image(rootfs_dir, output, name=IMAGE_NAME, version=IMAGE_VERSION, exec_=["/bin/hello"])
    return output


@pytest.fixture
def signed_image(image_file: Path, key_pair: KeyPair) -> Path:
    sign_image(image_file, key_pair.private)
    return image_file


@pytest.fixture
def pod_paths(tmp_path: Path) -> PodPaths:
    return PodPaths(data_dir=tmp_path / "data", config_dir=tmp_path / "config")


@pytest.fixture
def pod_settings(pod_paths: PodPaths) -> PodSettings:
    return PodSettings(paths=pod_paths)


@pytest.fixture
def trust_store(pod_paths: PodPaths) -> TrustStore:
    return TrustStore(pod_paths.trust_dir)


@pytest.fixture
def trusted_trust_store(trust_store: TrustStore, key_pair: KeyPair) -> TrustStore:
    trust_store.add(key_pair.public_path.read_bytes(), prefix=IMAGE_NAME, source="test key")
    return trust_store


@pytest.fixture
def image_store(pod_paths: PodPaths) -> ImageStore:
    return ImageStore(pod_paths.images_dir)


@pytest.fixture
def warnings_seen() -> list[str]:
    return []


@pytest.fixture
def warn(warnings_seen: list[str]) -> Callable[[str], None]:
    return warnings_seen.append
