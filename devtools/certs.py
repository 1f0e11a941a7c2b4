"""A throw-away certificate authority for fleetd's TLS listener: the CA, a server certificate
and client certificates, as PEM files (tests, and the rig's `--endpoint https://` set-up).

    python -m devtools.certs DIR [HOST_OR_IP ...]

writes DIR/ca.pem, DIR/server.pem + DIR/server-key.pem (valid for localhost, 127.0.0.1 and the
names given), DIR/client.pem + DIR/client-key.pem (signed by the CA), and a second CA's client
certificate, DIR/stranger.pem + DIR/stranger-key.pem, that fleetd must refuse. Keys are ECDSA
P-256, written 0600. Uses `cryptography`, which pyfleet already depends on (fleet-pod's
signatures); fleetd itself only needs Python's `ssl`.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_FOR = datetime.timedelta(days=30)


@dataclass(frozen=True)
class Issued:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def write(self, directory: Path, name: str) -> tuple[Path, Path]:
        """Write NAME.pem and NAME-key.pem (0600); returns both paths."""
        cert_path, key_path = directory / f"{name}.pem", directory / f"{name}-key.pem"
        cert_path.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(
                self.key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
        return cert_path, key_path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(
    subject: str, issuer: x509.Name, key: ec.EllipticCurvePrivateKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALID_FOR)
    )


def make_ca(common_name: str = "pyfleet test CA") -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        _builder(common_name, _name(common_name), key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return Issued(certificate, key)


def issue(ca: Issued, common_name: str, *, server_names: tuple[str, ...] = ()) -> Issued:
    """Signed by `ca`: a server certificate (for `server_names`), else a client certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    builder = _builder(common_name, ca.certificate.subject, key).add_extension(
        x509.BasicConstraints(ca=False, path_length=None), critical=True
    )
    if server_names:
        alternatives: list[x509.GeneralName] = []
        for name in server_names:
            try:
                alternatives.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alternatives.append(x509.DNSName(name))
        builder = builder.add_extension(
            x509.SubjectAlternativeName(alternatives), critical=False
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    return Issued(builder.sign(ca.key, hashes.SHA256()), key)


@dataclass(frozen=True)
class CertFiles:
    """The files `write_all` made."""

    ca: Path
    server: Path
    server_key: Path
    client: Path
    client_key: Path
    stranger: Path
    stranger_key: Path


def write_all(directory: Path, server_names: tuple[str, ...] = ()) -> CertFiles:
    directory.mkdir(parents=True, exist_ok=True)
    ca = make_ca()
    ca_path = directory / "ca.pem"
    ca_path.write_bytes(ca.certificate.public_bytes(serialization.Encoding.PEM))
    names = ("localhost", "127.0.0.1", *server_names)
    server, server_key = issue(ca, "fleetd", server_names=names).write(directory, "server")
    client, client_key = issue(ca, "fleetctl").write(directory, "client")
    other_ca = make_ca("another CA")
    stranger, stranger_key = issue(other_ca, "stranger").write(directory, "stranger")
    return CertFiles(ca_path, server, server_key, client, client_key, stranger, stranger_key)


def main(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        sys.stderr.write(__doc__ or "")
        return 2
    files = write_all(Path(argv[0]), tuple(argv[1:]))
    for path in sorted(vars(files).values()):
        sys.stdout.write(f"{path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
