"""The content-addressed image store: import verified images, find them, render their rootfs.

Layout under `PodPaths.images_dir` (ids are `sha512-<128 hex>`, the SHA-512 of the tar):

    blobs/<id>              the uncompressed image tar (mode 0600)
    manifests/<id>.json     the image's manifest, as found in the archive
    index/<id>.json         the record: name, labels, size, imported, last_used, source,
                            signed_by (key id or null), insecure, keep_modes, the statement
    trees/<id>/rootfs       the rendered filesystem; `trees/<id>/rendered` is written last
    tmp/                    temporary files and trees (same filesystem, so renames are atomic),
                            each locked (flock) by the process using it
    locks/<id>.lock         per-image flock, held while importing, rendering or removing

Invariants:
* The store is private to its owner (root on a node): `images/` and every directory in it are
  0700, made so again by `ensure_layout` if they were not, so no other user reaches a rendered
  tree, its set-user-ID files or its writable files.
* A render drops the set-ID and world-write bits of the image's files (`members.mode_of`) unless
  the image's record says `keep_modes`, which only an import with `Insecure.MODES` of an image
  holding such files sets. The first import decides: a later one that asks otherwise is told how
  to change it (remove the image, fetch it again).
* Nothing is decompressed before the signature is checked over the file as given (its
  statement's `archiveSHA256`), so an unsigned, untrusted or altered image costs a hash of the
  file and nothing more (unless `Insecure.IMAGE`, which warns loudly). Then the archive is
  decompressed into `tmp/` while hashing, stopping and removing it as soon as it passes
  `max_bytes`; every member and the manifest are checked; the statement is bound to the
  manifest's name and the image id; only then is the blob renamed into `blobs/` and the index
  written (last, so an index entry means a complete image). A refusal leaves nothing behind.
* `remove_leftovers` removes from `tmp/` only what no process holds (a killed import, download
  or render) and what is older than the grace period given and `MIN_LEFTOVER_AGE`.
* An image is listed only when both its index entry and its blob exist; removal deletes the
  blob first, then the tree, the manifest and the index (no new writes needed on a full disk).
* A tree is used only when its `rendered` marker exists; a tree without it is discarded and
  rendered again, into `tmp/` then renamed into place, under the image's lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fleetd.runtime.files import write_atomically
from fleetpod.config import Insecure
from fleetpod.errors import ImageError, StoreError, TrustError
from fleetpod.image import (
    ARCHIVE_ERRORS,
    CHUNK,
    IMAGE_ID_PREFIX,
    Inspected,
    compression_of,
    image_id,
    inspect_archive,
    open_decompressed,
)
from fleetpod.image_manifest import ImageManifest, parse_image_manifest
from fleetpod.limits import DEFAULT_MAX_IMAGE_BYTES, size_text
from fleetpod.render import force_rmtree, render_rootfs
from fleetpod.signature import Verified, bind_to_image, file_sha256, verify_archive_signature
from fleetpod.trust import TrustStore

IMAGE_ID = re.compile(rf"^{IMAGE_ID_PREFIX}[0-9a-f]{{128}}$")
MIN_ID_PREFIX_HEX = 8
RENDERED = "rendered"
PRIVATE = 0o700
MIN_LEFTOVER_AGE = timedelta(minutes=1)


@dataclass(frozen=True)
class ImageRecord:
    """One image in the store."""

    id: str
    manifest: ImageManifest
    size: int
    imported: datetime
    source: str
    signed_by: str | None
    insecure: bool = False
    keep_modes: bool = False
    last_used: datetime | None = None
    statement: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str | None:
        return self.manifest.version


def _utc_now() -> datetime:
    return datetime.now(UTC)


class ImageStore:
    """Images by id under one directory."""

    def __init__(
        self,
        images_dir: Path,
        *,
        allow_devices: bool = False,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.images_dir = Path(images_dir)
        self.allow_devices = allow_devices
        self.clock = clock
        self.blobs_dir = self.images_dir / "blobs"
        self.manifests_dir = self.images_dir / "manifests"
        self.index_dir = self.images_dir / "index"
        self.trees_dir = self.images_dir / "trees"
        self.tmp_dir = self.images_dir / "tmp"
        self.locks_dir = self.images_dir / "locks"

    def ensure_layout(self) -> None:
        """Make the store's directories, all of them private (0700), also if they were not."""
        self.images_dir.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        for directory in (
            self.images_dir,
            self.blobs_dir,
            self.manifests_dir,
            self.index_dir,
            self.trees_dir,
            self.tmp_dir,
            self.locks_dir,
        ):
            with contextlib.suppress(FileExistsError):
                directory.mkdir(mode=0o700)
            if stat.S_IMODE(directory.stat().st_mode) != PRIVATE:
                directory.chmod(PRIVATE)

    def import_archive(
        self,
        archive: Path,
        *,
        signature: bytes | None,
        trust: TrustStore,
        insecure: frozenset[Insecure],
        source: str,
        warn: Callable[[str], None],
        max_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
    ) -> ImageRecord:
        """Verify the image file `archive` and add it to the store (a no-op if present).

        The signature is checked against the file as given before it is decompressed; the
        decompressed tar may not exceed `max_bytes` (nor may the file)."""
        self.ensure_layout()
        try:
            file_size = archive.stat().st_size
            if file_size > max_bytes:
                raise ImageError(_too_large(f"image file {str(archive)!r} is", max_bytes))
            archive_sha256 = file_sha256(archive)
        except OSError as error:
            raise StoreError(f"cannot read image {str(archive)!r}: {error.strerror}") from None
        verified, doubt = _verify_archive(signature, trust, archive_sha256, insecure, source)
        with self.temporary_file("import-", ".tar") as (temporary, fd):
            image_id, size = _decompress(archive, fd, max_bytes)
            if compression_of(temporary) is not None:
                raise ImageError(f"image {str(archive)!r} is compressed twice")
            inspected = inspect_archive(temporary, allow_devices=self.allow_devices)
            manifest = inspected.manifest
            if verified is not None:
                try:
                    bind_to_image(verified, name=manifest.name, image_id=image_id)
                except TrustError as error:
                    if Insecure.IMAGE not in insecure:
                        raise
                    verified, doubt = None, error
            if verified is None:
                warn(
                    f"WARNING: SIGNATURE CHECK DISABLED (--insecure-options=image): importing "
                    f"image {manifest.name!r} ({image_id[:39]}) from {source} although: {doubt}"
                )
            keep_modes = Insecure.MODES in insecure and inspected.special_count > 0
            record = ImageRecord(
                id=image_id,
                manifest=manifest,
                size=size,
                imported=self.clock(),
                source=source,
                signed_by=None if verified is None else verified.keyid,
                insecure=verified is None,
                keep_modes=keep_modes,
                statement=None if verified is None else verified.statement,
            )
            committed = self._commit(record, temporary, inspected.manifest_bytes)
            _report_modes(committed, inspected, asked=Insecure.MODES in insecure, warn=warn)
            return committed

    def _commit(self, record: ImageRecord, blob: Path, manifest_bytes: bytes) -> ImageRecord:
        """Move the verified `blob` in and write the index last; the existing record (upgraded
        when this import is signed and it was not) if the image is already there."""
        with self._lock(record.id):
            existing = self._record_or_none(record.id)
            if existing is not None:
                if existing.signed_by is None and record.signed_by is not None:
                    existing = replace(
                        existing,
                        signed_by=record.signed_by,
                        insecure=False,
                        statement=record.statement,
                    )
                    self._write_index(existing)
                return existing
            os.chmod(blob, 0o600)
            os.replace(blob, self.blobs_dir / record.id)
            write_atomically(self.manifests_dir / f"{record.id}.json", manifest_bytes)
            self._write_index(record)
        return record

    @contextmanager
    def temporary_file(self, prefix: str, suffix: str) -> Iterator[tuple[Path, int]]:
        """A new file in `tmp/` and its descriptor, locked (so `remove_leftovers` leaves it
        alone) and removed at the end, whatever happens."""
        self.ensure_layout()
        fd, name = tempfile.mkstemp(dir=self.tmp_dir, prefix=prefix, suffix=suffix)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield Path(name), fd
        finally:
            Path(name).unlink(missing_ok=True)
            os.close(fd)

    @contextmanager
    def _temporary_directory(self, prefix: str) -> Iterator[Path]:
        """`temporary_file` for a directory; the caller renames it away or it is removed."""
        self.ensure_layout()
        path = Path(tempfile.mkdtemp(dir=self.tmp_dir, prefix=prefix))
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield path
        finally:
            force_rmtree(path)
            os.close(fd)

    def remove_leftovers(self, *, now: datetime, grace: timedelta) -> list[str]:
        """Remove what killed imports, downloads and renders left in `tmp/`: entries that no
        process holds (each holds a lock on its own) and that were last changed more than
        `grace` (and at least `MIN_LEFTOVER_AGE`) ago; their names."""
        oldest = (now - max(grace, MIN_LEFTOVER_AGE)).timestamp()
        removed: list[str] = []
        try:
            entries = sorted(os.scandir(self.tmp_dir), key=lambda entry: entry.name)
        except FileNotFoundError:
            return removed
        for entry in entries:
            path = Path(entry.path)
            try:
                if entry.stat(follow_symlinks=False).st_mtime > oldest:
                    continue
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            except OSError:  # a symlink, or something this store never makes
                force_rmtree(path)
                removed.append(entry.name)
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue  # in use
            try:
                force_rmtree(path)
            finally:
                os.close(fd)
            removed.append(entry.name)
        return removed

    def resolve(self, ref: str) -> ImageRecord:
        """The image `ref` names: a full id, a unique id prefix, `name` or `name:version`."""
        ref = ref.strip()
        if ref.startswith(IMAGE_ID_PREFIX):
            digits = ref.removeprefix(IMAGE_ID_PREFIX).lower()
            if not re.fullmatch(rf"[0-9a-f]{{{MIN_ID_PREFIX_HEX},128}}", digits):
                raise StoreError(
                    f"image id {ref!r} must be {IMAGE_ID_PREFIX} and {MIN_ID_PREFIX_HEX} to 128"
                    " hex digits"
                )
            matches = [r for r in self.list() if r.id.startswith(IMAGE_ID_PREFIX + digits)]
            if len(matches) > 1:
                listed = ", ".join(r.id[:39] for r in matches)
                raise StoreError(f"ambiguous image id {ref!r}: it matches {listed}")
        else:
            name, _, version = ref.partition(":")
            matches = [
                r for r in self.list() if r.name == name and (not version or r.version == version)
            ]
        if not matches:
            raise StoreError(f"no image matches {ref!r}")
        return max(matches, key=lambda record: record.imported)

    def list(self) -> list[ImageRecord]:
        """Every complete image, oldest import first."""
        try:
            names = sorted(os.listdir(self.index_dir))
        except FileNotFoundError:
            return []
        found = [self._record_or_none(name.removesuffix(".json")) for name in names]
        records = [record for record in found if record is not None]
        return sorted(records, key=lambda record: (record.imported, record.id))

    def remove(self, ref: str) -> ImageRecord:
        """Delete an image: blob first, then its tree, manifest and index entry."""
        record = self.resolve(ref)
        with self._lock(record.id):
            (self.blobs_dir / record.id).unlink(missing_ok=True)
            force_rmtree(self.trees_dir / record.id)
            (self.manifests_dir / f"{record.id}.json").unlink(missing_ok=True)
            (self.index_dir / f"{record.id}.json").unlink(missing_ok=True)
        return record

    def manifest_bytes(self, ref: str) -> bytes:
        """The image's manifest exactly as it was in the archive."""
        record = self.resolve(ref)
        return (self.manifests_dir / f"{record.id}.json").read_bytes()

    def export(self, ref: str, output: Path) -> None:
        """Write the image's uncompressed tar to `output` (atomically)."""
        record = self.resolve(ref)
        output.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.")
        try:
            with os.fdopen(fd, "wb") as out, open(self.blobs_dir / record.id, "rb") as blob:
                shutil.copyfileobj(blob, out, CHUNK)
            os.chmod(temporary, 0o644)
            os.replace(temporary, output)
        finally:
            Path(temporary).unlink(missing_ok=True)

    def render(self, image_id: str) -> Path:
        """The rendered rootfs of `image_id`, rendering it first if needed."""
        self._check_id(image_id)
        blob = self.blobs_dir / image_id
        if not blob.is_file():
            raise StoreError(f"image {image_id} is not in the store")
        tree = self.trees_dir / image_id
        with self._lock(image_id):
            if (tree / RENDERED).is_file() and (tree / "rootfs").is_dir():
                return tree / "rootfs"
            force_rmtree(tree)  # an incomplete tree from an interrupted render
            record = self._record_or_none(image_id)
            with self._temporary_directory("tree-") as staging:
                render_rootfs(
                    blob,
                    staging / "rootfs",
                    allow_devices=self.allow_devices,
                    keep_modes=record is not None and record.keep_modes,
                )
                os.rename(staging, tree)
            write_atomically(tree / RENDERED, image_id.encode() + b"\n")
        return tree / "rootfs"

    def trees(self) -> set[str]:
        """Ids of images with a complete rendered tree."""
        try:
            names = os.listdir(self.trees_dir)
        except FileNotFoundError:
            return set()
        return {n for n in names if IMAGE_ID.match(n) and (self.trees_dir / n / RENDERED).is_file()}

    def remove_tree(self, image_id: str) -> None:
        self._check_id(image_id)
        with self._lock(image_id):
            force_rmtree(self.trees_dir / image_id)

    def touch(self, image_id: str) -> None:
        """Record that `image_id` was used now (for image gc)."""
        self._check_id(image_id)
        with self._lock(image_id):
            record = self._record_or_none(image_id)
            if record is None:
                raise StoreError(f"image {image_id} is not in the store")
            self._write_index(replace(record, last_used=self.clock()))

    def _check_id(self, image_id: str) -> None:
        if not IMAGE_ID.match(image_id):
            raise StoreError(
                f"{image_id!r} is not a full image id ({IMAGE_ID_PREFIX} and 128 hex digits)"
            )

    @contextmanager
    def _lock(self, image_id: str) -> Iterator[None]:
        self.ensure_layout()
        fd = os.open(self.locks_dir / f"{image_id}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _record_or_none(self, image_id: str) -> ImageRecord | None:
        if not IMAGE_ID.match(image_id) or not (self.blobs_dir / image_id).is_file():
            return None
        index = self.index_dir / f"{image_id}.json"
        try:
            document = json.loads(index.read_bytes())
            manifest = parse_image_manifest((self.manifests_dir / f"{image_id}.json").read_bytes())
            last_used = document.get("last_used")
            return ImageRecord(
                id=image_id,
                manifest=manifest,
                size=int(document["size"]),
                imported=datetime.fromisoformat(document["imported"]),
                source=str(document["source"]),
                signed_by=document.get("signed_by"),
                insecure=bool(document.get("insecure", False)),
                keep_modes=document.get("keep_modes") is True,
                last_used=None if last_used is None else datetime.fromisoformat(last_used),
                statement=document.get("statement"),
            )
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, ImageError) as error:
            raise StoreError(f"image store entry {str(index)!r} is damaged: {error}") from None

    def _write_index(self, record: ImageRecord) -> None:
        document = {
            "id": record.id,
            "name": record.name,
            "labels": dict(record.manifest.labels),
            "size": record.size,
            "imported": record.imported.isoformat(),
            "last_used": None if record.last_used is None else record.last_used.isoformat(),
            "source": record.source,
            "signed_by": record.signed_by,
            "insecure": record.insecure,
            "keep_modes": record.keep_modes,
            "statement": record.statement,
        }
        data = json.dumps(document, indent=2, sort_keys=True).encode() + b"\n"
        write_atomically(self.index_dir / f"{record.id}.json", data)


