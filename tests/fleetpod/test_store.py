"""The image store: verified imports, refusals that leave nothing, lookups, removal, render."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fleetpod import store as store_module
from fleetpod.config import Insecure
from fleetpod.errors import ImageError, PodError, StoreError, TrustError
from fleetpod.image import build_image, image_id_of
from fleetpod.render import render_rootfs
from fleetpod.signature import STATEMENT_TYPE, file_sha256, make_envelope, sign_image
from fleetpod.store import ImageRecord, ImageStore
from fleetpod.trust import TrustStore
from tests.fleetpod.conftest import (
    IMAGE_NAME,
    ArchiveFactory,
    Entry,
    KeyPair,
    manifest_document,
    nested_directories,
    open_at_depth,
    write_gzip_bomb,
)

NO_INSECURE: frozenset[Insecure] = frozenset()
INSECURE_IMAGE = frozenset({Insecure.IMAGE})


def signature_of(path: Path) -> bytes:
    return path.with_name(path.name + ".sig").read_bytes()


def envelope_for(path: Path, key: KeyPair, name: str = IMAGE_NAME) -> bytes:
    """A valid signature of the file `path` even if the archive itself is malformed."""
    statement = {
        "type": STATEMENT_TYPE,
        "name": name,
        "imageID": image_id_of(path),
        "archiveSHA256": file_sha256(path),
        "labels": {},
        "created": "2024-01-01T00:00:00Z",
    }
    return make_envelope(statement, key.private)


def store_files(store: ImageStore) -> list[str]:
    """Everything under the store's content directories (locks are allowed to remain)."""
    found: list[str] = []
    for directory in (
        store.blobs_dir,
        store.manifests_dir,
        store.index_dir,
        store.trees_dir,
        store.tmp_dir,
    ):
        if directory.exists():
            found += [str(p) for p in directory.rglob("*")]
    return found


def import_signed(
    store: ImageStore, image: Path, trust: TrustStore, **overrides: Any
) -> ImageRecord:
    arguments: dict[str, Any] = {
        "trust": trust,
        "insecure": NO_INSECURE,
        "source": str(image),
        "warn": pytest.fail,
    }
    arguments.update(overrides)
    if "signature" not in arguments:
        arguments["signature"] = signature_of(image)
    return store.import_archive(image, **arguments)


def test_a_signed_trusted_image_is_imported_with_its_record(
    image_store: ImageStore, signed_image: Path, trusted_trust_store: TrustStore, key_pair: KeyPair
) -> None:
    record = import_signed(image_store, signed_image, trusted_trust_store)

    assert record.id == image_id_of(signed_image)
    assert (record.name, record.version) == (IMAGE_NAME, "1.0")
    assert record.signed_by == key_pair.keyid
    assert record.insecure is False
    assert record.source == str(signed_image)
    assert record.statement is not None
    assert record.statement["imageID"] == record.id
    blob = image_store.blobs_dir / record.id
    assert "sha512-" + hashlib.sha512(blob.read_bytes()).hexdigest() == record.id
    assert record.size == blob.stat().st_size
    index = json.loads((image_store.index_dir / f"{record.id}.json").read_bytes())
    assert index["signed_by"] == key_pair.keyid
    assert index["labels"]["version"] == "1.0"
    assert image_store.list() == [record]
    assert os.listdir(image_store.tmp_dir) == []


def test_importing_the_same_image_twice_returns_the_first_record(
    image_store: ImageStore, signed_image: Path, trusted_trust_store: TrustStore
) -> None:
    first = import_signed(image_store, signed_image, trusted_trust_store)
    second = import_signed(image_store, signed_image, trusted_trust_store, source="again")
    assert second == first
    assert os.listdir(image_store.blobs_dir) == [first.id]


def test_a_signed_import_upgrades_an_image_imported_insecurely(
    image_store: ImageStore,
    signed_image: Path,
    trusted_trust_store: TrustStore,
    key_pair: KeyPair,
    warn: Callable[[str], None],
) -> None:
    unsigned = import_signed(
        image_store,
        signed_image,
        trusted_trust_store,
        signature=None,
        insecure=INSECURE_IMAGE,
        warn=warn,
    )
    assert (unsigned.signed_by, unsigned.insecure) == (None, True)
    signed = import_signed(image_store, signed_image, trusted_trust_store)
    assert (signed.signed_by, signed.insecure) == (key_pair.keyid, False)
    assert image_store.resolve(signed.id).signed_by == key_pair.keyid


