"""Ed25519 keys: every accepted format, every refusal, key ids and key pair generation."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetpod.errors import TrustError
from fleetpod.keys import (
    generate_key_pair,
    key_id,
    load_private_key,
    load_public_key,
    load_public_key_with_comment,
    public_key_line,
    raw_public_bytes,
)


@pytest.fixture
def private() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def pkcs8_pem(key: Ed25519PrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def openssh_private(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )


def test_key_id_is_the_sha256_of_the_raw_public_key(private: Ed25519PrivateKey) -> None:
    public = private.public_key()
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert key_id(public) == hashlib.sha256(raw).hexdigest()
    assert len(raw_public_bytes(public)) == 32


@pytest.mark.parametrize("encode", [pkcs8_pem, openssh_private], ids=["pkcs8-pem", "openssh"])
def test_private_keys_load_from_pem_and_openssh(
    tmp_path: Path, private: Ed25519PrivateKey, encode: object
) -> None:
    path = tmp_path / "signing.key"
    assert callable(encode)
    path.write_bytes(encode(private))
    loaded = load_private_key(path)
    assert key_id(loaded.public_key()) == key_id(private.public_key())


def test_private_key_refusals_name_the_cause(tmp_path: Path, private: Ed25519PrivateKey) -> None:
    missing = tmp_path / "missing.key"
    with pytest.raises(TrustError, match=r"cannot read private key .*missing\.key"):
        load_private_key(missing)

    garbage = tmp_path / "garbage.key"
    garbage.write_text("hello")
    with pytest.raises(TrustError, match="is not a PEM or OpenSSH private key"):
        load_private_key(garbage)

    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(TrustError, match="is encrypted"):
        load_private_key(encrypted)

    rsa_key = tmp_path / "rsa.key"
    rsa_key.write_bytes(pkcs8_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)))
    with pytest.raises(TrustError, match="is not an Ed25519 key"):
        load_private_key(rsa_key)


def test_public_keys_load_from_every_format_with_the_same_id(
    private: Ed25519PrivateKey,
) -> None:
    public = private.public_key()
    expected = key_id(public)
    line = public_key_line(public, "ops team").encode()
    ssh = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    assert load_public_key_with_comment(line, source="line") == (public, "ops team")
    assert key_id(load_public_key(line + b"\n", source="line")) == expected
    loaded, comment = load_public_key_with_comment(ssh + b" me@host", source="ssh")
    assert (key_id(loaded), comment) == (expected, "me@host")
    loaded, comment = load_public_key_with_comment(pem, source="pem")
    assert (key_id(loaded), comment) == (expected, "")


def test_public_key_line_is_one_line_with_a_normalised_comment(
    private: Ed25519PrivateKey,
) -> None:
    public = private.public_key()
    encoded = base64.b64encode(raw_public_bytes(public)).decode()
    assert public_key_line(public) == f"ed25519 {encoded}"
    assert public_key_line(public, " release\nkey  2024 ") == f"ed25519 {encoded} release key 2024"


def _rsa_public_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _ecdsa_ssh() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)


BAD_PEM = b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
PUBLIC_REFUSALS = [
    ("pkcs8 private", pkcs8_pem, "is a private key; give the public key"),
    ("openssh private", openssh_private, "is a private key"),
    ("rsa pem", lambda k: _rsa_public_pem(), "is not an Ed25519 key (it is an RSAPublicKey)"),
    ("ecdsa ssh", lambda k: _ecdsa_ssh(), "is not an Ed25519 key (it is an EC"),
    ("bad base64", lambda k: b"ed25519 !!!notbase64", "is not valid base64"),
    ("short key", lambda k: b"ed25519 " + base64.b64encode(b"x" * 31), "this one has 31"),
    ("bad pem", lambda k: BAD_PEM, "not a valid PEM"),
    ("bad ssh", lambda k: b"ssh-ed25519 AAAAnotreally", "not a valid OpenSSH public key"),
    ("garbage", lambda k: b"hello world", "is not an Ed25519 public key"),
    ("empty", lambda k: b"", "is not an Ed25519 public key"),
    ("binary", lambda k: b"\xff\xfe\x00", "not text"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("make", "message"), [r[1:] for r in PUBLIC_REFUSALS], ids=[r[0] for r in PUBLIC_REFUSALS]
)
def test_public_key_refusals_name_the_source_and_cause(
    private: Ed25519PrivateKey, make: object, message: str
) -> None:
    assert callable(make)
    with pytest.raises(TrustError) as raised:
        load_public_key(make(private), source="key file 'k.pub'")
    assert "key file 'k.pub'" in str(raised.value)
    assert message in str(raised.value)


def test_generate_key_pair_writes_a_private_pem_0600_and_a_public_line(tmp_path: Path) -> None:
    private_path, public_path = tmp_path / "release.key", tmp_path / "release.pub"
    keyid = generate_key_pair(private_path, public_path, comment="release")

    assert stat.S_IMODE(os.stat(private_path).st_mode) == 0o600
    assert private_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    line = public_path.read_text()
    assert line.startswith("ed25519 ")
    assert line.endswith(" release\n")
    public, comment = load_public_key_with_comment(line.encode(), source="pub")
    assert key_id(public) == keyid == key_id(load_private_key(private_path).public_key())
    assert comment == "release"


def test_generate_key_pair_never_overwrites(tmp_path: Path) -> None:
    private_path, public_path = tmp_path / "a.key", tmp_path / "a.pub"
    public_path.write_text("keep me")
    with pytest.raises(TrustError, match="already exists"):
        generate_key_pair(private_path, public_path)
    assert public_path.read_text() == "keep me"
    assert not private_path.exists()
    with pytest.raises(TrustError, match="cannot create"):
        generate_key_pair(tmp_path / "no" / "dir.key", tmp_path / "dir.pub")
