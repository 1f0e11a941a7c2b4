"""The `api` component of fleetd: the `ApiView` and the v1 app, served by uvicorn on every
`--listen` address until cancelled. The view starts with the first request
(`fleetd.api.activation`): a machine whose API nobody asks mirrors nothing for it.

* A path is a unix socket with mode 0660: it is bound under a temporary name, given its mode,
  then renamed into place, so it is never reachable with looser permissions. A stale socket file
  (nothing answers on it) is replaced; a live socket or any other file there is refused. The
  file mode is the access control on a unix socket, as with fleet's `fleet.socket`.
* `host:port` is TCP, allowed only with `api_token_file` or `api_client_cafile` (the config
  refuses TCP without either): every request on a TCP listener needs `Authorization: Bearer
  <token>`, the file's content with surrounding whitespace stripped (an empty or unreadable file
  is refused), or a client certificate signed by the client CA. With `api_certfile` the TCP
  listeners speak TLS only (`fleetd.api.tls`); unix sockets never do.
* Every listener is bounded (`fleetd.api.connections`): at most `max_connections` connections,
  by default its share of the open-files limit, each listener its own; beyond that a prompt 503;
  a request must arrive within the header and body timeouts. fleetd, not asyncio, accepts the
  connections, so running out of descriptors is refused and logged once per interval.
* Shutdown is bounded: once cancelled, the listeners stop accepting, requests in flight get up
  to `shutdown_timeout` seconds, the socket files this component created are removed, and the
  cancellation propagates.
* uvicorn never installs signal handlers or configures logging here: fleetd owns both.
* With `cluster_secret_file`, the journal route (`fleetd.api.journal`) forwards to other
  machines' node-to-node endpoints with that credential; without it, it answers 503. The
  forwarder's connection pool is closed when the component ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import socket
import ssl
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import structlog
import uvicorn
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fleetd.api.activation import ViewActivation
from fleetd.api.app import create_app
from fleetd.api.connections import ConnectionLimits, GuardedH11Protocol, ListenerGate
from fleetd.api.event_hub import EventHub
from fleetd.api.journal import JournalForwarder, journal_router
from fleetd.api.metrics import ClusterCollector
from fleetd.api.service import ApiService
from fleetd.api.tls import TlsConfigError, server_context
from fleetd.api.view import ApiView
from fleetd.config import Config, is_tcp_address
from fleetd.registry.client import EtcdClient
from fleetd.registry.keys import Keys
from fleetd.runtime.limits import connections_per_listener, open_files_limit
from fleetd.runtime.metrics import Metrics

log = structlog.get_logger(__name__)

SOCKET_MODE: Final = 0o660
BACKLOG: Final = 1024


class ApiStartError(RuntimeError):
    """The API cannot start: a bad token file, or an address that cannot be listened on."""


@dataclass(slots=True)
class Listener:
    """One bound, listening socket; `path` and `inode` are set for a unix socket."""

    address: str
    sock: socket.socket
    path: str = ""
    inode: int = 0

    @property
    def is_unix(self) -> bool:
        return bool(self.path)


def read_token(path: str, option: str = "api_token_file") -> str:
    """The token in the file `option` names (the API token, or the cluster credential)."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ApiStartError(f"cannot read {option} {path}: {exc}") from None
    if not token:
        raise ApiStartError(f"{option} {path} is empty")
    return token