@pytest.fixture
def tampered_image(tmp_path: Path, signed_image: Path, rootfs_dir: Path, key_pair: KeyPair) -> Path:
    """Another build of example.com/app next to the first build's signature."""
    (rootfs_dir / "bin" / "hello").write_text("#!/bin/sh\necho pwned\n")
    other = tmp_path / "tampered" / signed_image.name
    build_image(rootfs_dir, other, name=IMAGE_NAME, version="1.0", exec_=["/bin/hello"])
    shutil.copy(signed_image.with_name(signed_image.name + ".sig"), other.parent)
    return other


def _unsigned(image: Path, key: KeyPair, other: KeyPair, trust: TrustStore) -> tuple[Path, None]:
    trust.add(key.public_path.read_bytes(), prefix=IMAGE_NAME, source="k")
    return image, None


def _untrusted(image: Path, key: KeyPair, other: KeyPair, trust: TrustStore) -> tuple[Path, bytes]:
    trust.add(key.public_path.read_bytes(), prefix=IMAGE_NAME, source="k")
    sign_image(image, other.private)
    return image, signature_of(image)


def _other_prefix(
    image: Path, key: KeyPair, other: KeyPair, trust: TrustStore
) -> tuple[Path, bytes]:
    trust.add(key.public_path.read_bytes(), prefix="example.com/application", source="k")
    trust.add(key.public_path.read_bytes(), prefix="example.org", source="k")
    sign_image(image, key.private)
    return image, signature_of(image)


def _crafted(*entries: Entry, manifest: Any = None) -> Callable[..., tuple[Path, bytes]]:
    def prepare(
        make_archive: ArchiveFactory, key: KeyPair, trust: TrustStore
    ) -> tuple[Path, bytes]:
        trust.add(key.public_path.read_bytes(), prefix=None, source="k")
        archive = make_archive(*entries, manifest=manifest, compression="gzip")
        return archive, envelope_for(archive, key)

    return prepare


def _no_name() -> dict[str, Any]:
    document = manifest_document()
    del document["name"]
    return document


REFUSALS: list[tuple[str, str, Any, str]] = [
    ("unsigned", "signed", _unsigned, "has no signature (sign it with"),
    (
        "untrusted key",
        "signed",
        _untrusted,
        "which is not trusted for 'example.com/app'; trusted keys for it: ",
    ),
    (
        "other prefix",
        "signed",
        _other_prefix,
        "which is not trusted for 'example.com/app'; trusted keys for it: none",
    ),
    ("tampered tar", "tampered", None, "hash mismatch"),
    (
        "dot-dot",
        "crafted",
        _crafted(Entry("rootfs/../../etc/cron.d/x", data=b"x")),
        "escapes the root ('..')",
    ),
    (
        "absolute symlink",
        "crafted",
        _crafted(Entry("rootfs/bin/sh", kind="symlink", target="/bin/bash")),
        "is a symlink to the absolute path '/bin/bash'",
    ),
    ("manifest without name", "crafted", _crafted(manifest=_no_name()), "manifest has no name"),
    (
        "manifest with bad name",
        "crafted",
        _crafted(manifest=manifest_document(name="Foo Bar")),
        "manifest name 'Foo Bar' is not an AC identifier",
    ),
    ("manifest not appc", "crafted", _crafted(manifest=b"{}"), "manifest acKind"),
]


