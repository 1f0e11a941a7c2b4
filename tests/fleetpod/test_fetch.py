"""Fetching: paths, file:// and https:// (through httpx.MockTransport), signatures, refusals."""

from __future__ import annotations

import gzip
import lzma
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from fleetpod.config import Insecure
from fleetpod.errors import PodError, TrustError
from fleetpod.fetch import fetch
from fleetpod.image import build_image, image_id_of
from fleetpod.store import ImageRecord, ImageStore
from fleetpod.trust import TrustStore
from tests.fleetpod.conftest import IMAGE_NAME, KeyPair

URL = "https://images.example.com/app-1.0.aci"
Handler = Callable[[httpx.Request], httpx.Response]


def serving(files: dict[str, bytes], requests: list[str] | None = None) -> httpx.Client:
    """A client whose transport serves `files` by URL and 404s anything else."""

    def handle(request: httpx.Request) -> httpx.Response:
        if requests is not None:
            requests.append(str(request.url))
        body = files.get(str(request.url))
        return httpx.Response(404) if body is None else httpx.Response(200, content=body)

    return httpx.Client(transport=httpx.MockTransport(handle))


def client_with(handler: Handler) -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(handler))


def refuse_network(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"unexpected request to {request.url}")


def do_fetch(
    source: str,
    store: ImageStore,
    trust: TrustStore,
    **overrides: Any,
) -> ImageRecord:
    arguments: dict[str, Any] = {
        "store": store,
        "trust": trust,
        "insecure": frozenset(),
        "warn": pytest.fail,
    }
    arguments.update(overrides)
    return fetch(source, **arguments)


def sig_bytes(image: Path) -> bytes:
    return image.with_name(image.name + ".sig").read_bytes()


def assert_store_empty(store: ImageStore) -> None:
    for directory in (store.blobs_dir, store.index_dir, store.trees_dir, store.tmp_dir):
        assert not directory.exists() or os.listdir(directory) == []


def test_a_local_path_uses_the_signature_next_to_it(
    image_store: ImageStore, signed_image: Path, trusted_trust_store: TrustStore, key_pair: KeyPair
) -> None:
    record = do_fetch(str(signed_image), image_store, trusted_trust_store)
    assert record.id == image_id_of(signed_image)
    assert record.signed_by == key_pair.keyid
    assert record.source == str(signed_image.absolute())


def test_a_file_url_is_a_local_path(
    image_store: ImageStore, signed_image: Path, trusted_trust_store: TrustStore
) -> None:
    record = do_fetch(signed_image.as_uri(), image_store, trusted_trust_store)
    assert record.id == image_id_of(signed_image)
    with pytest.raises(PodError, match="names a remote host 'elsewhere'"):
        do_fetch("file://elsewhere/x.aci", image_store, trusted_trust_store)


def test_an_explicit_signature_file_is_used_and_must_exist(
    tmp_path: Path, image_store: ImageStore, signed_image: Path, trusted_trust_store: TrustStore
) -> None:
    elsewhere = tmp_path / "sigs" / "release.sig"
    elsewhere.parent.mkdir()
    shutil.move(signed_image.with_name(signed_image.name + ".sig"), elsewhere)

    with pytest.raises(TrustError, match="has no signature"):
        do_fetch(str(signed_image), image_store, trusted_trust_store)
    record = do_fetch(str(signed_image), image_store, trusted_trust_store, signature=elsewhere)
    assert record.signed_by is not None
    with pytest.raises(PodError, match=r"no signature file .*missing\.sig"):
        do_fetch(
            str(signed_image), image_store, trusted_trust_store, signature=tmp_path / "missing.sig"
        )


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("/no/such/image.aci", "no image file '/no/such/image.aci'"),
        ("docker://busybox", "unsupported image source 'docker://busybox'"),
        ("ftp://example.com/a.aci", "unsupported image source"),
        ("http://example.com/a.aci", "refusing to fetch http://example.com/a.aci over plain HTTP"),
    ],
)
def test_sources_that_are_refused_before_any_request(
    image_store: ImageStore, trust_store: TrustStore, source: str, message: str
) -> None:
    with pytest.raises(PodError) as raised:
        do_fetch(source, image_store, trust_store, client=client_with(refuse_network))
    assert message in str(raised.value)
    assert_store_empty(image_store)