def _refuse_live_socket(path: str) -> None:
    """Raise unless `path` is absent or a socket nobody answers on (then it may be replaced)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ApiStartError(f"{path} exists and is not a socket; not replacing it")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            return  # stale: its server is gone
        except OSError as exc:
            raise ApiStartError(f"cannot tell whether {path} is in use: {exc}") from None
    raise ApiStartError(f"another server is listening on {path}")


def bind_unix(path: str) -> Listener:
    _refuse_live_socket(path)
    temporary = f"{path}.{os.getpid()}.tmp"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        sock.bind(temporary)
        os.chmod(temporary, SOCKET_MODE)
        os.replace(temporary, path)
        sock.listen(BACKLOG)
        inode = os.stat(path).st_ino
    except OSError as exc:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise ApiStartError(f"cannot listen on {path}: {exc}") from None
    return Listener(path, sock, path, inode)


def bind_tcp(address: str) -> Listener:
    host, _, port = address.rpartition(":")
    try:
        family, kind, proto, _, where = socket.getaddrinfo(
            host.strip("[]") or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, ValueError) as exc:
        raise ApiStartError(f"cannot listen on {address}: {exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(where)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise ApiStartError(f"cannot listen on {address}: {exc}") from None
    return Listener(address, sock)


def tls_context(config: Config) -> ssl.SSLContext | None:
    """The TCP listeners' TLS context, or None when `api_certfile` is not set."""
    if not config.api_certfile:
        return None
    try:
        return server_context(
            config.api_certfile,
            config.api_keyfile,
            config.api_client_cafile,
            token=bool(config.api_token_file),
        )
    except TlsConfigError as exc:
        raise ApiStartError(str(exc)) from None


@contextlib.contextmanager
def open_listeners(addresses: Sequence[str]) -> Iterator[list[Listener]]:
    """Bind every address (all or none), and close them and remove socket files afterwards."""
    listeners: list[Listener] = []
    try:
        for address in addresses:
            listeners.append(bind_tcp(address) if is_tcp_address(address) else bind_unix(address))
        yield listeners
    finally:
        for listener in listeners:
            listener.sock.close()
            if listener.is_unix:
                with contextlib.suppress(OSError):
                    if os.stat(listener.path).st_ino == listener.inode:
                        os.unlink(listener.path)


class _ClientGone(BaseException):
    """Raised into the app when its client hangs up before the request's body is in. Not an
    `Exception`: no handler in the app may take it for a failure to report and answer."""


def _quiet_on_disconnect(app: ASGIApp) -> ASGIApp:
    """`app`, except that a client gone before its request's body was in (it hung up, or was
    closed for sending too slowly) ends the request silently: there is nobody to answer, and a
    line per such client, let alone a traceback, would let any client fill the log."""

    async def serve_request(scope: Scope, receive: Receive, send: Send) -> None:
        body_in = False

        async def receive_unless_gone() -> Message:
            nonlocal body_in
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                body_in = True
            elif message["type"] == "http.disconnect" and not body_in:
                raise _ClientGone
            return message

        with contextlib.suppress(_ClientGone, ClientDisconnect):
            await app(scope, receive_unless_gone if scope["type"] == "http" else receive, send)

    return serve_request


class _Server(uvicorn.Server):
    """uvicorn's server, with the listener's gate accepting connections instead of asyncio."""

    def __init__(self, config: uvicorn.Config, gate: ListenerGate) -> None:
        super().__init__(config)
        self._gate = gate
        self._accepting: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # fleetd handles SIGTERM/SIGINT and cancels this component

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await self.lifespan.startup()  # lifespan is "off": nothing runs
        self.servers = []
        state = self.lifespan.state

        def make_protocol() -> GuardedH11Protocol:
            return GuardedH11Protocol(self.config, self.server_state, state, gate=self._gate)

        self._accepting = asyncio.create_task(
            self._gate.serve(make_protocol), name=f"api-accept:{self._gate.address}"
        )
        self._accepting.add_done_callback(self._accepting_ended)
        self.started = True

    def _accepting_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("API accept loop failed", address=self._gate.address, exc_info=exc)
            self.should_exit = True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._accepting is not None:
            self._accepting.cancel()
            await asyncio.gather(self._accepting, return_exceptions=True)
        await super().shutdown(sockets)