@pytest.mark.parametrize(
    ("kind", "prepare", "message"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
def test_a_refused_import_names_the_cause_and_leaves_nothing(
    request: pytest.FixtureRequest,
    image_store: ImageStore,
    kind: str,
    prepare: Any,
    message: str,
) -> None:
    trust_store: TrustStore = request.getfixturevalue("trust_store")
    key_pair: KeyPair = request.getfixturevalue("key_pair")
    if kind == "signed":
        image = request.getfixturevalue("image_file")
        other = request.getfixturevalue("other_key_pair")
        archive, signature = prepare(image, key_pair, other, trust_store)
    elif kind == "tampered":
        trust_store.add(key_pair.public_path.read_bytes(), prefix=IMAGE_NAME, source="k")
        archive = request.getfixturevalue("tampered_image")
        signature = signature_of(archive)
    else:
        archive, signature = prepare(request.getfixturevalue("make_archive"), key_pair, trust_store)

    with pytest.raises(PodError) as raised:
        image_store.import_archive(
            archive,
            signature=signature,
            trust=trust_store,
            insecure=NO_INSECURE,
            source=str(archive),
            warn=pytest.fail,
        )

    assert message in str(raised.value)
    assert store_files(image_store) == []
    assert image_store.list() == []


def test_refusal_kinds(
    image_store: ImageStore, image_file: Path, trust_store: TrustStore, make_archive: ArchiveFactory
) -> None:
    """Trust problems are `TrustError`, archive problems `ImageError` (both exit 254); the
    signature comes first, so a malformed archive without one is a `TrustError`."""
    crafted = make_archive(Entry("/abs", data=b"x"))
    for archive in (image_file, crafted):
        with pytest.raises(TrustError):
            image_store.import_archive(
                archive,
                signature=None,
                trust=trust_store,
                insecure=NO_INSECURE,
                source="s",
                warn=print,
            )
    with pytest.raises(ImageError):
        image_store.import_archive(
            crafted,
            signature=None,
            trust=trust_store,
            insecure=INSECURE_IMAGE,
            source="s",
            warn=print,
        )


def test_a_doubly_compressed_archive_is_refused(
    tmp_path: Path, image_store: ImageStore, image_file: Path, trust_store: TrustStore
) -> None:
    twice = tmp_path / "twice.aci"
    twice.write_bytes(gzip.compress(image_file.read_bytes()))
    with pytest.raises(ImageError, match="compressed twice"):
        image_store.import_archive(
            twice,
            signature=None,
            trust=trust_store,
            insecure=INSECURE_IMAGE,
            source="s",
            warn=print,
        )
    assert store_files(image_store) == []


def test_insecure_image_accepts_an_unsigned_image_with_a_loud_warning(
    image_store: ImageStore,
    image_file: Path,
    trust_store: TrustStore,
    warn: Callable[[str], None],
    warnings_seen: list[str],
) -> None:
    record = image_store.import_archive(
        image_file,
        signature=None,
        trust=trust_store,
        insecure=INSECURE_IMAGE,
        source="local",
        warn=warn,
    )
    assert (record.signed_by, record.insecure) == (None, True)
    [warning] = warnings_seen
    assert "SIGNATURE CHECK DISABLED (--insecure-options=image)" in warning
    assert "has no signature" in warning
    assert record.id[:39] in warning


def test_insecure_image_accepts_an_untrusted_signature_but_says_why(
    image_store: ImageStore,
    signed_image: Path,
    trust_store: TrustStore,
    key_pair: KeyPair,
    warnings_seen: list[str],
) -> None:
    record = import_signed(
        image_store, signed_image, trust_store, insecure=INSECURE_IMAGE, warn=warnings_seen.append
    )
    assert record.signed_by is None
    assert f"signed by key {key_pair.keyid} which is not trusted" in warnings_seen[0]


def test_insecure_image_does_not_excuse_a_malformed_archive(
    image_store: ImageStore, trust_store: TrustStore, make_archive: ArchiveFactory
) -> None:
    crafted = make_archive(Entry("rootfs/../x", data=b"x"))
    with pytest.raises(ImageError, match="escapes the root"):
        image_store.import_archive(
            crafted,
            signature=None,
            trust=trust_store,
            insecure=INSECURE_IMAGE,
            source="s",
            warn=print,
        )
    assert store_files(image_store) == []


def test_an_unreadable_archive_is_a_store_error(
    tmp_path: Path, image_store: ImageStore, trust_store: TrustStore
) -> None:
    with pytest.raises(StoreError, match="cannot read image"):
        image_store.import_archive(
            tmp_path / "missing.aci",
            signature=None,
            trust=trust_store,
            insecure=NO_INSECURE,
            source="s",
            warn=print,
        )


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2024, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(minutes=1)
        return self.now


@pytest.fixture
def versions(
    tmp_path: Path, pod_paths: Any, rootfs_dir: Path, warn: Callable[[str], None]
) -> tuple[ImageStore, list[ImageRecord]]:
    """Three images imported in order: app 1.0, app 2.0, then app 1.0 rebuilt (newer)."""
    store = ImageStore(pod_paths.images_dir, clock=Clock())
    trust = TrustStore(pod_paths.trust_dir)
    records = []
    for index, version in enumerate(["1.0", "2.0", "1.0"]):
        (rootfs_dir / "etc" / "build").write_text(str(index))
        image = tmp_path / f"v{index}.aci"
        build_image(rootfs_dir, image, name=IMAGE_NAME, version=version, exec_=["/bin/hello"])
        records.append(
            store.import_archive(
                image, signature=None, trust=trust, insecure=INSECURE_IMAGE, source="t", warn=warn
            )
        )
    return store, records


def test_resolve_by_id_prefix_name_and_version(
    versions: tuple[ImageStore, list[ImageRecord]],
) -> None:
    store, (old_one, two, new_one) = versions
    assert store.list() == [old_one, two, new_one]
    assert store.resolve(two.id) == two
    assert store.resolve(two.id[:15]) == two
    assert store.resolve(two.id[:15].upper().replace("SHA512", "sha512")) == two
    assert store.resolve(IMAGE_NAME) == new_one  # the latest import
    assert store.resolve(f"{IMAGE_NAME}:1.0") == new_one
    assert store.resolve(f"{IMAGE_NAME}:2.0") == two


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("example.com/nope", "no image matches 'example.com/nope'"),
        ("example.com/app:9.9", "no image matches 'example.com/app:9.9'"),
        ("sha512-1234567", "must be sha512- and 8 to 128 hex digits"),
        ("sha512-zzzzzzzzzz", "must be sha512- and 8 to 128 hex digits"),
        ("sha512-" + "0" * 128, "no image matches"),
    ],
)
def test_resolve_refuses_what_matches_nothing(
    versions: tuple[ImageStore, list[ImageRecord]], ref: str, message: str
) -> None:
    store, _ = versions
    with pytest.raises(StoreError) as raised:
        store.resolve(ref)
    assert message in str(raised.value)


