"""The node-to-node endpoint: what one fleetd asks of another, behind the cluster credential.

A fleetd with `peer_listen` serves this small app on that TCP address, and its agent publishes
the address in its machine record (`peerAddress`), so the fleetd that receives a client's request
for a unit's journal can ask the fleetd of the unit's machine for it (`fleetd.api.journal`).

* `GET /peer/v1/journal/{unit}?lines=N&follow=true|false`: the unit's journal on this machine,
  as newline-delimited JSON (`application/x-ndjson`), one `journalctl -o json` entry per line
  (`fleetd.runtime.journal`). A followed read streams until the asking fleetd hangs up.
* Every request needs `Authorization: Bearer <cluster credential>`: the content of
  `cluster_secret_file`, the same on every machine, compared in constant time. Anything else is
  a 401 with fleet's error envelope, before any route runs; there is no open path here, not even
  a health check. The credential is never logged.

The app is separate from the v1 API (its own listener, its own credential): a client token does
not open it, and the cluster credential does not open the v1 API.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import structlog
from fastapi import FastAPI, Query, Response
from fastapi.responses import StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from fleetd import __version__
from fleetd.api.errors import Unauthorized, Unavailable, install_error_handlers, response_for
from fleetd.api.journal import NDJSON, PEER_PREFIX
from fleetd.api.listeners import bind_tcp, serve_on
from fleetd.api.routing import bearer_matches
from fleetd.core.names import validate_unit_name
from fleetd.runtime.journal import MAX_LINES, JournalError, JournalQuery, read_journal

log = structlog.get_logger(__name__)

JournalReader = Callable[[JournalQuery], AsyncIterator[bytes]]


class ClusterCredential:
    """Refuse every request without `Authorization: Bearer <secret>` (constant-time check)."""

    def __init__(self, app: ASGIApp, secret: str) -> None:
        if not secret:
            raise ValueError("the cluster credential must not be empty")
        self.app = app
        self._expected = secret.encode()

    def _accepts(self, headers: list[tuple[bytes, bytes]]) -> bool:
        return bearer_matches(headers, self._expected)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self._accepts(scope["headers"]):
            response = response_for(Unauthorized("missing or wrong cluster credential"))
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def create_peer_app(secret: str, reader: JournalReader = read_journal) -> FastAPI:
    """The node-to-node app, reading journals with `reader`, behind `secret`."""
    if not secret:
        raise ValueError("the cluster credential must not be empty")
    app = FastAPI(
        title="fleetd node-to-node",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        redirect_slashes=False,
    )
    install_error_handlers(app, {})

    @app.get(PEER_PREFIX + "/journal/{unit}")
    async def journal(
        unit: str,
        lines: int = Query(10, ge=0, le=MAX_LINES),
        follow: bool = Query(False),
    ) -> Response:
        validate_unit_name(unit)  # UnitNameError: a 400 with fleet's message
        entries = reader(JournalQuery(unit, lines, follow))
        try:  # the first entry (or the end) before the status: a failure to start is a 503
            first = await anext(entries, None)
        except JournalError as exc:
            log.warning("cannot read the journal", unit=unit, error=str(exc))
            return response_for(Unavailable(str(exc)))
        return StreamingResponse(_lines(first, entries, unit), media_type=NDJSON)

    app.add_middleware(ClusterCredential, secret=secret)
    return app


async def _lines(
    first: bytes | None, entries: AsyncIterator[bytes], unit: str
) -> AsyncIterator[bytes]:
    """The entries, one per line; a failure after the first ends the stream (logged)."""
    try:
        if first is None:
            return
        yield first + b"\n"
        async for entry in entries:
            yield entry + b"\n"
    except JournalError as exc:
        log.warning("journal read ended early", unit=unit, error=str(exc))
    finally:
        aclose = getattr(entries, "aclose", None)
        if aclose is not None:
            await aclose()


async def serve_peer(
    address: str,
    secret: str,
    *,
    shutdown_timeout: float = 5.0,
    reader: JournalReader = read_journal,
) -> None:
    """Serve the node-to-node app on TCP `address` until cancelled."""
    app = create_peer_app(secret, reader)
    listener = bind_tcp(address)
    try:
        await serve_on(app, listener, shutdown_timeout=shutdown_timeout)
    finally:
        listener.sock.close()
