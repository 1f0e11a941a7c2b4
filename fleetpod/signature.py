"""Detached Ed25519 image signatures: make them and verify them.

A signature file `IMAGE.sig` is a JSON envelope `{"v": 1, "alg": "ed25519", "keyid": <hex>,
"statement": <base64>, "sig": <base64>}` (or a list of such envelopes, for key rotation: one
valid signature by a trusted key is enough). The statement is canonical JSON (UTF-8, sorted keys,
no whitespace) with `type` = `pyfleet.image-signature/v1`, `name` (the manifest name), `imageID`
(SHA-512 of the uncompressed tar), `archiveSHA256` (the exact file bytes), `labels`, `created`
and optionally `expires`. The signed message is `pyfleet-image-sig-v1`, a NUL byte, then the
statement bytes, so a signature cannot be replayed in another protocol that uses the same key.

Invariants:
* Verification checks the signature with a trusted key before it trusts anything in the
  statement (an unverified statement's name only words the message for an untrusted key), and
  accepts it only when the key is trusted for the name the statement gives
  (`TrustStore.keys_for`). It then binds the statement to the image: same name, same image id,
  same archive bytes (when both sides know them), not expired.
* `verify_archive_signature` does all of that but the name and id, which need the decompressed
  archive, before anything is decompressed: the statement's `archiveSHA256` ties it to the file
  as given, so an unsigned, untrusted or altered file is refused at the cost of hashing it.
  `bind_to_image` finishes the job once the manifest and the id are known.
* Every refusal is a `TrustError` saying what to do about it, including a file over
  `MAX_SIGNATURE_BYTES` or JSON nested deeper than the parser goes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fleetd.runtime.files import write_atomically
from fleetpod.errors import TrustError
from fleetpod.image import CHUNK, check_archive, image_id_of
from fleetpod.image_manifest import AC_IDENTIFIER
from fleetpod.keys import key_id
from fleetpod.limits import MAX_SIGNATURE_BYTES, size_text

STATEMENT_TYPE = "pyfleet.image-signature/v1"
DOMAIN = b"pyfleet-image-sig-v1"
ENVELOPE_VERSION = 1
ALGORITHM = "ed25519"
SIGNATURE_BYTES = 64


@dataclass(frozen=True)
class Verified:
    """A signature that checked out: who made it and what it says; `covers_archive` when the
    statement names the exact bytes of the file it was checked against."""

    keyid: str
    statement: dict[str, Any]
    covers_archive: bool = False


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def signed_message(statement: bytes) -> bytes:
    return DOMAIN + b"\0" + statement


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def make_envelope(statement: Mapping[str, Any], private_key: Ed25519PrivateKey) -> bytes:
    """The signature file's bytes for `statement` signed with `private_key`."""
    statement_bytes = canonical_json(dict(statement))
    envelope = {
        "v": ENVELOPE_VERSION,
        "alg": ALGORITHM,
        "keyid": key_id(private_key.public_key()),
        "statement": base64.b64encode(statement_bytes).decode("ascii"),
        "sig": base64.b64encode(private_key.sign(signed_message(statement_bytes))).decode("ascii"),
    }
    return json.dumps(envelope, indent=2).encode() + b"\n"


def sign_image(image: Path, private_key: Ed25519PrivateKey, *, now: datetime | None = None) -> Path:
    """Write `IMAGE.sig` for the image file `image`; returns its path."""
    manifest = check_archive(image)
    statement = {
        "type": STATEMENT_TYPE,
        "name": manifest.name,
        "imageID": image_id_of(image),
        "archiveSHA256": file_sha256(image),
        "labels": dict(manifest.labels),
        "created": rfc3339(now or datetime.now(UTC)),
    }
    output = image.with_name(image.name + ".sig")
    return write_atomically(output, make_envelope(statement, private_key))


class TrustedKeys(Protocol):
    """Where verification finds keys: every key trusted for anything, and those for a name."""

    def known_keys(self) -> Mapping[str, Ed25519PublicKey]: ...

    def keys_for(self, name: str) -> Mapping[str, Ed25519PublicKey]: ...