def test_https_downloads_the_image_and_its_signature(
    image_store: ImageStore, signed_image: Path, trusted_trust_store: TrustStore, key_pair: KeyPair
) -> None:
    requests: list[str] = []
    client = serving(
        {URL: signed_image.read_bytes(), URL + ".sig": sig_bytes(signed_image)}, requests
    )

    record = do_fetch(URL, image_store, trusted_trust_store, client=client)

    assert requests == [URL + ".sig", URL]  # the signature first
    assert (record.id, record.source, record.signed_by) == (
        image_id_of(signed_image),
        URL,
        key_pair.keyid,
    )
    assert os.listdir(image_store.tmp_dir) == []


def test_https_redirects_are_followed_one_hop_at_a_time(
    image_store: ImageStore, signed_image: Path, trusted_trust_store: TrustStore
) -> None:
    moved = "https://mirror.example.com/images/app-1.0.aci"
    files = {moved: signed_image.read_bytes(), moved + ".sig": sig_bytes(signed_image)}
    requests: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        requests.append(str(request.url))
        if request.url.host == "images.example.com":
            location = moved + (".sig" if request.url.path.endswith(".sig") else "")
            return httpx.Response(301, headers={"location": location})
        body = files.get(str(request.url))
        return httpx.Response(404) if body is None else httpx.Response(200, content=body)

    record = do_fetch(URL, image_store, trusted_trust_store, client=client_with(handle))
    assert record.source == URL
    assert sorted(requests) == sorted([URL, moved, URL + ".sig", moved + ".sig"])


def test_https_with_a_local_signature_does_not_download_one(
    image_store: ImageStore, signed_image: Path, trusted_trust_store: TrustStore
) -> None:
    requests: list[str] = []
    client = serving({URL: signed_image.read_bytes()}, requests)
    signature = signed_image.with_name(signed_image.name + ".sig")
    record = do_fetch(URL, image_store, trusted_trust_store, client=client, signature=signature)
    assert requests == [URL]
    assert record.signed_by is not None


def test_a_missing_remote_signature_means_unsigned(
    image_store: ImageStore,
    signed_image: Path,
    trusted_trust_store: TrustStore,
    warnings_seen: list[str],
) -> None:
    requests: list[str] = []
    client = serving({URL: signed_image.read_bytes()}, requests)
    with pytest.raises(TrustError, match=f"image {URL} has no signature"):
        do_fetch(URL, image_store, trusted_trust_store, client=client)
    assert requests == [URL + ".sig"]  # refused before the image is downloaded
    assert_store_empty(image_store)

    record = do_fetch(
        URL,
        image_store,
        trusted_trust_store,
        client=client,
        insecure=frozenset({Insecure.IMAGE}),
        warn=warnings_seen.append,
    )
    assert record.insecure is True
    assert any("SIGNATURE CHECK DISABLED" in w for w in warnings_seen)


@pytest.mark.parametrize(
    ("variant", "message"),
    [("recompressed", "archive hash mismatch"), ("rebuilt", "hash mismatch: the signature is for")],
)
def test_a_remote_signature_for_other_bytes_is_refused(
    image_store: ImageStore,
    signed_image: Path,
    trusted_trust_store: TrustStore,
    variant: str,
    message: str,
) -> None:
    if variant == "recompressed":  # the same tar, so the same image id, but other file bytes
        served = lzma.compress(gzip.decompress(signed_image.read_bytes()))
    else:
        workspace = signed_image.parent
        source = workspace / "rebuilt-src"
        (source / "bin").mkdir(parents=True)
        (source / "bin" / "hello").write_text("#!/bin/sh\necho pwned\n")
        build_image(source, workspace / "re.aci", name=IMAGE_NAME, version="1.0", exec_=["/x"])
        served = (workspace / "re.aci").read_bytes()
    client = serving({URL: served, URL + ".sig": sig_bytes(signed_image)})
    with pytest.raises(TrustError) as raised:
        do_fetch(URL, image_store, trusted_trust_store, client=client)
    assert message in str(raised.value)
    assert_store_empty(image_store)