def test_an_ambiguous_id_prefix_is_refused(
    image_store: ImageStore, signed_image: Path, trusted_trust_store: TrustStore
) -> None:
    """Two ids sharing 8 hex digits cannot be built on purpose, so clone one entry twice."""
    record = import_signed(image_store, signed_image, trusted_trust_store)
    for fake in ("sha512-deadbeef" + "1" * 120, "sha512-deadbeef" + "2" * 120):
        shutil.copy(image_store.blobs_dir / record.id, image_store.blobs_dir / fake)
        shutil.copy(
            image_store.manifests_dir / f"{record.id}.json",
            image_store.manifests_dir / f"{fake}.json",
        )
        index = json.loads((image_store.index_dir / f"{record.id}.json").read_bytes())
        (image_store.index_dir / f"{fake}.json").write_text(json.dumps(index | {"id": fake}))
    with pytest.raises(StoreError, match="ambiguous image id 'sha512-deadbeef'"):
        image_store.resolve("sha512-deadbeef")
    assert image_store.resolve("sha512-deadbeef1").id.endswith("1" * 120)


def test_remove_deletes_blob_tree_manifest_and_index(
    image_store: ImageStore, signed_image: Path, trusted_trust_store: TrustStore
) -> None:
    record = import_signed(image_store, signed_image, trusted_trust_store)
    image_store.render(record.id)
    assert image_store.remove(IMAGE_NAME) == record
    assert store_files(image_store) == []
    with pytest.raises(StoreError, match="no image matches"):
        image_store.resolve(record.id)


def test_an_entry_whose_blob_is_gone_is_not_listed(
    image_store: ImageStore, signed_image: Path, trusted_trust_store: TrustStore
) -> None:
    """Removal deletes the blob first; a crash right after it leaves an entry nobody sees."""
    record = import_signed(image_store, signed_image, trusted_trust_store)
    (image_store.blobs_dir / record.id).unlink()
    assert image_store.list() == []