@dataclass(frozen=True)
class _KeysForOneName:
    """`TrustedKeys` when the caller already knows the name and its keys."""

    name: str
    trusted: Mapping[str, Ed25519PublicKey]

    def known_keys(self) -> Mapping[str, Ed25519PublicKey]:
        return self.trusted

    def keys_for(self, name: str) -> Mapping[str, Ed25519PublicKey]:
        return self.trusted if name == self.name else {}


def verify_archive_signature(
    envelope: bytes,
    keys: TrustedKeys,
    *,
    archive_sha256: str,
    now: datetime | None = None,
) -> Verified:
    """Check `envelope` before the archive is even decompressed: made by a key trusted for the
    name its statement gives, over the file whose SHA-256 is `archive_sha256` (when the
    statement names one: `Verified.covers_archive`), not expired. `bind_to_image` must then
    check the statement against the manifest's name and the image id."""
    return _verify_envelopes(envelope, keys, archive_sha256=archive_sha256, now=now, expected=None)


def bind_to_image(verified: Verified, *, name: str, image_id: str) -> None:
    """Refuse a verified statement that is about another name or other content."""
    _check_binding(verified.statement, name=name, image_id=image_id)


def verify_signature(
    envelope: bytes,
    trusted: Mapping[str, Ed25519PublicKey],
    *,
    name: str,
    image_id: str,
    archive_sha256: str | None,
    now: datetime | None = None,
) -> Verified:
    """Check `envelope` against the keys trusted for `name` and bind it to the image."""
    return _verify_envelopes(
        envelope,
        _KeysForOneName(name, trusted),
        archive_sha256=archive_sha256,
        now=now,
        expected=(name, image_id),
    )


def _verify_envelopes(
    envelope: bytes,
    keys: TrustedKeys,
    *,
    archive_sha256: str | None,
    now: datetime | None,
    expected: tuple[str, str] | None,
) -> Verified:
    document = _parse_json(envelope, "malformed signature file")
    envelopes = document if isinstance(document, list) else [document]
    if not envelopes:
        raise TrustError("malformed signature file: an empty list")
    failures: list[TrustError] = []
    for one in envelopes:
        try:
            return _verify_one(one, keys, archive_sha256=archive_sha256, now=now, expected=expected)
        except TrustError as error:
            failures.append(error)
    untrusted = [f for f in failures if isinstance(f, _UntrustedKey)]
    if len(untrusted) == len(failures):
        keyids = ", ".join(f.keyid for f in untrusted)
        first = untrusted[0]
        raise _UntrustedKey(keyids, first.name, _untrusted_message(keyids, first.name, keys))
    raise next(f for f in failures if not isinstance(f, _UntrustedKey))


class _UntrustedKey(TrustError):
    def __init__(self, keyid: str, name: str, message: str) -> None:
        super().__init__(message)
        self.keyid = keyid
        self.name = name


def _untrusted_message(keyid: str, name: str, keys: TrustedKeys) -> str:
    if not AC_IDENTIFIER.match(name):
        return f"signed by key {keyid}, which is not trusted (and names no image)"
    known = ", ".join(sorted(keys.keys_for(name))) or "none"
    return (
        f"signed by key {keyid} which is not trusted for {name!r}; trusted keys for it: {known} "
        f"(add one with `fleet-pod trust --prefix {name} KEYFILE`)"
    )


def _claimed_name(statement_bytes: bytes) -> str:
    """The name an unverified statement gives, for a message only; `""` if it gives none."""
    try:
        statement = _parse_json(statement_bytes, "statement")
    except TrustError:
        return ""
    name = statement.get("name") if isinstance(statement, dict) else None
    return name if isinstance(name, str) else ""