async def serve_on(
    app: ASGIApp,
    listener: Listener,
    *,
    shutdown_timeout: float,
    gate: ListenerGate | None = None,
) -> None:
    """Serve `app` on one listener until cancelled, then shut down within the timeout; `gate`
    admits its connections (default: the default limits, the open-files limit all its own)."""
    if gate is None:
        limit = connections_per_listener(open_files_limit(), 1)
        gate = ListenerGate(listener.address, listener.sock, limit, ConnectionLimits())
    config = uvicorn.Config(
        _quiet_on_disconnect(app),
        lifespan="off",
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        ws="none",
        timeout_keep_alive=gate.limits.keep_alive_timeout,
        timeout_graceful_shutdown=max(1, math.ceil(shutdown_timeout)),
    )
    server = _Server(config, gate)
    serving = asyncio.create_task(server.serve(sockets=[listener.sock]), name="uvicorn")
    log.info("API listening", address=listener.address)
    try:
        await asyncio.shield(serving)
    except asyncio.CancelledError:
        server.should_exit = True
        await asyncio.wait([serving], timeout=math.ceil(shutdown_timeout) + 1.0)
        if not serving.done():
            server.force_exit = True
            serving.cancel()
        raise
    raise RuntimeError(f"the API server on {listener.address} stopped by itself")


async def serve_api(
    config: Config,
    client: EtcdClient,
    keys: Keys,
    *,
    shutdown_timeout: float = 5.0,
    limits: ConnectionLimits = ConnectionLimits(),  # noqa: B008 - frozen, shared safely
    metrics: Metrics | None = None,
) -> None:
    """Run the API view and serve the v1 API on `config.listen` until cancelled; `metrics`
    (this fleetd's) are served at `/metrics` with the cluster's gauges added."""
    tcp = [address for address in config.listen if is_tcp_address(address)]
    token = read_token(config.api_token_file) if tcp and config.api_token_file else None
    tls = tls_context(config) if tcp else None
    view = ApiView(client, keys)
    service = ApiService(
        client,
        keys,
        view,
        request_timeout=config.etcd_request_timeout,
        token_limit=config.token_limit,
    )
    metrics = metrics if metrics is not None else Metrics()
    metrics.add_collector(ClusterCollector(view))
    secret = (
        read_token(config.cluster_secret_file, "cluster_secret_file")
        if config.cluster_secret_file
        else None
    )
    forwarder = JournalForwarder(view, secret)
    routers = [journal_router(forwarder)]
    hub = EventHub(client, keys)
    activation = ViewActivation(view, first_wait=config.etcd_request_timeout)
    local_app = activation.wrap(create_app(service, metrics=metrics, routers=routers, events=hub))
    remote_app = (
        activation.wrap(
            create_app(service, token=token, metrics=metrics, routers=routers, events=hub)
        )
        if token is not None
        else local_app
    )
    # (without a token, a TCP listener has TLS with required client certificates: the config
    # allows nothing else, and `tls.server_context` makes the handshake refuse the rest)
    open_files = open_files_limit()
    limit = limits.max_connections or connections_per_listener(open_files, len(config.listen))
    log.info(
        "API connection limits",
        connections_per_listener=limit,
        open_files_limit=open_files,
        header_timeout=limits.header_timeout,
        body_timeout=limits.body_timeout,
        keep_alive_timeout=limits.keep_alive_timeout,
    )
    with open_listeners(config.listen) as listeners:
        async with asyncio.TaskGroup() as group:
            group.create_task(activation.run(), name="api-view")
            group.create_task(hub.run(), name="api-events")
            for listener in listeners:
                app = local_app if listener.is_unix else remote_app
                gate = ListenerGate(
                    listener.address,
                    listener.sock,
                    limit,
                    limits,
                    tls=None if listener.is_unix else tls,
                )
                serving = serve_on(app, listener, shutdown_timeout=shutdown_timeout, gate=gate)
                group.create_task(serving, name=f"api:{listener.address}")
            group.create_task(forwarder.close_when_cancelled(), name="api-journal")