def test_a_damaged_index_entry_is_reported(
    image_store: ImageStore, signed_image: Path, trusted_trust_store: TrustStore
) -> None:
    record = import_signed(image_store, signed_image, trusted_trust_store)
    (image_store.index_dir / f"{record.id}.json").write_text("{")
    with pytest.raises(StoreError, match="is damaged"):
        image_store.list()


def test_export_writes_the_uncompressed_tar(
    tmp_path: Path, image_store: ImageStore, signed_image: Path, trusted_trust_store: TrustStore
) -> None:
    record = import_signed(image_store, signed_image, trusted_trust_store)
    output = tmp_path / "exported" / "app.tar"
    image_store.export(record.id[:20], output)
    assert image_id_of(output) == record.id
    assert output.read_bytes() == (image_store.blobs_dir / record.id).read_bytes()
    assert json.loads(image_store.manifest_bytes(IMAGE_NAME))["name"] == IMAGE_NAME


def test_render_once_then_reuse_the_tree(
    image_store: ImageStore,
    signed_image: Path,
    trusted_trust_store: TrustStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    record = import_signed(image_store, signed_image, trusted_trust_store)
    calls: list[Path] = []
    real_render = render_rootfs

    def counting(tar: Path, dest: Path, **options: bool) -> None:
        calls.append(dest)
        real_render(tar, dest, **options)

    monkeypatch.setattr(store_module, "render_rootfs", counting)

    rootfs = image_store.render(record.id)
    assert rootfs == image_store.trees_dir / record.id / "rootfs"
    assert (rootfs / "bin" / "hello").read_text() == "#!/bin/sh\necho hello\n"
    assert (image_store.trees_dir / record.id / "rendered").is_file()
    assert image_store.render(record.id) == rootfs
    assert len(calls) == 1
    assert image_store.trees() == {record.id}
    assert os.listdir(image_store.tmp_dir) == []


def test_a_tree_without_its_marker_is_rendered_again(
    image_store: ImageStore, signed_image: Path, trusted_trust_store: TrustStore
) -> None:
    record = import_signed(image_store, signed_image, trusted_trust_store)
    partial = image_store.trees_dir / record.id / "rootfs"
    partial.mkdir(parents=True)
    (partial / "half-written").write_text("junk")
    assert image_store.trees() == set()

    rootfs = image_store.render(record.id)

    assert not (rootfs / "half-written").exists()
    assert (rootfs / "bin" / "hello").is_file()
    assert image_store.trees() == {record.id}


def test_remove_tree_keeps_the_image(
    image_store: ImageStore, signed_image: Path, trusted_trust_store: TrustStore
) -> None:
    record = import_signed(image_store, signed_image, trusted_trust_store)
    image_store.render(record.id)
    image_store.remove_tree(record.id)
    assert image_store.trees() == set()
    assert not (image_store.trees_dir / record.id).exists()
    assert image_store.resolve(record.id) == record


def test_render_refuses_a_tampered_blob_and_leaves_no_tree(
    image_store: ImageStore,
    signed_image: Path,
    trusted_trust_store: TrustStore,
    make_archive: ArchiveFactory,
) -> None:
    """Rendering re-checks every member: the blob on disk is never trusted."""
    record = import_signed(image_store, signed_image, trusted_trust_store)
    evil = make_archive(Entry("rootfs/../../../../tmp/owned", data=b"x"))
    shutil.copy(evil, image_store.blobs_dir / record.id)
    with pytest.raises(ImageError, match="escapes the root"):
        image_store.render(record.id)
    assert os.listdir(image_store.trees_dir) == []
    assert os.listdir(image_store.tmp_dir) == []


@pytest.mark.parametrize(
    ("image_id", "message"),
    [
        ("sha512-" + "0" * 128, "is not in the store"),
        ("sha512-abc", "is not a full image id"),
        ("../../etc", "is not a full image id"),
    ],
)
def test_render_refuses_unknown_and_malformed_ids(
    image_store: ImageStore, image_id: str, message: str
) -> None:
    with pytest.raises(StoreError, match=message):
        image_store.render(image_id)


def test_touch_records_the_last_use(
    versions: tuple[ImageStore, list[ImageRecord]],
) -> None:
    store, (_, two, _) = versions
    assert two.last_used is None
    store.touch(two.id)
    last_used = store.resolve(two.id).last_used
    assert last_used is not None
    assert last_used > two.imported
    with pytest.raises(StoreError, match="is not in the store"):
        store.touch("sha512-" + "0" * 128)


def bomb_envelope(bomb: Path, key: KeyPair) -> bytes:
    """A trusted signature over the bomb file as it is (the image id is never reached)."""
    statement = {
        "type": STATEMENT_TYPE,
        "name": IMAGE_NAME,
        "imageID": "sha512-" + "0" * 128,
        "archiveSHA256": file_sha256(bomb),
        "labels": {},
        "created": "2024-01-01T00:00:00Z",
    }
    return make_envelope(statement, key.private)


def test_a_signature_is_checked_before_anything_is_decompressed(
    tmp_path: Path, image_store: ImageStore, trusted_trust_store: TrustStore, key_pair: KeyPair
) -> None:
    """The file is gzip's magic and then garbage: had it been decompressed, the refusal would
    be about the archive. It is about the signature: missing, or for other bytes."""
    garbage = tmp_path / "garbage.aci"
    garbage.write_bytes(b"\x1f\x8b\x08\x00" + os.urandom(4096))
    with pytest.raises(TrustError, match="has no signature"):
        import_signed(image_store, garbage, trusted_trust_store, signature=None)
    other = tmp_path / "other.aci"
    other.write_bytes(b"\x1f\x8b\x08\x00" + os.urandom(4096))
    with pytest.raises(TrustError, match="archive hash mismatch"):
        import_signed(
            image_store, garbage, trusted_trust_store, signature=bomb_envelope(other, key_pair)
        )
    assert store_files(image_store) == []


@pytest.mark.timeout(60)
def test_an_unsigned_image_of_4000_nested_directories_costs_nothing(
    image_store: ImageStore, trusted_trust_store: TrustStore, make_archive: ArchiveFactory
) -> None:
    archive = make_archive(*nested_directories(4000), compression="gzip")
    with pytest.raises(TrustError, match="has no signature"):
        import_signed(image_store, archive, trusted_trust_store, signature=None)
    assert store_files(image_store) == []


@pytest.mark.timeout(60)
def test_a_signed_3000_deep_image_is_imported_rendered_and_removed(
    deep_tmp_path: Path,
    image_store: ImageStore,
    trusted_trust_store: TrustStore,
    key_pair: KeyPair,
    make_archive: ArchiveFactory,
) -> None:
    archive = make_archive(
        *nested_directories(3000),
        Entry("rootfs" + "/d" * 3000 + "/leaf", data=b"deep"),
        compression="gzip",
    )
    sign_image(archive, key_pair.private)
    record = import_signed(image_store, archive, trusted_trust_store)
    rootfs = image_store.render(record.id)
    fd = open_at_depth(rootfs, 3000)
    try:
        assert os.stat("leaf", dir_fd=fd).st_size == 4
    finally:
        os.close(fd)
    image_store.remove(record.id)
    assert store_files(image_store) == []


@pytest.mark.timeout(60)
def test_a_signed_gzip_bomb_stops_at_the_limit_and_leaves_nothing(
    tmp_path: Path, image_store: ImageStore, trusted_trust_store: TrustStore, key_pair: KeyPair
) -> None:
    """10 GiB in a 10 MB file, signed by a trusted key: decompression stops past 64 MiB."""
    bomb = write_gzip_bomb(tmp_path / "bomb.aci", 10 << 30)
    with pytest.raises(ImageError) as raised:
        import_signed(
            image_store,
            bomb,
            trusted_trust_store,
            signature=bomb_envelope(bomb, key_pair),
            max_bytes=64 << 20,
        )
    assert str(raised.value) == (
        f"image {str(bomb)!r} expands to more than 64 MiB, the limit for an image "
        "(raise it with --max-image-size)"
    )
    assert store_files(image_store) == []


def test_an_unsigned_bomb_accepted_as_insecure_is_bounded_too(
    tmp_path: Path, image_store: ImageStore, trust_store: TrustStore
) -> None:
    bomb = write_gzip_bomb(tmp_path / "bomb.aci", 1 << 30)
    with pytest.raises(ImageError, match="expands to more than 16 MiB"):
        image_store.import_archive(
            bomb,
            signature=None,
            trust=trust_store,
            insecure=INSECURE_IMAGE,
            source="s",
            warn=pytest.fail,
            max_bytes=16 << 20,
        )
    assert store_files(image_store) == []


def test_a_file_larger_than_the_limit_is_refused_before_it_is_read(
    image_store: ImageStore, signed_image: Path, trusted_trust_store: TrustStore
) -> None:
    limit = signed_image.stat().st_size - 1
    with pytest.raises(ImageError, match=f"is more than {limit} bytes, the limit for an image"):
        import_signed(image_store, signed_image, trusted_trust_store, max_bytes=limit)
    record = import_signed(
        image_store, signed_image, trusted_trust_store, max_bytes=record_size(signed_image)
    )
    assert record.size == record_size(signed_image)


def record_size(image: Path) -> int:
    with gzip.open(image) as stream:
        return len(stream.read())


HOLDER = """
import sys, time
from pathlib import Path
from fleetpod.store import ImageStore
with ImageStore(Path(sys.argv[1])).temporary_file("import-", ".tar") as (path, fd):
    print(path, flush=True)
    time.sleep(600)
"""


def test_remove_leftovers_removes_what_a_killed_import_left_and_nothing_in_use(
    image_store: ImageStore,
) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(image_store.images_dir)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        held = Path(holder.stdout.readline().strip())
        stale = image_store.tmp_dir / "tree-abandoned"
        (stale / "rootfs" / "bin").mkdir(parents=True)
        (stale / "rootfs" / "bin" / "sh").write_text("x")
        fresh = image_store.tmp_dir / "fetch-fresh.aci"
        fresh.write_bytes(b"x")
        long_ago = time.time() - 7200
        for path in (held, stale):
            os.utime(path, (long_ago, long_ago))
        now = datetime.now(UTC)

        assert image_store.remove_leftovers(now=now, grace=timedelta(hours=3)) == []
        assert image_store.remove_leftovers(now=now, grace=timedelta(hours=1)) == [stale.name]
        assert held.exists()  # old, but its import still runs
        assert fresh.exists()  # nobody holds it, but it is younger than a minute

        holder.kill()
        holder.wait(timeout=30)
        assert held.exists()  # what SIGKILL leaves behind
        assert image_store.remove_leftovers(now=now, grace=timedelta(0)) == [held.name]
        assert sorted(os.listdir(image_store.tmp_dir)) == [fresh.name]
    finally:
        holder.kill()
        holder.wait(timeout=30)
        if holder.stdout is not None:
            holder.stdout.close()


@pytest.fixture
def open_parent() -> Iterator[Path]:
    """A directory any user may pass through (0711), as `/var/lib` is: what keeps others out of
    the store must be the store's own modes."""
    parent = Path(tempfile.mkdtemp(prefix="pyfleet-store-"))
    parent.chmod(0o711)
    yield parent
    subprocess.run(["rm", "-rf", "--", str(parent)], check=False)


def as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        check=False,
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
        capture_output=True,
        text=True,
    )


