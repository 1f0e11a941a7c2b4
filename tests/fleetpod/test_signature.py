"""Detached Ed25519 signatures: the exact format of docs/containers.md and every refusal."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fleetpod.errors import TrustError
from fleetpod.image import image_id_of
from fleetpod.keys import key_id
from fleetpod.signature import (
    STATEMENT_TYPE,
    Verified,
    canonical_json,
    file_sha256,
    make_envelope,
    sign_image,
    verify_signature,
)
from tests.fleetpod.conftest import IMAGE_NAME, KeyPair

NOW = datetime(2024, 5, 1, 12, 30, 0, tzinfo=UTC)
IMAGE_ID = "sha512-" + "ab" * 64
ARCHIVE_SHA = "cd" * 32


def statement(**overrides: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "type": STATEMENT_TYPE,
        "name": IMAGE_NAME,
        "imageID": IMAGE_ID,
        "archiveSHA256": ARCHIVE_SHA,
        "labels": {"version": "1.0"},
        "created": "2024-05-01T12:00:00Z",
    }
    document.update(overrides)
    return document


def trusted(key: Ed25519PrivateKey) -> dict[str, Ed25519PublicKey]:
    return {key_id(key.public_key()): key.public_key()}


def verify(envelope: bytes, keys: dict[str, Ed25519PublicKey], **overrides: Any) -> Verified:
    arguments: dict[str, Any] = {
        "name": IMAGE_NAME,
        "image_id": IMAGE_ID,
        "archive_sha256": ARCHIVE_SHA,
        "now": NOW,
    }
    arguments.update(overrides)
    return verify_signature(envelope, keys, **arguments)


def test_sign_image_writes_the_envelope_and_statement_of_the_proposal(
    signed_image: Path, key_pair: KeyPair
) -> None:
    signature_path = signed_image.with_name(signed_image.name + ".sig")
    assert sign_image(signed_image, key_pair.private, now=NOW) == signature_path

    envelope = json.loads(signature_path.read_bytes())
    assert set(envelope) == {"v", "alg", "keyid", "statement", "sig"}
    assert (envelope["v"], envelope["alg"], envelope["keyid"]) == (1, "ed25519", key_pair.keyid)
    statement_bytes = base64.b64decode(envelope["statement"])
    document = json.loads(statement_bytes)
    assert statement_bytes == canonical_json(document)
    assert b" " not in statement_bytes
    assert document == {
        "type": "pyfleet.image-signature/v1",
        "name": IMAGE_NAME,
        "imageID": image_id_of(signed_image),
        "archiveSHA256": file_sha256(signed_image),
        "labels": {"version": "1.0", "os": "linux", "arch": document["labels"]["arch"]},
        "created": "2024-05-01T12:30:00Z",
    }
    signature = base64.b64decode(envelope["sig"])
    public = key_pair.private.public_key()
    public.verify(signature, b"pyfleet-image-sig-v1\0" + statement_bytes)
    with pytest.raises(InvalidSignature):  # the domain prefix is part of the message
        public.verify(signature, statement_bytes)


def test_a_signed_image_verifies_against_its_key(signed_image: Path, key_pair: KeyPair) -> None:
    envelope = signed_image.with_name(signed_image.name + ".sig").read_bytes()
    verified = verify_signature(
        envelope,
        trusted(key_pair.private),
        name=IMAGE_NAME,
        image_id=image_id_of(signed_image),
        archive_sha256=file_sha256(signed_image),
    )
    assert verified.keyid == key_pair.keyid
    assert verified.statement["name"] == IMAGE_NAME


def test_archive_hash_is_checked_only_when_known(key_pair: KeyPair) -> None:
    envelope = make_envelope(statement(), key_pair.private)
    assert verify(envelope, trusted(key_pair.private), archive_sha256=None).keyid == key_pair.keyid
    unsigned_archive = make_envelope(statement(archiveSHA256=None), key_pair.private)
    assert verify(unsigned_archive, trusted(key_pair.private)).keyid == key_pair.keyid


def _envelope(key: Ed25519PrivateKey, **changes: Any) -> bytes:
    document = json.loads(make_envelope(statement(), key))
    document.update(changes)
    return json.dumps(document).encode()


def _tampered_statement(key: Ed25519PrivateKey) -> bytes:
    """A valid envelope whose statement was swapped for another after signing."""
    document = json.loads(make_envelope(statement(), key))
    other = canonical_json(statement(name="example.com/evil"))
    document["statement"] = base64.b64encode(other).decode()
    return json.dumps(document).encode()


def _signed_statement(key: Ed25519PrivateKey, body: bytes) -> bytes:
    return json.dumps(
        {
            "v": 1,
            "alg": "ed25519",
            "keyid": key_id(key.public_key()),
            "statement": base64.b64encode(body).decode(),
            "sig": base64.b64encode(key.sign(b"pyfleet-image-sig-v1\0" + body)).decode(),
        }
    ).encode()


REFUSALS: list[tuple[str, Any, str]] = [
    ("not json", lambda k: b"-----BEGIN PGP SIGNATURE-----", "malformed signature file: not JSON"),
    ("not an object", lambda k: b'"sig"', "malformed signature file: not a JSON object"),
    ("empty list", lambda k: b"[]", "malformed signature file: an empty list"),
    ("nested", lambda k: b"[" * 100_000, "malformed signature file: nested too deeply"),
    (
        "too large",
        lambda k: b" " * (1 << 20) + b"[]",
        "malformed signature file: larger than 1 MiB",
    ),
    (
        "statement nested",
        lambda k: _signed_statement(k, b"[" * 100_000),
        "malformed signature statement: nested too deeply",
    ),
    ("version 2", lambda k: _envelope(k, v=2), "unsupported signature version 2"),
    ("rsa", lambda k: _envelope(k, alg="rsa"), "unsupported signature algorithm 'rsa'"),
    ("no keyid", lambda k: _envelope(k, keyid=None), "malformed signature file: no keyid"),
    (
        "no statement",
        lambda k: _envelope(k, statement=None),
        "malformed signature file: no statement",
    ),
    ("statement not base64", lambda k: _envelope(k, statement="%%%"), "statement is not base64"),
    (
        "short sig",
        lambda k: _envelope(k, sig=base64.b64encode(b"x" * 10).decode()),
        "sig has 10 bytes, not 64",
    ),
    ("altered statement", _tampered_statement, "invalid signature by key"),
    (
        "altered sig",
        lambda k: _envelope(k, sig=base64.b64encode(b"\0" * 64).decode()),
        "invalid signature by key",
    ),
    (
        "statement not json",
        lambda k: _signed_statement(k, b"nope"),
        "malformed signature statement: not JSON",
    ),
    ("statement a list", lambda k: _signed_statement(k, b"[]"), "statement: not a JSON object"),
    (
        "wrong type",
        lambda k: make_envelope(statement(type="x/v9"), k),
        "statement type 'x/v9' is not supported",
    ),
    (
        "other name",
        lambda k: make_envelope(statement(name="example.com/other"), k),
        "the signature is for image 'example.com/other' "
        "but the manifest is named 'example.com/app'",
    ),
    (
        "other image",
        lambda k: make_envelope(statement(imageID="sha512-" + "00" * 64), k),
        "hash mismatch",
    ),
    (
        "other archive",
        lambda k: make_envelope(statement(archiveSHA256="ee" * 32), k),
        "archive hash mismatch",
    ),
    (
        "expired",
        lambda k: make_envelope(statement(expires="2024-05-01T12:00:00Z"), k),
        "the signature expired at 2024-05-01T12:00:00Z",
    ),
    (
        "bad expiry",
        lambda k: make_envelope(statement(expires="soon"), k),
        "expires 'soon' is not a date",
    ),
]


@pytest.mark.parametrize(
    ("make", "message"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
def test_a_bad_signature_is_refused_naming_the_cause(
    key_pair: KeyPair, make: Any, message: str
) -> None:
    with pytest.raises(TrustError) as raised:
        verify(make(key_pair.private), trusted(key_pair.private))
    assert message in str(raised.value)


def test_an_unexpired_signature_is_accepted(key_pair: KeyPair) -> None:
    later = (NOW + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    envelope = make_envelope(statement(expires=later), key_pair.private)
    assert verify(envelope, trusted(key_pair.private)).statement["expires"] == later


def test_an_untrusted_signer_gets_an_actionable_message(
    key_pair: KeyPair, other_key_pair: KeyPair
) -> None:
    envelope = make_envelope(statement(), other_key_pair.private)

    with pytest.raises(TrustError) as nobody:
        verify(envelope, {})
    assert str(nobody.value) == (
        f"signed by key {other_key_pair.keyid} which is not trusted for 'example.com/app'; "
        "trusted keys for it: none "
        "(add one with `fleet-pod trust --prefix example.com/app KEYFILE`)"
    )

    with pytest.raises(TrustError) as somebody_else:
        verify(envelope, trusted(key_pair.private))
    assert f"trusted keys for it: {key_pair.keyid} " in str(somebody_else.value)


def test_a_list_of_envelopes_needs_one_trusted_valid_signature(
    key_pair: KeyPair, other_key_pair: KeyPair
) -> None:
    ours = json.loads(make_envelope(statement(), key_pair.private))
    theirs = json.loads(make_envelope(statement(), other_key_pair.private))
    both = json.dumps([theirs, ours]).encode()
    assert verify(both, trusted(key_pair.private)).keyid == key_pair.keyid

    with pytest.raises(TrustError) as untrusted:
        verify(both, {})
    assert f"signed by key {other_key_pair.keyid}, {key_pair.keyid} which is not trusted" in str(
        untrusted.value
    )

    broken = dict(ours, sig=base64.b64encode(b"\0" * 64).decode())
    with pytest.raises(TrustError, match="invalid signature"):
        verify(json.dumps([theirs, broken]).encode(), trusted(key_pair.private))
