"""What one API listener allows its clients: how many connections, and how long a request may take.

uvicorn bounds neither: it accepts every connection asyncio hands it, its keep-alive timer runs
only between requests, and asyncio's own accept loop logs a traceback for every failed
`accept()` (thousands a second once the process is out of descriptors). So fleetd accepts
connections itself, one `ListenerGate` per listener, and gives each to uvicorn's h11 protocol
extended with request deadlines (`GuardedH11Protocol`).

Invariants:
* A listener holds at most `limit` connections. Beyond it a connection is accepted, answered
  at once with a 503 in fleet's JSON error shape, and closed: it never waits, and it never holds
  a descriptor. Each listener has its own limit, so a flood on TCP cannot shut out the unix
  socket (the limits come from `fleetd.runtime.limits`, within the open-files limit).
* A client has `header_timeout` seconds, from the moment the server waits for a request (the
  connection opened, or the previous response was sent), to send a request's headers, and
  `body_timeout` more for its body; past either, the connection is closed. Between requests,
  uvicorn's keep-alive timeout closes an idle connection sooner.
* When `accept()` fails for lack of descriptors (EMFILE, ENFILE, ENOBUFS, ENOMEM), the gate frees
  a spare descriptor it keeps for that moment, accepts the waiting connections and refuses them
  with a 503, then takes the spare back, and waits for the next connection: clients are told at
  once instead of hanging, and the loop never spins. If no descriptor can be freed it waits for
  a connection to close (at most `ACCEPT_PAUSE`) instead.
* On a TLS listener (`ssl`), each handshake runs in a task of its own, so a slow or silent
  client never stalls the accept loop; it must finish within `header_timeout`, and a connection
  in its handshake counts against the limit. A failed handshake (no certificate, one from
  another CA, not TLS at all) closes the connection: the client gets TLS's error, never a hang.
  A connection over the limit gets the plain-text 503, which a TLS client reports as a
  handshake error.
* A request h11 cannot parse (a bad request line, header or chunk) is answered with a 400 in
  fleet's JSON error shape, not uvicorn's plain text, and the connection is closed.
* Refusals, slow clients, failed handshakes, unparsable requests and exhaustion are logged
  through `ThrottledLog`: one line per `report_interval` with a count, never one per connection
  (uvicorn's own warning for each unparsable request is dropped).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import h11
import structlog
from uvicorn.config import Config as UvicornConfig
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from fleetd.api.schemas import go_json
from fleetd.api.tls import with_client_certificate
from fleetd.runtime.logs import ThrottledLog

log = structlog.get_logger(__name__)

ACCEPT_PAUSE: Final = 0.5
"""Seconds to stop accepting when no descriptor can be freed to refuse connections with."""
OUT_OF_RESOURCES: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
PEER_GONE: Final = frozenset(
    {
        errno.ECONNABORTED,
        errno.EPROTO,
        errno.ENETDOWN,
        errno.ENOPROTOOPT,
        errno.EHOSTDOWN,
        errno.ENONET,
        errno.EHOSTUNREACH,
        errno.EOPNOTSUPP,
        errno.ENETUNREACH,
        errno.EPERM,  # a firewall rule refused it
    }
)
"""accept() errors that concern one connection only (Linux reports the connection's pending
network error through accept); the next accept() is tried at once."""
MALFORMED_MESSAGE: Final = "malformed HTTP request"
"""The message of the 400 sent for a request h11 cannot parse."""
UVICORN_MALFORMED_WARNING: Final = "Invalid HTTP request received."
"""What uvicorn logs for each such request (a line per request: dropped, the gate counts them)."""


class _NoLineForEachMalformedRequest(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != UVICORN_MALFORMED_WARNING


def _quiet_uvicorn_malformed_warnings() -> None:
    uvicorn_log = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _NoLineForEachMalformedRequest) for f in uvicorn_log.filters):
        uvicorn_log.addFilter(_NoLineForEachMalformedRequest())


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """The limits of every API listener; docs/operations.md states them for users."""

    max_connections: int | None = None
    """Connections each listener holds at once; None: its share of the open-files limit."""
    header_timeout: float = 10.0
    """Seconds to receive a request's headers, from the connection or the previous response."""
    body_timeout: float = 30.0
    """Seconds to receive a request's body once its headers are in."""
    keep_alive_timeout: int = 5
    """Seconds an idle connection stays open after a response (uvicorn's, whole seconds)."""
    report_interval: float = 10.0
    """Seconds between two log lines about the same refusals or exhaustion."""

    def __post_init__(self) -> None:
        if self.max_connections is not None and self.max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {self.max_connections}")
        for name in ("header_timeout", "body_timeout", "keep_alive_timeout", "report_interval"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be greater than zero, got {getattr(self, name)}")


def refusal(message: str) -> bytes:
    """A whole HTTP/1.1 503 response in fleet's error shape that closes the connection."""
    body = go_json({"error": {"code": 503, "message": message}})
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Retry-After: 1\r\n"
        "Connection: close\r\n"
        "\r\n"
    )
    return head.encode("ascii") + body


