"""Fetch an image from a path, a `file://` URL or an `https://` URL into the store.

The signature defaults to the image's location plus `.sig` (a missing one means "unsigned",
which the store then refuses unless `Insecure.IMAGE`); `signature=` overrides it with a local
file that must exist.

Invariants:
* Plain `http://` is refused unless `Insecure.HTTP`, also when an https URL redirects to http:
  redirects are followed one by one and each target is checked before anything is sent to it;
  `Insecure.TLS` turns certificate checks off. Each insecure switch that takes effect is reported
  through `warn`.
* The signature is fetched first; a missing one refuses the image before it is downloaded
  (unless `Insecure.IMAGE`).
* Downloads stream into the store's `tmp/` (same filesystem) and are bounded (`max_bytes`,
  4 GiB by default, which also bounds the decompressed image; signatures 1 MiB); the temporary
  file is removed whatever happens.
* The image is committed only by `ImageStore.import_archive`, which verifies it first.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

import httpx

from fleetpod.config import Insecure
from fleetpod.errors import PodError
from fleetpod.image import CHUNK
from fleetpod.limits import DEFAULT_MAX_IMAGE_BYTES, MAX_SIGNATURE_BYTES, read_at_most
from fleetpod.store import ImageRecord, ImageStore, unsigned_error
from fleetpod.trust import TrustStore

SIGNATURE_SUFFIX = ".sig"
MISSING_STATUSES = frozenset({404, 410})


@dataclass(frozen=True)
class _Importer:
    """Where a fetched file goes and what checks it must pass."""

    store: ImageStore
    trust: TrustStore
    insecure: frozenset[Insecure]
    warn: Callable[[str], None]
    max_bytes: int

    def run(self, archive: Path, signature: bytes | None, source: str) -> ImageRecord:
        return self.store.import_archive(
            archive,
            signature=signature,
            trust=self.trust,
            insecure=self.insecure,
            source=source,
            warn=self.warn,
            max_bytes=self.max_bytes,
        )


def fetch(
    source: str,
    *,
    store: ImageStore,
    trust: TrustStore,
    insecure: frozenset[Insecure],
    warn: Callable[[str], None],
    signature: Path | None = None,
    client: httpx.Client | None = None,
    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
) -> ImageRecord:
    """Import the image at `source` (path or URL) after verifying it; its record. `max_bytes`
    bounds the download and the decompressed image."""
    importer = _Importer(
        store=store, trust=trust, insecure=insecure, warn=warn, max_bytes=max_bytes
    )
    if "://" not in source:
        return _fetch_file(importer, Path(source), signature)
    url = urlsplit(source)
    scheme = url.scheme.lower()
    if scheme == "file":
        if url.netloc not in ("", "localhost"):
            raise PodError(f"file URL {source!r} names a remote host {url.netloc!r}")
        return _fetch_file(importer, Path(unquote(url.path)), signature)
    if scheme not in ("https", "http"):
        raise PodError(
            f"unsupported image source {source!r} (give a path, a file:// or an https:// URL)"
        )
    if scheme == "http":
        if Insecure.HTTP not in insecure:
            raise PodError(
                f"refusing to fetch {source} over plain HTTP; use https, or --insecure-options=http"
            )
        warn(f"WARNING: FETCHING OVER PLAIN HTTP (--insecure-options=http): {source}")
    if Insecure.TLS in insecure:
        warn(f"WARNING: TLS CERTIFICATE CHECKS DISABLED (--insecure-options=tls) for {source}")
    own_client = client is None
    http = client or httpx.Client(
        verify=Insecure.TLS not in insecure, timeout=httpx.Timeout(30.0, read=300.0)
    )
    try:
        return _fetch_url(importer, source, http, signature)
    finally:
        if own_client:
            http.close()


def _fetch_file(importer: _Importer, path: Path, signature: Path | None) -> ImageRecord:
    if not path.is_file():
        raise PodError(f"no image file {str(path)!r}")
    signature_bytes = _read_signature(
        signature or path.with_name(path.name + SIGNATURE_SUFFIX), required=signature is not None
    )
    return importer.run(path, signature_bytes, str(path.absolute()))


def _read_signature(path: Path, *, required: bool) -> bytes | None:
    if not os.path.lexists(path):
        if required:
            raise PodError(f"no signature file {str(path)!r}")
        return None
    return read_at_most(path, MAX_SIGNATURE_BYTES, what="signature")


def _fetch_url(
    importer: _Importer, url: str, client: httpx.Client, signature: Path | None
) -> ImageRecord:
    """The signature first: without one (and without `Insecure.IMAGE`) the image is not
    downloaded at all."""
    insecure = importer.insecure
    if signature is not None:
        signature_bytes = _read_signature(signature, required=True)
    else:
        buffer = io.BytesIO()
        found = _download(client, url + SIGNATURE_SUFFIX, buffer, insecure, MAX_SIGNATURE_BYTES)
        signature_bytes = buffer.getvalue() if found else None
    if signature_bytes is None and Insecure.IMAGE not in insecure:
        raise unsigned_error(url)
    with importer.store.temporary_file("fetch-", ".aci") as (temporary, fd):
        with open(fd, "wb", closefd=False) as out:
            if not _download(client, url, out, insecure, importer.max_bytes):
                raise PodError(f"fetching {url} failed: not found (HTTP 404)")
        return importer.run(temporary, signature_bytes, url)


def _download(
    client: httpx.Client,
    url: str,
    out: BinaryIO,
    insecure: frozenset[Insecure],
    max_bytes: int,
) -> bool:
    """Stream `url` into `out`; False if the server says it does not exist.

    Redirects are followed here, one hop at a time, so that each target is checked before a
    request goes to it: a plain-HTTP target (without `Insecure.HTTP`) or another scheme is
    refused without being contacted."""
    try:
        request = client.build_request("GET", url)
        for _hop in range(client.max_redirects + 1):
            response = client.send(request, stream=True, follow_redirects=False)
            try:
                following = response.next_request
                if following is None:
                    return _receive(response, url, out, max_bytes)
            finally:
                response.close()
            _check_redirect(url, following.url, insecure)
            request = following
    except httpx.HTTPError as error:
        raise PodError(f"fetching {url} failed: {error}") from None
    raise PodError(f"fetching {url} failed: more than {client.max_redirects} redirects")


def _check_redirect(url: str, target: httpx.URL, insecure: frozenset[Insecure]) -> None:
    if target.scheme == "http" and Insecure.HTTP not in insecure:
        raise PodError(
            f"{url} redirected to plain HTTP ({target}); refusing without --insecure-options=http"
        )
    if target.scheme not in ("https", "http"):
        raise PodError(f"{url} redirected to {target}, which is not an http(s) URL; refusing")


def _receive(response: httpx.Response, url: str, out: BinaryIO, max_bytes: int) -> bool:
    if response.status_code in MISSING_STATUSES:
        return False
    if response.status_code != 200:
        raise PodError(
            f"fetching {url} failed: HTTP {response.status_code} {response.reason_phrase}"
        )
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise PodError(f"{url} is larger than the limit of {max_bytes} bytes")
    total = 0
    for chunk in response.iter_bytes(CHUNK):
        total += len(chunk)
        if total > max_bytes:
            raise PodError(f"{url} is larger than the limit of {max_bytes} bytes")
        out.write(chunk)
    return True