def _verify_one(
    envelope: Any,
    keys: TrustedKeys,
    *,
    archive_sha256: str | None,
    now: datetime | None,
    expected: tuple[str, str] | None,
) -> Verified:
    if not isinstance(envelope, dict):
        raise TrustError("malformed signature file: not a JSON object")
    if envelope.get("v") != ENVELOPE_VERSION:
        raise TrustError(f"unsupported signature version {envelope.get('v')!r} (expected 1)")
    if envelope.get("alg") != ALGORITHM:
        raise TrustError(f"unsupported signature algorithm {envelope.get('alg')!r}")
    keyid = envelope.get("keyid")
    if not isinstance(keyid, str) or not keyid:
        raise TrustError("malformed signature file: no keyid")
    statement_bytes = _base64_field(envelope, "statement")
    signature = _base64_field(envelope, "sig")
    if len(signature) != SIGNATURE_BYTES:
        raise TrustError(f"malformed signature file: sig has {len(signature)} bytes, not 64")
    public = keys.known_keys().get(keyid)
    if public is None:
        claimed = expected[0] if expected else _claimed_name(statement_bytes)
        raise _UntrustedKey(keyid, claimed, _untrusted_message(keyid, claimed, keys))
    try:
        public.verify(signature, signed_message(statement_bytes))
    except InvalidSignature:
        raise TrustError(
            f"invalid signature by key {keyid}: the signature file was altered "
            "or was not made for this statement"
        ) from None
    statement = _parse_json(statement_bytes, "malformed signature statement")
    if not isinstance(statement, dict):
        raise TrustError("malformed signature statement: not a JSON object")
    if statement.get("type") != STATEMENT_TYPE:
        raise TrustError(f"signature statement type {statement.get('type')!r} is not supported")
    if expected is not None:
        _check_name(statement, expected[0])
    name = statement.get("name")
    if not isinstance(name, str) or not AC_IDENTIFIER.match(name):
        raise TrustError(f"signature statement name {name!r} is not an image name")
    if keyid not in keys.keys_for(name):
        raise _UntrustedKey(keyid, name, _untrusted_message(keyid, name, keys))
    if expected is not None:
        _check_binding(statement, name=expected[0], image_id=expected[1])
    covers_archive = _check_archive(statement, archive_sha256)
    _check_expiry(statement, now)
    return Verified(keyid=keyid, statement=statement, covers_archive=covers_archive)


def _parse_json(data: bytes, problem: str) -> Any:
    """JSON of at most `MAX_SIGNATURE_BYTES`; anything else is a `TrustError` saying `problem`."""
    if len(data) > MAX_SIGNATURE_BYTES:
        raise TrustError(f"{problem}: larger than {size_text(MAX_SIGNATURE_BYTES)}")
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise TrustError(f"{problem}: not JSON") from None
    except RecursionError:
        raise TrustError(f"{problem}: nested too deeply") from None


def _base64_field(envelope: dict[str, Any], field: str) -> bytes:
    value = envelope.get(field)
    if not isinstance(value, str):
        raise TrustError(f"malformed signature file: no {field}")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        raise TrustError(f"malformed signature file: {field} is not base64") from None


def _check_name(statement: dict[str, Any], name: str) -> None:
    if statement.get("name") != name:
        raise TrustError(
            f"the signature is for image {statement.get('name')!r} but the manifest is named "
            f"{name!r}"
        )


def _check_binding(statement: dict[str, Any], *, name: str, image_id: str) -> None:
    _check_name(statement, name)
    if statement.get("imageID") != image_id:
        raise TrustError(
            f"hash mismatch: the signature is for image {statement.get('imageID')!r} "
            f"but the archive's content is {image_id} (the image was modified or replaced)"
        )


def _check_archive(statement: dict[str, Any], archive_sha256: str | None) -> bool:
    """Whether the statement names exactly this file; refuses one that names another."""
    signed_archive = statement.get("archiveSHA256")
    if archive_sha256 is None or signed_archive is None:
        return False
    if signed_archive != archive_sha256:
        raise TrustError(
            f"archive hash mismatch: the signature is for an archive with SHA-256 "
            f"{signed_archive} but this file has {archive_sha256}"
        )
    return True


def _check_expiry(statement: dict[str, Any], now: datetime | None) -> None:
    expires = statement.get("expires")
    if expires is not None:
        try:
            deadline = datetime.fromisoformat(str(expires).replace("Z", "+00:00"))
        except ValueError:
            raise TrustError(f"signature statement expires {expires!r} is not a date") from None
        if deadline.tzinfo is None:
            deadline = deadline.replace(tzinfo=UTC)
        if (now or datetime.now(UTC)) >= deadline:
            raise TrustError(f"the signature expired at {expires}")