def refuse(conn: socket.socket, response: bytes) -> None:
    """Send `response` on a just-accepted connection, without waiting, and close it."""
    with conn:
        conn.setblocking(False)
        with contextlib.suppress(OSError):
            conn.recv(65536)  # what already arrived: closing with unread data would reset
        with contextlib.suppress(OSError):
            conn.send(response)  # a few hundred bytes: a new socket's buffer takes them whole
            conn.shutdown(socket.SHUT_WR)


def _open_spare() -> int | None:
    try:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


class ListenerGate:
    """Accepts the connections of one listening socket, within its limit (see the module)."""

    def __init__(
        self,
        address: str,
        sock: socket.socket,
        limit: int,
        limits: ConnectionLimits,
        *,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.address = address
        self.tls = tls
        self.limit = limit
        self.limits = limits
        self.open = 0
        self._sock = sock
        self._closed = asyncio.Event()
        self._spare: int | None = None
        self._handshakes: set[asyncio.Task[None]] = set()
        self._full_response = refusal(
            f"too many connections to this fleetd API listener (limit {limit}); retry later"
        )
        self._no_files_response = refusal("fleetd is out of file descriptors; retry later")
        every = limits.report_interval
        self._full = ThrottledLog(
            log,
            "API listener full: connections refused",
            interval=every,
            address=address,
            limit=limit,
        )
        self._no_files = ThrottledLog(
            log,
            "API cannot accept connections: out of file descriptors",
            interval=every,
            address=address,
        )
        self._slow = ThrottledLog(
            log,
            "API closed connections that sent no whole request in time",
            interval=every,
            address=address,
            header_timeout=limits.header_timeout,
            body_timeout=limits.body_timeout,
        )
        self._refused_tls = ThrottledLog(
            log,
            "API closed connections whose TLS handshake failed",
            interval=every,
            address=address,
        )
        self._malformed = ThrottledLog(
            log,
            "API answered requests it could not parse with 400",
            interval=every,
            address=address,
        )
        _quiet_uvicorn_malformed_warnings()

    async def serve(self, make_protocol: Callable[[], asyncio.Protocol]) -> None:
        """Accept connections and hand each to a protocol from `make_protocol`, until cancelled."""
        loop = asyncio.get_running_loop()
        self._sock.setblocking(False)
        self._spare = _open_spare()
        try:
            while True:
                try:
                    conn, _ = await loop.sock_accept(self._sock)
                except OSError as exc:
                    await self._accept_failed(exc)
                    continue
                self._no_files.end("API accepting connections again")
                if self.open + len(self._handshakes) >= self.limit:
                    self._full.note()
                    refuse(conn, self._full_response)
                    continue
                if self.tls is not None:
                    task = asyncio.create_task(self._serve_tls(make_protocol, conn))
                    self._handshakes.add(task)
                    task.add_done_callback(self._handshakes.discard)
                    continue
                try:
                    await loop.connect_accepted_socket(make_protocol, conn)
                except OSError:
                    conn.close()  # gone before it could be served
        finally:
            for task in list(self._handshakes):
                task.cancel()
            if self._handshakes:
                await asyncio.gather(*self._handshakes, return_exceptions=True)
            if self._spare is not None:
                os.close(self._spare)
                self._spare = None
            for report in (
                self._full,
                self._no_files,
                self._slow,
                self._refused_tls,
                self._malformed,
            ):
                report.close()

    async def _serve_tls(
        self, make_protocol: Callable[[], asyncio.Protocol], conn: socket.socket
    ) -> None:
        """Hand `conn` to a protocol once its TLS handshake is done; close it if that fails."""
        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                make_protocol,
                conn,
                ssl=self.tls,
                ssl_handshake_timeout=self.limits.header_timeout,
            )
        except OSError as exc:  # ssl.SSLError and the handshake's timeout are OSErrors
            conn.close()
            self._refused_tls.note(**{type(exc).__name__: 1})
        except asyncio.CancelledError:
            conn.close()
            raise

    def opened(self) -> None:
        """A connection of this listener is being served (its protocol calls this)."""
        self.open += 1

    def closed(self) -> None:
        """A connection of this listener is closed (its protocol calls this)."""
        self.open -= 1
        self._closed.set()

    def too_slow(self, waiting_for: str) -> None:
        """A connection was closed because its request's `waiting_for` did not arrive in time."""
        self._slow.note(**{waiting_for: 1})

    def malformed(self) -> None:
        """A connection got a 400 for a request h11 could not parse."""
        self._malformed.note()

    async def _accept_failed(self, exc: OSError) -> None:
        if exc.errno in PEER_GONE:
            return
        if exc.errno not in OUT_OF_RESOURCES:
            raise exc
        # Linux fails accept() for lack of a descriptor even when nobody is waiting: refuse
        # whoever is, then sleep until someone new connects (or, if no descriptor could be
        # freed to refuse with, until a connection of ours closes), never in a spin.
        refused, emptied = self._refuse_waiting()
        self._no_files.note(refused=refused)
        if emptied:
            await self._connection_waiting()
        else:
            self._closed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), ACCEPT_PAUSE)

    async def _connection_waiting(self) -> None:
        """Return once a connection waits to be accepted (the listening socket is readable)."""
        loop = asyncio.get_running_loop()
        waiting: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            if not waiting.done():
                waiting.set_result(None)

        fd = self._sock.fileno()
        loop.add_reader(fd, readable)
        try:
            await waiting
        finally:
            loop.remove_reader(fd)

    def _refuse_waiting(self) -> tuple[int, bool]:
        """Free the spare descriptor, refuse the connections waiting to be accepted, take the
        spare back; returns how many were refused, and whether none is left waiting."""
        if self._spare is None:
            self._spare = _open_spare()
            if self._spare is None:
                return 0, False
        os.close(self._spare)
        self._spare = None
        refused = 0
        try:
            while True:
                try:
                    conn, _ = self._sock.accept()
                except (BlockingIOError, InterruptedError):
                    return refused, True
                except OSError:  # still out of descriptors (another thread took the spare's)
                    return refused, False
                refuse(conn, self._no_files_response)
                refused += 1
        finally:
            self._spare = _open_spare()


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, counted by its listener's gate and held to the request deadlines.

    It relies on what uvicorn's `H11Protocol` has (its h11 `conn`, `transport` and `loop`, and
    the `data_received` and `on_response_complete` steps); uvicorn is pinned in constraints.txt.
    """

    def __init__(
        self,
        config: UvicornConfig,
        server_state: ServerState,
        app_state: dict[str, Any],
        *,
        gate: ListenerGate,
    ) -> None:
        super().__init__(config, server_state, app_state)
        self._gate = gate
        self._waiting_for = ""  # "headers", "body", or "" when no request is awaited
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._gate.opened()
        super().connection_made(transport)
        self.app = with_client_certificate(self.app, transport.get_extra_info("ssl_object"))
        self._watch_request()

    def connection_lost(self, exc: Exception | None) -> None:
        self._await("")
        super().connection_lost(exc)
        self._gate.closed()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_request()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch_request()

    def send_400_response(self, msg: str) -> None:
        """Answer a request h11 cannot parse (uvicorn calls this with its plain-text `msg`) with
        fleet's JSON error, and close the connection: there is no request to carry on from."""
        self._gate.malformed()
        body = go_json({"error": {"code": 400, "message": MALFORMED_MESSAGE}})
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode("ascii")),
            (b"connection", b"close"),
        ]
        for event in (
            h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
            h11.Data(data=body),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event))
        self.transport.close()

    def _watch_request(self) -> None:
        """Arm the deadline of what the client owes now: headers (h11's IDLE), body (SEND_BODY),
        or nothing (its request is in, or the connection is closing)."""
        if self.transport.is_closing():
            self._await("")
        elif self.conn.their_state is h11.IDLE:
            self._await("headers")
        elif self.conn.their_state is h11.SEND_BODY:
            self._await("body")
        else:
            self._await("")

    def _await(self, waiting_for: str) -> None:
        if waiting_for == self._waiting_for:
            return
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._waiting_for = waiting_for
        if waiting_for:
            limits = self._gate.limits
            timeout = limits.header_timeout if waiting_for == "headers" else limits.body_timeout
            self._deadline = self.loop.call_later(timeout, self._too_slow)

    def _too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self._gate.too_slow(self._waiting_for)
            self.transport.abort()  # nothing of ours is pending: the client just gets the close
