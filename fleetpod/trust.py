"""The trust store: which Ed25519 keys may sign images, and for which image names.

Layout under the trust directory (mirrors rkt's `trustedkeys/`):

    root.d/<keyid>                     trusted for every image
    prefix.d/<name prefix>/<keyid>     trusted for names under that prefix (nested directories,
                                       one per `/`-separated component of the prefix)

Each file holds one line `ed25519 <base64> [comment]`; its name is the key id (lowercase hex
SHA-256 of the raw public key).

Invariants:
* A prefix applies to a name when it equals the name's first whole path components:
  `example.com/app` covers `example.com/app` and `example.com/app/worker`, never
  `example.com/apple`.
* A key file whose name is not its key's id is an error (`TrustError` naming the file), never
  silently used or skipped; files whose names are not key ids (temporary files) are ignored.
* Writes are atomic (temporary file + rename in the same directory); adding a key twice is a
  no-op; private keys are refused.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from types import EllipsisType

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fleetd.runtime.files import write_atomically
from fleetpod.errors import ImageError, TrustError
from fleetpod.image_manifest import AC_IDENTIFIER, check_identifier
from fleetpod.keys import key_id, load_public_key_with_comment, public_key_line
from fleetpod.limits import MAX_KEY_FILE_BYTES, read_at_most

KEY_ID = re.compile(r"^[0-9a-f]{64}$")
MIN_KEYID_PREFIX = 8


@dataclass(frozen=True)
class TrustedKey:
    """One trusted key file; `prefix` is None for a root key."""

    keyid: str
    prefix: str | None
    path: Path
    comment: str


KeyList = list[TrustedKey]


class TrustStore:
    """Trusted keys in one directory tree."""

    def __init__(self, trust_dir: Path) -> None:
        self.trust_dir = Path(trust_dir)

    @property
    def root_dir(self) -> Path:
        return self.trust_dir / "root.d"

    @property
    def prefix_dir(self) -> Path:
        return self.trust_dir / "prefix.d"

    def directory_for(self, prefix: str | None) -> Path:
        if prefix is None:
            return self.root_dir
        return self.prefix_dir.joinpath(*check_prefix(prefix).split("/"))

    def add(
        self, key_data: bytes, *, prefix: str | None, source: str, comment: str = ""
    ) -> TrustedKey:
        """Trust the public key in `key_data` for names under `prefix` (None: every name)."""
        directory = self.directory_for(prefix)
        public, own_comment = load_public_key_with_comment(key_data, source=source)
        keyid = key_id(public)
        path = directory / keyid
        line = public_key_line(public, comment or own_comment)
        if path.is_file():
            existing = self._read(path, prefix)
            if not (comment or own_comment) or existing.comment == _comment_of(line):
                return existing
        write_atomically(path, (line + "\n").encode("utf-8"))
        return TrustedKey(keyid=keyid, prefix=prefix, path=path, comment=_comment_of(line))

    def list(self) -> KeyList:
        """Every trusted key: root keys first, then by prefix, each sorted by key id."""
        found = self._keys_in(self.root_dir, None)
        if self.prefix_dir.is_dir():
            for directory, _dirs, _files in sorted(os.walk(self.prefix_dir)):
                relative = Path(directory).relative_to(self.prefix_dir).as_posix()
                if relative != ".":
                    found.extend(self._keys_in(Path(directory), relative))
        return found

    def remove(self, keyid: str, *, prefix: str | EllipsisType | None = ...) -> KeyList:
        """Stop trusting `keyid` (or a unique prefix of it, 8+ hex digits); `...` = everywhere."""
        candidates = self.list()
        if not isinstance(prefix, EllipsisType):
            if prefix is not None:
                check_prefix(prefix)
            candidates = [key for key in candidates if key.prefix == prefix]
        chosen = _match_keyid(keyid, candidates, scope=_scope(prefix))
        for key in chosen:
            key.path.unlink(missing_ok=True)
            self._prune(key.path.parent)
        return chosen

    def keys_for(self, name: str) -> dict[str, Ed25519PublicKey]:
        """Key id -> key for every key trusted for image `name` (root and matching prefixes)."""
        if not AC_IDENTIFIER.match(name):
            raise TrustError(f"image name {name!r} is not an AC identifier")
        directories = [self.root_dir]
        components = name.split("/")
        directories += [
            self.prefix_dir.joinpath(*components[:depth]) for depth in range(1, len(components) + 1)
        ]
        keys: dict[str, Ed25519PublicKey] = {}
        for directory in directories:
            for path in _key_files(directory):
                keys[path.name] = self._load(path)[0]
        return keys

    def known_keys(self) -> dict[str, Ed25519PublicKey]:
        """Key id -> key for every trusted key, whatever it is trusted for."""
        return {key.keyid: self._load(key.path)[0] for key in self.list()}

    def _keys_in(self, directory: Path, prefix: str | None) -> KeyList:
        return [self._read(path, prefix) for path in _key_files(directory)]

    def _read(self, path: Path, prefix: str | None) -> TrustedKey:
        _public, comment = self._load(path)
        return TrustedKey(keyid=path.name, prefix=prefix, path=path, comment=comment)

    def _load(self, path: Path) -> tuple[Ed25519PublicKey, str]:
        data = read_at_most(path, MAX_KEY_FILE_BYTES, what="trusted key", error=TrustError)
        public, comment = load_public_key_with_comment(data, source=f"trusted key {str(path)!r}")
        if key_id(public) != path.name:
            raise TrustError(
                f"trusted key file {str(path)!r} holds key {key_id(public)}, not the key its name "
                "says; remove or rename the file"
            )
        return public, comment

    def _prune(self, directory: Path) -> None:
        while directory != self.prefix_dir and directory.is_relative_to(self.prefix_dir):
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent


def check_prefix(prefix: str) -> str:
    """A name prefix must be an AC identifier (so no `..`, no leading or trailing `/`)."""
    try:
        return check_identifier(prefix, "trust prefix")
    except ImageError as error:
        raise TrustError(str(error)) from None


def _key_files(directory: Path) -> list[Path]:
    try:
        entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [
        Path(entry.path)
        for entry in entries
        if KEY_ID.match(entry.name) and entry.is_file(follow_symlinks=False)
    ]


def _comment_of(line: str) -> str:
    fields = line.split(None, 2)
    return fields[2] if len(fields) == 3 else ""


def _scope(prefix: str | EllipsisType | None) -> str:
    if isinstance(prefix, EllipsisType):
        return ""
    return " as a root key" if prefix is None else f" for prefix {prefix!r}"


def _match_keyid(keyid: str, candidates: list[TrustedKey], *, scope: str) -> list[TrustedKey]:
    wanted = keyid.strip().lower()
    if not re.fullmatch(r"[0-9a-f]+", wanted) or len(wanted) < MIN_KEYID_PREFIX:
        raise TrustError(f"key id {keyid!r} must be at least {MIN_KEYID_PREFIX} hex digits")
    matches = [key for key in candidates if key.keyid.startswith(wanted)]
    distinct = {key.keyid for key in matches}
    if not distinct:
        raise TrustError(f"no trusted key matches {keyid!r}{scope}")
    if len(distinct) > 1:
        listed = ", ".join(sorted(distinct))
        raise TrustError(f"key id {keyid!r} is ambiguous: it matches {listed}")
    return matches
