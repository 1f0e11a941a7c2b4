"""TLS on fleetd's TCP listeners, and client certificates as a way in besides the bearer token.

Role: build the `ssl.SSLContext` the TCP listeners serve with, from `api_certfile`,
`api_keyfile` and `api_client_cafile`, and mark the requests whose client presented a
certificate that the client CA verified.

Invariants:
* With `api_client_cafile` and no `api_token_file`, a client must present a certificate signed
  by that CA (`CERT_REQUIRED`): any other client fails the TLS handshake, before any HTTP.
* With both, a certificate is optional (`CERT_OPTIONAL`): one that is presented must verify, or
  the handshake fails; a client without one must send the bearer token (`BearerToken` lets
  through the requests that carry `client_cert_name`, see below).
* Without a client CA, TLS only encrypts: the bearer token is what authenticates.
* A verified client certificate reaches the app as ASGI's TLS extension
  (`scope["extensions"]["tls"]["client_cert_name"]`, the subject in RFC 4514 form), added by
  `GuardedH11Protocol`; nothing else sets it.
* TLS 1.2 at least; unreadable or mismatched files raise `TlsConfigError` naming the option.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send


class TlsConfigError(RuntimeError):
    """A TLS file fleetd cannot use: the message names the option and the file."""


def server_context(
    certfile: str, keyfile: str, client_cafile: str, *, token: bool
) -> ssl.SSLContext:
    """The context of the TCP listeners (see the module for the verify mode)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise TlsConfigError(
            f"api_certfile {certfile} / api_keyfile {keyfile}: cannot load the certificate and "
            f"its key: {exc}"
        ) from None
    if client_cafile:
        try:
            context.load_verify_locations(cafile=client_cafile)
        except (OSError, ssl.SSLError) as exc:
            problem = f"api_client_cafile {client_cafile}: cannot load it: {exc}"
            raise TlsConfigError(problem) from None
        context.verify_mode = ssl.CERT_OPTIONAL if token else ssl.CERT_REQUIRED
    return context


_SHORT_NAMES = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU"}


def subject_name(certificate: Mapping[str, Any]) -> str:
    """The subject of a certificate as `ssl.SSLSocket.getpeercert()` gives it, RFC 4514 style
    (`CN=admin,O=ops`, most specific first)."""
    return ",".join(
        f"{_SHORT_NAMES.get(key, key)}={value}"
        for rdn in reversed(certificate.get("subject", ()))
        for key, value in rdn
    )


def with_client_certificate(app: ASGIApp, ssl_object: ssl.SSLObject | None) -> ASGIApp:
    """`app`, with ASGI's TLS extension in every scope when the connection's client presented a
    verified certificate (the handshake refuses one that does not verify); else `app` itself."""
    certificate = ssl_object.getpeercert() if ssl_object is not None else None
    if not certificate:
        return app
    tls = {
        "client_cert_name": subject_name(certificate),
        "client_cert_error": None,
        "tls_version": ssl_object.version() if ssl_object is not None else None,
    }

    async def serve(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope = {**scope, "extensions": {**scope.get("extensions", {}), "tls": tls}}
        await app(scope, receive, send)

    return serve


def client_certificate_name(scope: Scope) -> str:
    """The verified client certificate's subject of the request, or "" when it has none."""
    tls = (scope.get("extensions") or {}).get("tls") or {}
    name = tls.get("client_cert_name")
    return name if isinstance(name, str) else ""