def _status(code: int) -> Handler:
    return lambda request: httpx.Response(code)


def _connection_refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def _redirect_to_http(request: httpx.Request) -> httpx.Response:
    if request.url.scheme == "https":
        return httpx.Response(302, headers={"location": "http://images.example.com/app.aci"})
    return httpx.Response(200, content=b"x")


def _redirect_to_ftp(request: httpx.Request) -> httpx.Response:
    return httpx.Response(301, headers={"location": "ftp://images.example.com/app.aci"})


def _redirect_forever(request: httpx.Request) -> httpx.Response:
    return httpx.Response(302, headers={"location": f"{request.url}x"})


def _huge_declared(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, headers={"content-length": str(10**12)}, content=b"")


def _huge_streamed(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=iter([b"x" * 600, b"x" * 600]))


@pytest.mark.parametrize(
    ("handler", "message"),
    [
        (_status(404), f"fetching {URL} failed: not found"),
        (_status(500), f"fetching {URL} failed: HTTP 500 Internal Server Error"),
        (_status(403), "HTTP 403 Forbidden"),
        (_connection_refused, f"fetching {URL} failed: connection refused"),
        (_redirect_to_http, "redirected to plain HTTP (http://images.example.com/app.aci)"),
        (_redirect_to_ftp, "redirected to ftp://images.example.com/app.aci, which is not an"),
        (_redirect_forever, f"fetching {URL} failed: more than 20 redirects"),
        (_huge_declared, "is larger than the limit of 1000 bytes"),
        (_huge_streamed, "is larger than the limit of 1000 bytes"),
    ],
    ids=[
        "404",
        "500",
        "403",
        "connect",
        "downgrade",
        "other-scheme",
        "endless-redirects",
        "declared-size",
        "streamed-size",
    ],
)
def test_download_failures_are_reported_and_leave_nothing(
    image_store: ImageStore, trust_store: TrustStore, handler: Handler, message: str
) -> None:
    def signed(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith(".sig"):
            return httpx.Response(200, content=b"{}")  # not looked at: the image fails first
        return handler(request)

    with pytest.raises(PodError) as raised:
        do_fetch(URL, image_store, trust_store, client=client_with(signed), max_bytes=1000)
    assert message in str(raised.value)
    assert_store_empty(image_store)


def test_a_failing_signature_download_is_an_error(
    image_store: ImageStore, signed_image: Path, trust_store: TrustStore
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if str(request.url).endswith(".sig"):
            return httpx.Response(503)
        return httpx.Response(200, content=signed_image.read_bytes())

    with pytest.raises(PodError, match=r"fetching .*\.sig failed: HTTP 503"):
        do_fetch(URL, image_store, trust_store, client=client_with(handler))
    assert_store_empty(image_store)


def test_plain_http_and_any_certificate_need_their_insecure_options_and_warn(
    image_store: ImageStore,
    signed_image: Path,
    trusted_trust_store: TrustStore,
    warnings_seen: list[str],
) -> None:
    url = "http://images.example.com/app.aci"
    client = serving({url: signed_image.read_bytes(), url + ".sig": sig_bytes(signed_image)})
    record = do_fetch(
        url,
        image_store,
        trusted_trust_store,
        client=client,
        insecure=frozenset({Insecure.HTTP, Insecure.TLS}),
        warn=warnings_seen.append,
    )
    assert record.source == url
    assert warnings_seen == [
        f"WARNING: FETCHING OVER PLAIN HTTP (--insecure-options=http): {url}",
        f"WARNING: TLS CERTIFICATE CHECKS DISABLED (--insecure-options=tls) for {url}",
    ]
