"""The trust store: layout, whole-component prefixes, idempotence, removal, bad files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fleetpod.errors import TrustError
from fleetpod.keys import key_id, public_key_line
from fleetpod.trust import TrustedKey, TrustStore, _match_keyid
from tests.fleetpod.conftest import KeyPair


def test_add_writes_rkt_style_files_named_by_key_id(
    trust_store: TrustStore, key_pair: KeyPair, other_key_pair: KeyPair
) -> None:
    root = trust_store.add(other_key_pair.public_path.read_bytes(), prefix=None, source="root")
    scoped = trust_store.add(
        key_pair.public_path.read_bytes(), prefix="example.com/app", source="app", comment="ci"
    )

    trust_dir = trust_store.trust_dir
    assert root == TrustedKey(
        keyid=other_key_pair.keyid,
        prefix=None,
        path=trust_dir / "root.d" / other_key_pair.keyid,
        comment="stranger",
    )
    assert scoped.path == trust_dir / "prefix.d" / "example.com" / "app" / key_pair.keyid
    assert scoped.comment == "ci"
    expected_line = public_key_line(key_pair.private.public_key(), "ci") + "\n"
    assert scoped.path.read_text() == expected_line
    assert trust_store.list() == [root, scoped]


def test_add_is_idempotent(trust_store: TrustStore, key_pair: KeyPair) -> None:
    data = key_pair.public_path.read_bytes()
    first = trust_store.add(data, prefix="example.com", source="k")
    second = trust_store.add(data, prefix="example.com", source="k")
    assert first == second
    assert os.listdir(first.path.parent) == [key_pair.keyid]


def test_adding_again_with_a_new_comment_updates_it(
    trust_store: TrustStore, key_pair: KeyPair
) -> None:
    data = key_pair.public_path.read_bytes()
    trust_store.add(data, prefix=None, source="k")
    updated = trust_store.add(data, prefix=None, source="k", comment="renamed")
    assert trust_store.list() == [updated]
    assert updated.comment == "renamed"


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        ("Example.com", "trust prefix 'Example.com' is not an AC identifier"),
        ("example.com/", "is not an AC identifier"),
        ("/example.com", "is not an AC identifier"),
        ("example.com/../etc", "is not an AC identifier"),
        ("", "is not an AC identifier"),
    ],
)
def test_add_refuses_a_bad_prefix(
    trust_store: TrustStore, key_pair: KeyPair, prefix: str, message: str
) -> None:
    with pytest.raises(TrustError, match=message):
        trust_store.add(key_pair.public_path.read_bytes(), prefix=prefix, source="k")
    assert not trust_store.trust_dir.exists()


def test_add_refuses_a_private_key_and_garbage(trust_store: TrustStore, key_pair: KeyPair) -> None:
    with pytest.raises(TrustError, match=r"key file 'x\.key' is a private key"):
        trust_store.add(key_pair.private_path.read_bytes(), prefix=None, source="key file 'x.key'")
    with pytest.raises(TrustError, match="is not an Ed25519 public key"):
        trust_store.add(b"not a key", prefix=None, source="k")
    assert trust_store.list() == []


@pytest.mark.parametrize(
    ("name", "applies"),
    [
        ("example.com/app", True),
        ("example.com/app/worker", True),
        ("example.com/app/worker/v2", True),
        ("example.com/apple", False),
        ("example.com", False),
        ("example.com/ap", False),
        ("other.com/app", False),
    ],
)
def test_a_prefix_applies_by_whole_path_components(
    trust_store: TrustStore, key_pair: KeyPair, other_key_pair: KeyPair, name: str, applies: bool
) -> None:
    trust_store.add(key_pair.public_path.read_bytes(), prefix="example.com/app", source="k")
    trust_store.add(other_key_pair.public_path.read_bytes(), prefix=None, source="root")
    keys = trust_store.keys_for(name)
    assert other_key_pair.keyid in keys  # a root key applies to every name
    assert (key_pair.keyid in keys) is applies
    assert all(key_id(public) == keyid for keyid, public in keys.items())


def test_keys_for_an_empty_store_is_empty(trust_store: TrustStore) -> None:
    assert trust_store.keys_for("example.com/app") == {}
    assert trust_store.list() == []


@pytest.mark.parametrize("name", ["../../etc", "example.com/", "Example.com/app", ""])
def test_keys_for_refuses_a_name_that_is_not_an_identifier(
    trust_store: TrustStore, name: str
) -> None:
    with pytest.raises(TrustError, match="is not an AC identifier"):
        trust_store.keys_for(name)


def test_a_key_file_under_the_wrong_name_is_an_error_naming_it(
    trust_store: TrustStore, key_pair: KeyPair, other_key_pair: KeyPair
) -> None:
    added = trust_store.add(key_pair.public_path.read_bytes(), prefix="example.com", source="k")
    impostor = added.path.parent / other_key_pair.keyid
    impostor.write_bytes(key_pair.public_path.read_bytes())  # key_pair's key, other's name
    with pytest.raises(TrustError) as raised:
        trust_store.keys_for("example.com/app")
    assert str(impostor) in str(raised.value)
    assert f"holds key {key_pair.keyid}" in str(raised.value)
    with pytest.raises(TrustError, match="not the key its name says"):
        trust_store.list()


def test_a_damaged_key_file_is_an_error_naming_it(trust_store: TrustStore) -> None:
    bad = trust_store.trust_dir / "root.d" / ("ab" * 32)
    bad.parent.mkdir(parents=True)
    bad.write_text("ed25519 garbage!!")
    with pytest.raises(TrustError, match=str(bad)):
        trust_store.keys_for("example.com/app")


def test_files_that_are_not_key_ids_are_ignored(trust_store: TrustStore, key_pair: KeyPair) -> None:
    added = trust_store.add(key_pair.public_path.read_bytes(), prefix=None, source="k")
    (added.path.parent / f".{key_pair.keyid}.123.tmp").write_text("half written")
    (added.path.parent / "README").write_text("notes")
    assert trust_store.list() == [added]
    assert list(trust_store.keys_for("a")) == [key_pair.keyid]


def test_remove_everywhere_by_unique_prefix_and_prune_empty_directories(
    trust_store: TrustStore, key_pair: KeyPair, other_key_pair: KeyPair
) -> None:
    data = key_pair.public_path.read_bytes()
    root = trust_store.add(data, prefix=None, source="k")
    scoped = trust_store.add(data, prefix="example.com/app", source="k")
    kept = trust_store.add(other_key_pair.public_path.read_bytes(), prefix=None, source="k")

    removed = trust_store.remove(key_pair.keyid[:8].upper())

    assert removed == [root, scoped]
    assert trust_store.list() == [kept]
    assert not (trust_store.trust_dir / "prefix.d" / "example.com").exists()
    assert (trust_store.trust_dir / "prefix.d").is_dir()


def test_remove_within_one_scope(trust_store: TrustStore, key_pair: KeyPair) -> None:
    data = key_pair.public_path.read_bytes()
    root = trust_store.add(data, prefix=None, source="k")
    app = trust_store.add(data, prefix="example.com/app", source="k")
    other = trust_store.add(data, prefix="example.com/other", source="k")

    assert trust_store.remove(key_pair.keyid, prefix="example.com/app") == [app]
    assert trust_store.remove(key_pair.keyid, prefix=None) == [root]
    assert trust_store.list() == [other]
    with pytest.raises(TrustError, match=r"no trusted key matches .* for prefix 'example\.com/app"):
        trust_store.remove(key_pair.keyid, prefix="example.com/app")
    with pytest.raises(TrustError, match="as a root key"):
        trust_store.remove(key_pair.keyid, prefix=None)


@pytest.mark.parametrize(
    ("keyid", "message"),
    [
        ("abc", "must be at least 8 hex digits"),
        ("not-hex-at-all", "must be at least 8 hex digits"),
        ("0123456789", "no trusted key matches '0123456789'"),
    ],
)
def test_remove_refuses_short_bad_and_unknown_ids(
    trust_store: TrustStore, key_pair: KeyPair, keyid: str, message: str
) -> None:
    trust_store.add(key_pair.public_path.read_bytes(), prefix=None, source="k")
    with pytest.raises(TrustError, match=message):
        trust_store.remove(keyid)
    assert len(trust_store.list()) == 1


def test_an_ambiguous_key_id_prefix_is_refused() -> None:
    """Two real keys sharing 8 hex digits are too rare to generate, so match on records."""
    keys = [
        TrustedKey(keyid="12345678" + "a" * 56, prefix=None, path=Path("a"), comment=""),
        TrustedKey(keyid="12345678" + "b" * 56, prefix=None, path=Path("b"), comment=""),
    ]
    with pytest.raises(TrustError, match="key id '12345678' is ambiguous"):
        _match_keyid("12345678", keys, scope="")
    assert _match_keyid("12345678a", keys, scope="") == [keys[0]]
