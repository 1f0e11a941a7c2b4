"""A small synchronous client for fleet's v1 HTTP API, over a unix socket or TCP.

Role: the only module that speaks HTTP. It knows the paths under `/fleet/v1`, follows
`nextPageToken` through every list, and turns failures into two exceptions the commands print:
`FleetAPIError` (the server answered with an error envelope; its message is the server's) and
`FleetConnectionError` (no answer: socket missing, refused, timed out).

Invariants:
* `https://` endpoints verify the server (`--ca-file`, else the system's CAs) and present
  `--cert-file`/`--key-file` when given (fleetd's client-certificate authentication).
* Every request carries the request timeout given at construction (`--request-timeout`).
* `FLEETCTL_API_TOKEN`, when set, goes out as `Authorization: Bearer <token>` on every request.
* The transport is injectable: `FleetClient(endpoint, transport=...)` (tests pass an
  `httpx.MockTransport` or an ASGI transport); otherwise `make_transport(endpoint)` builds one.
* Unit names are percent-encoded in paths; the API's JSON is parsed into `fleetctl.models`.
* One client may serve several threads at once (`fleetctl.bulk`): httpx's client is shared, so
  every request of a run goes through one connection pool.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import httpx

from fleetctl.models import Machine, Unit, UnitState, options_to_json
from fleetctl.sse import ServerEvent, SSEParser
from fleetd import __version__
from fleetd.core.unitfile import UnitOption

DEFAULT_ENDPOINT = "unix:///var/run/fleet.sock"
API_PREFIX = "/fleet/v1"
DEFAULT_REQUEST_TIMEOUT = 3.0
T = TypeVar("T")

JOURNAL_READ_TIMEOUT = 35.0
"""Seconds a one-shot journal read may take: the unit's machine reads for up to 10 s, and its
answer crosses two fleetds."""

MAX_IN_FLIGHT = 16
"""At most this many requests at once (`fleetctl.bulk` runs them); the real transport's one
connection pool holds at most as many connections."""

MAX_TUNNELS = 4
"""At most this many connections through `--tunnel`: each is an ssh process and handshake."""

MAX_PAGES = 100_000
"""A bound on pages per list, so a server that keeps returning tokens cannot loop us forever."""


class FleetctlError(Exception):
    """An error fleetctl reports to the user; the message is printed as is."""


class EndpointError(Exception):
    """An `--endpoint` value fleetctl cannot use (a usage problem, not an API failure: commands
    do not catch it, `Session.run` prints it)."""


class FleetAPIError(FleetctlError):
    """The API answered with an error status; `message` is the server's own text."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(f"{message} (HTTP {status})" if message else f"HTTP {status}")