def _decompress(archive: Path, fd: int, max_bytes: int) -> tuple[str, int]:
    """Decompress `archive` into the open file `fd`; its image id and uncompressed size.
    Stops at the first chunk past `max_bytes` (the caller then removes what was written)."""
    digest, size = hashlib.sha512(), 0
    try:
        with open(fd, "wb", closefd=False) as out, open_decompressed(archive) as stream:
            while chunk := stream.read(CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise ImageError(_too_large(f"image {str(archive)!r} expands to", max_bytes))
                digest.update(chunk)
                out.write(chunk)
    except ARCHIVE_ERRORS as error:
        raise ImageError(f"cannot decompress image {str(archive)!r}: {error}") from None
    return image_id(digest.hexdigest()), size


def _too_large(what: str, max_bytes: int) -> str:
    return (
        f"{what} more than {size_text(max_bytes)}, the limit for an image "
        "(raise it with --max-image-size)"
    )


def _report_modes(
    record: ImageRecord, inspected: Inspected, *, asked: bool, warn: Callable[[str], None]
) -> None:
    """Say which files lose (or keep) their set-ID and world-write bits, and a request the
    stored record does not follow."""
    if inspected.special_count == 0:
        return
    image = f"image {record.name!r} ({record.id[:39]})"
    names = ", ".join(inspected.special_names)
    more = inspected.special_count - len(inspected.special_names)
    files = f"{inspected.special_count} file(s) ({names}{f' and {more} more' if more else ''})"
    if record.keep_modes:
        warn(
            f"WARNING: SET-ID AND WORLD-WRITABLE MODES KEPT (--insecure-options=modes): {image} "
            f"has {files} with set-user-ID, set-group-ID or world-write bits"
        )
        if not asked:
            warn(
                f"{image} was imported with --insecure-options=modes and keeps those bits; to "
                f"drop them, `fleet-pod image rm {record.id[:39]}` and fetch it again"
            )
    elif asked:
        warn(
            f"{image} is already in the store with the set-ID and world-write bits of {files} "
            f"dropped; to keep them, `fleet-pod image rm {record.id[:39]}` and fetch it again "
            "with --insecure-options=modes"
        )
    else:
        warn(
            f"{image}: {files} lose their set-user-ID, set-group-ID or world-write bits when "
            "rendered (keep them with --insecure-options=modes, for an image you trust)"
        )


def unsigned_error(source: str) -> TrustError:
    """The refusal of an image that comes without a signature."""
    return TrustError(
        f"image {source} has no signature (sign it with `fleet-pod image sign --key KEY FILE`, "
        "or accept it unsigned with --insecure-options=image)"
    )


def _verify_archive(
    signature: bytes | None,
    trust: TrustStore,
    archive_sha256: str,
    insecure: frozenset[Insecure],
    source: str,
) -> tuple[Verified | None, TrustError | None]:
    """The signature checked over the file as given, before anything is decompressed: (the
    verified signature, None), or, with `Insecure.IMAGE`, (None, why it was not)."""
    try:
        if signature is None:
            raise unsigned_error(source)
        return verify_archive_signature(signature, trust, archive_sha256=archive_sha256), None
    except TrustError as error:
        if Insecure.IMAGE not in insecure:
            raise
        return None, error