NOBODY = 65534


def setid_image(tmp_path: Path, key: KeyPair) -> Path:
    source = tmp_path / "setid-src"
    (source / "bin").mkdir(parents=True)
    (source / "tmp").mkdir()
    (source / "tmp").chmod(0o1777)
    su = source / "bin" / "su"
    su.write_bytes(b"#!/bin/sh\nid -u\n")
    su.chmod(0o4755)
    shared = source / "shared"
    shared.write_text("every pod of the image\n")
    shared.chmod(0o666)
    image = tmp_path / "setid.aci"
    build_image(source, image, name=IMAGE_NAME, version="1.0", exec_=["/bin/su"])
    sign_image(image, key.private)
    return image


def test_no_other_user_reaches_the_store_or_a_rendered_tree(
    open_parent: Path, tmp_path: Path, key_pair: KeyPair, trusted_trust_store: TrustStore
) -> None:
    store = ImageStore(open_parent / "data" / "images")
    record = import_signed(store, setid_image(tmp_path, key_pair), trusted_trust_store, warn=print)
    rootfs = store.render(record.id)
    for directory in (store.images_dir, *store.images_dir.iterdir(), rootfs.parent):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    for path in (rootfs / "bin" / "su", rootfs / "shared", store.blobs_dir / record.id):
        denied = as_nobody("stat", str(path))
        assert denied.returncode != 0
        assert "Permission denied" in denied.stderr
    assert as_nobody("stat", str(open_parent / "data")).returncode == 0  # only the store is shut


