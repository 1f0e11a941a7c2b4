"""`fetch` over real HTTPS: a TLS server on loopback with a certificate made by the test.

The server serves a directory (the image, its signature, or not); the client trusts the test's
CA, the system's (which do not know it) or, with `--insecure-options=tls`, none.
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
import shutil
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fleetpod.config import Insecure
from fleetpod.errors import PodError, TrustError
from fleetpod.fetch import fetch
from fleetpod.store import ImageRecord, ImageStore
from fleetpod.trust import TrustStore
from tests.fleetpod.conftest import IMAGE_NAME, KeyPair


@dataclass(frozen=True)
class Server:
    url: str
    root: Path
    ca: Path
    httpd: LoopbackServer


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that is its own CA, and its key (PEM files)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pyfleet test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return


class LoopbackServer(ThreadingHTTPServer):
    """Records the paths it is asked for; redirects every GET to `redirect_to` when set."""

    redirect_to: str | None = None
    requests: list[str]


class RecordingHandler(QuietHandler):
    server: LoopbackServer

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        if self.server.redirect_to is None:
            super().do_GET()
            return
        self.send_response(302)
        self.send_header("Location", self.server.redirect_to + self.path)
        self.send_header("Content-Length", "0")
        self.end_headers()


def start(root: Path) -> LoopbackServer:
    httpd = LoopbackServer(
        ("127.0.0.1", 0), functools.partial(RecordingHandler, directory=str(root))
    )
    httpd.requests = []
    return httpd


@contextmanager
def serving(httpd: LoopbackServer) -> Iterator[LoopbackServer]:
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    root = tmp_path / "www"
    root.mkdir()
    cert, key = self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd = start(root)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    with serving(httpd):
        yield Server(f"https://127.0.0.1:{httpd.server_address[1]}", root, cert, httpd)


@pytest.fixture
def plain_server(tmp_path: Path) -> Iterator[Server]:
    """A plain-HTTP server on loopback (no certificate: `ca` is unused)."""
    root = tmp_path / "plain"
    root.mkdir()
    with serving(start(root)) as httpd:
        yield Server(f"http://127.0.0.1:{httpd.server_address[1]}", root, Path(), httpd)


def publish(server: Server, image: Path, *, signed: bool = True) -> str:
    shutil.copy(image, server.root / image.name)
    if signed:
        shutil.copy(image.with_name(image.name + ".sig"), server.root)
    return f"{server.url}/{image.name}"


@dataclass(frozen=True)
class Node:
    """The fetching side: its store, its trust store (trusting the test key for the image's
    name), the key, and the warnings it printed."""

    store: ImageStore
    trust: TrustStore
    key: KeyPair
    warnings: list[str]

    def fetch(self, url: str, **options: Any) -> ImageRecord:
        options.setdefault("insecure", frozenset())
        return fetch(url, store=self.store, trust=self.trust, warn=self.warnings.append, **options)


@pytest.fixture
def node(image_store: ImageStore, trust_store: TrustStore, key_pair: KeyPair) -> Node:
    trust_store.add(key_pair.public_path.read_bytes(), prefix=IMAGE_NAME, source="test")
    return Node(image_store, trust_store, key_pair, [])


def trusting_ca(server: Server) -> httpx.Client:
    return httpx.Client(verify=ssl.create_default_context(cafile=server.ca))


def test_a_signed_image_over_https(server: Server, signed_image: Path, node: Node) -> None:
    url = publish(server, signed_image)
    with trusting_ca(server) as client:
        record = node.fetch(url, client=client)
    assert (record.name, record.signed_by, record.source) == (IMAGE_NAME, node.key.keyid, url)
    assert [r.id for r in node.store.list()] == [record.id]


def test_no_signature_beside_it_is_unsigned(server: Server, signed_image: Path, node: Node) -> None:
    url = publish(server, signed_image, signed=False)  # the server answers 404 for the .sig
    with trusting_ca(server) as client, pytest.raises(TrustError, match=r"has no signature"):
        node.fetch(url, client=client)
    assert node.store.list() == []


def test_a_certificate_nobody_vouches_for_is_refused_unless_tls_is_insecure(
    server: Server, signed_image: Path, node: Node
) -> None:
    url = publish(server, signed_image)
    with pytest.raises(PodError, match=r"fetching https://127\.0\.0\.1:\d+/.* failed: .*CERT"):
        node.fetch(url)
    assert node.store.list() == []
    record = node.fetch(url, insecure=frozenset({Insecure.TLS}))
    assert record.signed_by == node.key.keyid  # TLS was off; the signature was still checked
    assert any("tls" in seen.lower() for seen in node.warnings), node.warnings


def test_plain_http_is_refused_without_insecure_http(node: Node) -> None:
    with pytest.raises(PodError, match=r"--insecure-options=http"):
        node.fetch("http://127.0.0.1:9/app.aci")
    assert node.store.list() == []


def test_a_redirect_to_plain_http_is_refused_before_it_is_followed(
    server: Server, plain_server: Server, signed_image: Path, node: Node
) -> None:
    """The https server sends the client to http://: no plain request may leave the client."""
    publish(plain_server, signed_image)
    server.httpd.redirect_to = plain_server.url
    url = f"{server.url}/{signed_image.name}"
    with trusting_ca(server) as client, pytest.raises(PodError) as raised:
        node.fetch(url, client=client)
    assert "redirected to plain HTTP" in str(raised.value)
    assert "--insecure-options=http" in str(raised.value)
    assert server.httpd.requests == [f"/{signed_image.name}.sig"]  # the signature comes first
    assert plain_server.httpd.requests == []
    assert node.store.list() == []
    assert not node.store.tmp_dir.exists() or list(node.store.tmp_dir.iterdir()) == []
