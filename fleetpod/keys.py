"""Ed25519 keys: load private and public keys in the usual formats, name them, make a pair.

Formats read: private keys as PEM PKCS#8 (`openssl genpkey -algorithm ed25519`) or OpenSSH
(`ssh-keygen -t ed25519 -N ''`); public keys as the one-line `ed25519 <base64 of 32 raw bytes>
[comment]` (the trust store's own format), OpenSSH `ssh-ed25519 AAAA... [comment]`, or PEM
SubjectPublicKeyInfo.

Invariants:
* A key id is the lowercase hex SHA-256 of the 32 raw public bytes; it names trust store files.
* Only Ed25519 is accepted; any other algorithm, an encrypted private key, or a private key given
  where a public one is expected is a `TrustError` naming the source and the cause.
* `generate_key_pair` never overwrites a file and writes the private key with mode 0600.
* A key file is read to at most `MAX_KEY_FILE_BYTES` (64 KiB; a key is about 100 bytes).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fleetpod.errors import TrustError
from fleetpod.limits import MAX_KEY_FILE_BYTES, read_at_most

LINE_PREFIX = "ed25519"
RAW_KEY_BYTES = 32


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in the PEM or OpenSSH file at `path`."""
    data = read_at_most(path, MAX_KEY_FILE_BYTES, what="private key", error=TrustError)
    try:
        if b"BEGIN OPENSSH PRIVATE KEY" in data:
            key: object = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise TrustError(
            f"private key {str(path)!r} is encrypted; fleet-pod needs an unencrypted key"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise TrustError(
            f"{str(path)!r} is not a PEM or OpenSSH private key "
            "(make one with `fleet-pod key generate --out NAME`)"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise TrustError(f"private key {str(path)!r} is not an Ed25519 key")
    return key


def load_public_key(data: bytes, *, source: str) -> Ed25519PublicKey:
    """The Ed25519 public key in `data`; `source` names it in errors."""
    return load_public_key_with_comment(data, source=source)[0]


def load_public_key_with_comment(data: bytes, *, source: str) -> tuple[Ed25519PublicKey, str]:
    """The public key in `data` and its comment ("" when the format has none)."""
    if b"PRIVATE KEY" in data:
        raise TrustError(f"{source} is a private key; give the public key (e.g. NAME.pub)")
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise TrustError(f"{source} is not an Ed25519 public key (not text)") from None
    if text.startswith("-----BEGIN PUBLIC KEY-----"):
        try:
            key: object = serialization.load_pem_public_key(data)
        except (ValueError, UnsupportedAlgorithm):
            raise TrustError(f"{source} is not a valid PEM public key") from None
        return _ed25519(key, source), ""
    fields = text.split(None, 2)
    comment = fields[2].strip() if len(fields) == 3 else ""
    if fields and fields[0] == LINE_PREFIX and len(fields) >= 2:
        return _from_line(fields[1], source), comment
    if len(fields) >= 2 and fields[1].startswith("AAAA"):  # OpenSSH: <type> <base64> [comment]
        try:
            key = serialization.load_ssh_public_key(" ".join(fields[:2]).encode("ascii"))
        except (ValueError, UnsupportedAlgorithm):
            raise TrustError(f"{source} is not a valid OpenSSH public key") from None
        return _ed25519(key, source), comment
    raise TrustError(
        f"{source} is not an Ed25519 public key (expected 'ed25519 <base64>', "
        "'ssh-ed25519 AAAA...' or a PEM public key)"
    )


def _from_line(encoded: str, source: str) -> Ed25519PublicKey:
    try:
        raw = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise TrustError(f"{source}: the key is not valid base64") from None
    if len(raw) != RAW_KEY_BYTES:
        raise TrustError(f"{source}: an Ed25519 key has 32 bytes, this one has {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def _ed25519(key: object, source: str) -> Ed25519PublicKey:
    if not isinstance(key, Ed25519PublicKey):
        kind = type(key).__name__.removeprefix("_")
        raise TrustError(f"{source} is not an Ed25519 key (it is an {kind})")
    return key


def raw_public_bytes(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public: Ed25519PublicKey) -> str:
    """Lowercase hex SHA-256 of the 32 raw public key bytes."""
    return hashlib.sha256(raw_public_bytes(public)).hexdigest()


def public_key_line(public: Ed25519PublicKey, comment: str = "") -> str:
    """`ed25519 <base64> [comment]`: the trust store's one-line format (no newline)."""
    line = f"{LINE_PREFIX} {base64.b64encode(raw_public_bytes(public)).decode('ascii')}"
    comment = " ".join(comment.split())
    return f"{line} {comment}" if comment else line


def generate_key_pair(private_out: Path, public_out: Path, *, comment: str = "") -> str:
    """A new key pair: PEM PKCS#8 private key (mode 0600) and public line; the key id."""
    for path in (private_out, public_out):
        if os.path.lexists(path):
            raise TrustError(f"{str(path)!r} already exists; not overwriting a key")
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = private.public_key()
    _write_new(private_out, pem, 0o600)
    _write_new(public_out, (public_key_line(public, comment) + "\n").encode(), 0o644)
    return key_id(public)


def _write_new(path: Path, data: bytes, mode: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    except OSError as error:
        raise TrustError(f"cannot create {str(path)!r}: {error.strerror}") from None
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    os.chmod(path, mode)