def test_a_store_made_before_is_made_private(
    open_parent: Path, tmp_path: Path, key_pair: KeyPair, trusted_trust_store: TrustStore
) -> None:
    store = ImageStore(open_parent / "images")
    for directory in (store.trees_dir, store.blobs_dir):
        directory.mkdir(parents=True, mode=0o755)
    store.images_dir.chmod(0o755)
    import_signed(store, setid_image(tmp_path, key_pair), trusted_trust_store, warn=print)
    assert stat.S_IMODE(store.images_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(store.trees_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(store.blobs_dir.stat().st_mode) == 0o700


def test_set_id_and_world_write_bits_are_dropped_and_the_import_says_so(
    tmp_path: Path,
    image_store: ImageStore,
    key_pair: KeyPair,
    trusted_trust_store: TrustStore,
    warnings_seen: list[str],
) -> None:
    image = setid_image(tmp_path, key_pair)
    record = import_signed(image_store, image, trusted_trust_store, warn=warnings_seen.append)
    assert record.keep_modes is False
    assert warnings_seen == [
        f"image 'example.com/app' ({record.id[:39]}): 2 file(s) (rootfs/bin/su, rootfs/shared) "
        "lose their set-user-ID, set-group-ID or world-write bits when rendered (keep them with "
        "--insecure-options=modes, for an image you trust)"
    ]
    rootfs = image_store.render(record.id)
    assert stat.S_IMODE(os.lstat(rootfs / "bin" / "su").st_mode) == 0o755
    assert stat.S_IMODE(os.lstat(rootfs / "shared").st_mode) == 0o664
    assert stat.S_IMODE(os.lstat(rootfs / "tmp").st_mode) == 0o1777

    warnings_seen.clear()
    again = import_signed(
        image_store,
        image,
        trusted_trust_store,
        insecure=frozenset({Insecure.MODES}),
        warn=warnings_seen.append,
    )
    assert again.keep_modes is False  # the first import decided
    assert "is already in the store with the set-ID and world-write bits" in warnings_seen[0]
    assert f"`fleet-pod image rm {record.id[:39]}` and fetch it again" in warnings_seen[0]


def test_an_image_imported_with_insecure_modes_keeps_them(
    tmp_path: Path,
    image_store: ImageStore,
    key_pair: KeyPair,
    trusted_trust_store: TrustStore,
    warnings_seen: list[str],
) -> None:
    record = import_signed(
        image_store,
        setid_image(tmp_path, key_pair),
        trusted_trust_store,
        insecure=frozenset({Insecure.MODES}),
        warn=warnings_seen.append,
    )
    assert record.keep_modes is True
    assert image_store.resolve(record.id).keep_modes is True
    assert warnings_seen[0].startswith(
        "WARNING: SET-ID AND WORLD-WRITABLE MODES KEPT (--insecure-options=modes): image "
    )
    rootfs = image_store.render(record.id)
    assert stat.S_IMODE(os.lstat(rootfs / "bin" / "su").st_mode) == 0o4755
    assert stat.S_IMODE(os.lstat(rootfs / "shared").st_mode) == 0o666


def test_insecure_modes_on_an_image_without_such_files_records_nothing(
    image_store: ImageStore, signed_image: Path, trusted_trust_store: TrustStore
) -> None:
    record = import_signed(
        image_store, signed_image, trusted_trust_store, insecure=frozenset({Insecure.MODES})
    )
    assert record.keep_modes is False