class FleetConnectionError(FleetctlError):
    """The API could not be reached, or did not answer in time."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where the API is: `url` as the user wrote it, `base_url` for httpx, and the unix socket
    path when there is one."""

    url: str
    base_url: str
    socket_path: str | None = None

    @property
    def is_tcp(self) -> bool:
        return self.socket_path is None

    @property
    def host_port(self) -> str:
        """`host:port` of a TCP endpoint (the scheme's default port when none is given)."""
        parts = urlsplit(self.base_url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        host = parts.hostname or ""
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_endpoint(value: str) -> tuple[Endpoint, list[str]]:
    """The endpoint `value` names, and any warnings about it (a comma list uses its first entry).

    Accepted: `unix:///abs/path` (also spelled `file:///abs/path`), `http://host[:port]` and
    `https://host[:port]`, optionally with a path prefix.
    """
    warnings: list[str] = []
    entries = [entry.strip() for entry in value.split(",") if entry.strip()]
    if not entries:
        raise EndpointError("no endpoint given")
    url = entries[0]
    if len(entries) > 1:
        count = len(entries)
        warnings.append(
            f"WARNING: --endpoint lists {count} endpoints; fleetctl uses only the first, {url}"
        )
    parts = urlsplit(url)
    if parts.scheme in ("unix", "file"):
        if parts.netloc:
            raise EndpointError(
                f"invalid endpoint {url!r}: the socket path must be absolute "
                f"({parts.scheme}:///{parts.netloc}{parts.path}), not a host {parts.netloc!r}"
            )
        if not parts.path:
            raise EndpointError(f"invalid endpoint {url!r}: no socket path")
        return Endpoint(url, "http://localhost", parts.path), warnings
    if parts.scheme in ("http", "https"):
        if not parts.netloc:
            raise EndpointError(f"invalid endpoint {url!r}: no host")
        base = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        return Endpoint(url, base), warnings
    raise EndpointError(
        f"invalid endpoint {url!r}: the scheme must be unix://, http:// or https://"
    )


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """fleet's `--ca-file`, `--cert-file` and `--key-file` (PEM paths; "" when not given)."""

    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""

    def context(self) -> ssl.SSLContext:
        """The client's TLS context: the server verified against `ca_file` (else the system's
        CAs), and the client certificate presented when given. Unlike fleet, which skipped
        verifying the server whenever no client certificate was given, the server is always
        verified (a bearer token must not go to whoever answers)."""
        if bool(self.cert_file) != bool(self.key_file):
            given, missing = (
                ("--cert-file", "--key-file")
                if self.cert_file
                else (
                    "--key-file",
                    "--cert-file",
                )
            )
            raise EndpointError(f"{given} needs {missing} too (a certificate and its key)")
        try:
            context = ssl.create_default_context(cafile=self.ca_file or None)
        except (OSError, ssl.SSLError) as exc:
            raise EndpointError(f"cannot use --ca-file {self.ca_file}: {exc}") from None
        if self.cert_file:
            try:
                context.load_cert_chain(self.cert_file, self.key_file)
            except (OSError, ssl.SSLError) as exc:
                raise EndpointError(
                    f"cannot use --cert-file {self.cert_file} with --key-file {self.key_file}: "
                    f"{exc}"
                ) from None
        return context


def make_transport(
    endpoint: Endpoint, tls: TlsFiles = TlsFiles(), *, via: str | None = None
) -> httpx.BaseTransport:
    """The real transport for `endpoint`: a unix-socket transport or plain TCP/TLS, with one
    connection pool of up to `MAX_IN_FLIGHT` connections, all kept alive between requests.

    Over a unix socket the requests are plain HTTP, so no CA bundle is loaded (`verify=False`
    only skips that: there is no TLS to verify); loading it costs 50-300 ms per run. `tls`
    applies to `https://` endpoints only, as in fleet. `via`: connect through this unix socket
    whatever the endpoint (`--tunnel`'s relay), with at most `MAX_TUNNELS` connections."""
    limits = httpx.Limits(max_connections=MAX_IN_FLIGHT, max_keepalive_connections=MAX_IN_FLIGHT)
    if via is not None:
        limits = httpx.Limits(max_connections=MAX_TUNNELS, max_keepalive_connections=MAX_TUNNELS)
    uds = via or endpoint.socket_path
    if endpoint.base_url.startswith("https:"):
        return httpx.HTTPTransport(uds=uds, limits=limits, verify=tls.context())
    return httpx.HTTPTransport(uds=uds, limits=limits, verify=False)


def _error_message(response: httpx.Response) -> str:
    """The `message` of fleet's error envelope, or the body's text when it is not one."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("message", ""))
    return response.text.strip()


def _parse(factory: Callable[[object], T], data: object) -> T:
    """`factory(data)`, with a malformed entity reported as an API error."""
    try:
        return factory(data)
    except ValueError as exc:
        raise FleetAPIError(200, f"unexpected answer from the API: {exc}") from None


class FleetClient:
    """The v1 API, one method per call fleetctl makes."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        timeout: float = DEFAULT_REQUEST_TIMEOUT,
        token: str | None = None,
        transport: httpx.BaseTransport | None = None,
        log: Callable[[str], None] | None = None,
        tls: TlsFiles = TlsFiles(),
    ) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        # the exact current state, never the grace kept for fleet's Go restart (fleetd's
        # stop_grace); the header's name is pyfleet's wire contract, so it is spelled out here
        headers = {"User-Agent": f"fleetctl/{__version__}", "X-Pyfleet-Exact-State": "1"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._log = log or (lambda text: None)
        self._http = httpx.Client(
            base_url=endpoint.base_url + API_PREFIX,
            transport=transport if transport is not None else make_transport(endpoint, tls),
            timeout=timeout,
            headers=headers,
        )

    def close(self) -> None:
        self._http.close()

    def _request(
        self, method: str, path: str, *, params: dict[str, str] | None = None, body: Any = None
    ) -> httpx.Response:
        target = f"{method} {self._http.base_url.join(path.lstrip('/'))}"
        self._log(f"{target} {params or ''}".rstrip())
        try:
            response = self._http.request(method, path, params=params, json=body)
        except httpx.TimeoutException:
            self._log(f"{target} timed out")
            raise FleetConnectionError(
                f"no answer from {self.endpoint.url} within {self.timeout:g}s"
            ) from None
        except httpx.TransportError as exc:
            self._log(f"{target} failed: {exc!r}")
            hint = ""
            if self.endpoint.base_url.startswith("https:") and isinstance(
                exc, (httpx.ReadError, httpx.RemoteProtocolError)
            ):
                hint = (
                    "; a fleetd that authenticates clients by certificate closes the connection "
                    "without one signed by its CA (--cert-file, --key-file)"
                )
            raise FleetConnectionError(f"cannot reach {self.endpoint.url}: {exc}{hint}") from None
        self._log(f"{target} -> {response.status_code}")
        if response.status_code >= 400:
            raise FleetAPIError(response.status_code, _error_message(response))
        return response

    def _json(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise FleetAPIError(
                response.status_code, "the API sent a body that is not JSON"
            ) from None

    def _pages(self, path: str, key: str, params: dict[str, str]) -> Iterator[Any]:
        token = ""
        for _ in range(MAX_PAGES):
            query = dict(params, nextPageToken=token) if token else params
            page = self._json(self._request("GET", path, params=query or None))
            if not isinstance(page, dict):
                raise FleetAPIError(200, f"the API sent a page that is not an object: {page!r}")
            yield from page.get(key) or []
            token = page.get("nextPageToken") or ""
            if not token:
                return

    @staticmethod
    def _unit_path(name: str) -> str:
        return "/units/" + quote(name, safe="@:")

    def units(self) -> list[Unit]:
        """Every unit, sorted by name (the API's order)."""
        return [_parse(Unit.from_json, item) for item in self._pages("/units", "units", {})]

    def unit(self, name: str) -> Unit | None:
        """The unit called `name`, or None when the API says it does not exist."""
        try:
            response = self._request("GET", self._unit_path(name))
        except FleetAPIError as exc:
            if exc.status == 404:
                return None
            raise
        return _parse(Unit.from_json, self._json(response))

    def create_unit(
        self, name: str, options: tuple[UnitOption, ...], desired_state: str = ""
    ) -> None:
        """Create or replace a unit; without `desired_state` the API makes it `inactive`."""
        body: dict[str, object] = {"name": name, "options": options_to_json(options)}
        if desired_state:
            body["desiredState"] = desired_state
        self._request("PUT", self._unit_path(name), body=body)

    def set_unit_target_state(self, name: str, state: str) -> None:
        self._request("PUT", self._unit_path(name), body={"desiredState": state, "name": name})

    def destroy_unit(self, name: str) -> bool:
        """Delete the unit; False when it did not exist."""
        try:
            self._request("DELETE", self._unit_path(name))
        except FleetAPIError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def unit_states(self, *, unit_name: str = "", machine_id: str = "") -> list[UnitState]:
        """Unit states, sorted by unit name then machine; the filters are exact matches."""
        params = {}
        if unit_name:
            params["unitName"] = unit_name
        if machine_id:
            params["machineID"] = machine_id
        return [
            _parse(UnitState.from_json, item) for item in self._pages("/state", "states", params)
        ]

    def journal(self, name: str, *, lines: int, follow: bool) -> Iterator[dict[str, Any]]:
        """The unit's journal entries from its machine, as they come (`GET .../journal`); with
        `follow`, until the server ends the stream or the caller stops iterating. An entry
        without `__CURSOR` but with `end` says why a followed stream ended."""
        path = self._unit_path(name) + "/journal"
        params = {"lines": str(lines), "follow": "true" if follow else "false"}
        read = None if follow else max(self.timeout, JOURNAL_READ_TIMEOUT)
        timeout = httpx.Timeout(self.timeout, read=read)
        target = f"GET {self._http.base_url.join(path.lstrip('/'))}"
        self._log(f"{target} {params}")
        try:
            with self._http.stream("GET", path, params=params, timeout=timeout) as response:
                self._log(f"{target} -> {response.status_code}")
                if response.status_code >= 400:
                    response.read()
                    raise FleetAPIError(response.status_code, _error_message(response))
                for line in response.iter_lines():
                    if not line.strip():
                        continue
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        raise FleetAPIError(
                            200, f"the API sent a line that is not JSON: {line[:80]!r}"
                        ) from None
                    if isinstance(entry, dict):
                        yield entry
        except httpx.TimeoutException:
            raise FleetConnectionError(
                f"no answer from {self.endpoint.url} within {read or self.timeout:g}s"
            ) from None
        except httpx.TransportError as exc:
            raise FleetConnectionError(f"lost {self.endpoint.url}: {exc}") from None

    def events(
        self, params: dict[str, list[str]], last_event_id: str | None, *, idle_timeout: float
    ) -> Iterator[ServerEvent]:
        """The events of one `GET /events` stream, until it ends; FleetConnectionError if it
        cannot be opened, breaks, or sends nothing (not even a keep-alive) for `idle_timeout`."""
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        timeout = httpx.Timeout(self.timeout, read=idle_timeout)
        target = f"GET {self._http.base_url.join('events')}"
        self._log(f"{target} {params or ''} after {last_event_id or 'now'}")
        parser = SSEParser()
        try:
            with self._http.stream(
                "GET", "/events", params=params, headers=headers, timeout=timeout
            ) as response:
                self._log(f"{target} -> {response.status_code}")
                if response.status_code >= 400:
                    response.read()
                    raise FleetAPIError(response.status_code, _error_message(response))
                for line in response.iter_lines():
                    event = parser.feed(line)
                    if event is not None:
                        yield event
        except httpx.TimeoutException:
            raise FleetConnectionError(
                f"no event or keep-alive from {self.endpoint.url} within {idle_timeout:g}s"
            ) from None
        except httpx.TransportError as exc:
            raise FleetConnectionError(f"event stream from {self.endpoint.url}: {exc}") from None

    def machines(self) -> list[Machine]:
        """Every live machine, sorted by id."""
        return [
            _parse(Machine.from_json, item) for item in self._pages("/machines", "machines", {})
        ]
