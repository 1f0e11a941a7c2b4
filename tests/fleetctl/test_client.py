"""The HTTP client: endpoints, paths, paging, the error envelope, connection failures, auth."""

from __future__ import annotations

import gc
import http.server
import json
import os
import socketserver
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fleetctl.bulk import fetch_units
from fleetctl.client import (
    API_PREFIX,
    MAX_IN_FLIGHT,
    Endpoint,
    EndpointError,
    FleetAPIError,
    FleetClient,
    FleetConnectionError,
    TlsFiles,
    make_transport,
    parse_endpoint,
)
from fleetd.core.unitfile import UnitOption
from tests.fleetctl.fake_api import FakeFleet, encode_token
from tests.fleetctl.gate import DEADLINE

UNIX = Endpoint("unix:///var/run/fleet.sock", "http://localhost", "/var/run/fleet.sock")


def client_for(handler: httpx.MockTransport | FakeFleet, **kwargs: object) -> FleetClient:
    transport = handler.transport() if isinstance(handler, FakeFleet) else handler
    return FleetClient(UNIX, transport=transport, **kwargs)  # type: ignore[arg-type]


# -- endpoints ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "base_url", "socket_path"),
    [
        ("unix:///var/run/fleet.sock", "http://localhost", "/var/run/fleet.sock"),
        ("file:///tmp/f.sock", "http://localhost", "/tmp/f.sock"),
        ("http://10.0.0.1:49153", "http://10.0.0.1:49153", None),
        ("https://fleet.example.com/", "https://fleet.example.com", None),
        ("http://proxy:80/fleet-api", "http://proxy:80/fleet-api", None),
    ],
)
def test_endpoints(value: str, base_url: str, socket_path: str | None) -> None:
    endpoint, warnings = parse_endpoint(value)
    assert (endpoint.base_url, endpoint.socket_path, warnings) == (base_url, socket_path, [])
    assert endpoint.is_tcp is (socket_path is None)


def test_a_comma_list_uses_the_first_endpoint_with_a_warning() -> None:
    endpoint, warnings = parse_endpoint("http://a:1, http://b:2")
    assert endpoint.url == "http://a:1"
    assert warnings == [
        "WARNING: --endpoint lists 2 endpoints; fleetctl uses only the first, http://a:1"
    ]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("unix://var/run/x", "the socket path must be absolute (unix:///var/run/x)"),
        ("unix://", "no socket path"),
        ("http://", "no host"),
        ("etcd://10.0.0.1:2379", "the scheme must be unix://, http:// or https://"),
        ("", "no endpoint given"),
    ],
)
def test_bad_endpoints(value: str, message: str) -> None:
    with pytest.raises(EndpointError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_endpoint(value)


# -- requests ------------------------------------------------------------------------------


def test_paths_headers_and_timeout() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"name": "a@1.service"})

    client = client_for(httpx.MockTransport(handler), token="s3cret", timeout=1.5)
    assert client.unit("a@1.service") is not None
    request = seen[0]
    assert request.url.raw_path == b"/fleet/v1/units/a@1.service"
    assert request.headers["authorization"] == "Bearer s3cret"
    assert request.headers["user-agent"].startswith("fleetctl/")
    assert request.extensions["timeout"] == {"connect": 1.5, "read": 1.5, "write": 1.5, "pool": 1.5}


def test_no_token_no_authorization_header() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={})

    client_for(httpx.MockTransport(handler)).machines()
    assert "authorization" not in seen[0].headers


def test_odd_characters_in_names_are_percent_encoded() -> None:
    fake = FakeFleet()
    client = client_for(fake)
    assert client.unit("a\\x2d.service") is None
    assert fake.requests[0].url.raw_path == f"{API_PREFIX}/units/a%5Cx2d.service".encode()


def test_create_and_set_state_send_fleets_bodies() -> None:
    fake = FakeFleet()
    client = client_for(fake)
    client.create_unit("a.service", (UnitOption("Service", "ExecStart", "/bin/true"),))
    client.set_unit_target_state("a.service", "launched")
    create, update = (json.loads(r.content) for r in fake.requests)
    assert create == {
        "name": "a.service",
        "options": [{"name": "ExecStart", "section": "Service", "value": "/bin/true"}],
    }
    assert update == {"desiredState": "launched", "name": "a.service"}
    assert fake.requests[0].headers["content-type"] == "application/json"
    assert fake.units["a.service"].desired == "launched"


def test_destroy_reports_whether_the_unit_existed() -> None:
    fake = FakeFleet()
    fake.add_unit("a.service", "[Service]\nExecStart=/bin/true\n")
    client = client_for(fake)
    assert client.destroy_unit("a.service") is True
    assert client.destroy_unit("a.service") is False


@pytest.mark.parametrize("total", [0, 1, 3, 4, 7])
def test_lists_follow_every_page(total: int) -> None:
    fake = FakeFleet(page_limit=2)
    for index in range(total):
        fake.add_machine(f"m{index}", f"10.0.0.{index}")
    client = client_for(fake)
    assert [m.id for m in client.machines()] == [f"m{i}" for i in range(total)]
    tokens = [r.url.params.get("nextPageToken") for r in fake.requests]
    assert tokens == [None] + [encode_token(2, page) for page in range(2, total // 2 + 2)]


def test_unit_states_filters() -> None:
    fake = FakeFleet()
    fake.add_machine("m1")
    fake.add_unit("a.service", "[Service]\nExecStart=/bin/true\n", desired="launched")
    client = client_for(fake)
    assert [s.name for s in client.unit_states(unit_name="a.service", machine_id="m1")] == [
        "a.service"
    ]
    assert client.unit_states(machine_id="m2") == []
    assert fake.requests[0].url.params["unitName"] == "a.service"
    assert fake.requests[0].url.params["machineID"] == "m1"


# -- errors --------------------------------------------------------------------------------


def test_the_error_envelope_becomes_a_typed_error() -> None:
    fake = FakeFleet()
    client = client_for(fake)
    with pytest.raises(FleetAPIError) as caught:
        client.set_unit_target_state("nope.service", "launched")
    assert caught.value.status == 409
    assert caught.value.message == "unit does not exist and options field empty"
    assert str(caught.value) == "unit does not exist and options field empty (HTTP 409)"


def test_an_error_without_an_envelope_keeps_its_text() -> None:
    client = client_for(httpx.MockTransport(lambda r: httpx.Response(502, text="bad gateway")))
    with pytest.raises(FleetAPIError, match=r"bad gateway \(HTTP 502\)"):
        client.units()


def test_an_empty_message_still_names_the_status() -> None:
    fake = FakeFleet()
    fake.break_route("GET", "/units", 500)
    with pytest.raises(FleetAPIError, match=r"^HTTP 500$"):
        client_for(fake).units()


@pytest.mark.parametrize(
    "body", [b"not json", b"[1, 2]", b'{"units": [{"name": 5}]}'], ids=["text", "list", "bad-unit"]
)
def test_malformed_answers_are_api_errors(body: bytes) -> None:
    client = client_for(httpx.MockTransport(lambda r: httpx.Response(200, content=body)))
    with pytest.raises(FleetAPIError):
        client.units()


def test_a_timeout_names_the_endpoint_and_the_limit() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    client = client_for(httpx.MockTransport(handler), timeout=0.5)
    with pytest.raises(
        FleetConnectionError, match=r"no answer from unix:///var/run/fleet.sock within 0.5s"
    ):
        client.units()


# httpcore (1.0.9) does not close its socket when a unix connect fails; the leak is its own.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_missing_socket_is_a_connection_error(tmp_path: Path) -> None:
    endpoint, _ = parse_endpoint(f"unix://{tmp_path}/missing.sock")
    client = FleetClient(endpoint)
    try:
        with pytest.raises(FleetConnectionError, match=r"cannot reach unix://.*missing.sock: .*No"):
            client.machines()
    finally:
        client.close()
    gc.collect()  # surface the leaked socket's warning here, not in a later test


# -- a real unix socket ------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"machines": [{"id": "m1", "primaryIP": self.path}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture
def socket_path(tmp_path: Path) -> Iterator[str]:
    path = os.path.join(tmp_path, "fleet.sock")
    server = _UnixServer(path, _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield path
    server.shutdown()
    server.server_close()


def test_the_real_transport_speaks_over_a_unix_socket(socket_path: str) -> None:
    endpoint, _ = parse_endpoint(f"unix://{socket_path}")
    client = FleetClient(endpoint, transport=make_transport(endpoint))
    try:
        machines = client.machines()
    finally:
        client.close()
    assert [(m.id, m.primary_ip) for m in machines] == [("m1", "/fleet/v1/machines")]


def test_a_unix_socket_transport_loads_no_ca_bundle(monkeypatch: pytest.MonkeyPatch) -> None:
    loaded: list[object] = []
    for method in ("load_verify_locations", "load_default_certs"):
        monkeypatch.setattr(
            ssl.SSLContext, method, lambda *args, method=method, **kwargs: loaded.append(method)
        )
    make_transport(UNIX).close()
    make_transport(parse_endpoint("http://fleet.example:49153")[0]).close()
    assert loaded == []
    make_transport(parse_endpoint("https://fleet.example:49153")[0]).close()
    assert loaded == ["load_default_certs"]  # the system's CAs, as Go's TLS uses
    loaded.clear()
    make_transport(parse_endpoint("https://fleet.example:49153")[0], TlsFiles("/ca.pem")).close()
    assert loaded == ["load_verify_locations"]  # --ca-file instead


class _BlockingUnits(http.server.BaseHTTPRequestHandler):
    """`GET /fleet/v1/units/<name>` answers only once `MAX_IN_FLIGHT` requests are waiting."""

    protocol_version = "HTTP/1.1"  # keep-alive, as fleetd's server

    def do_GET(self) -> None:
        try:
            self.server.barrier.wait()  # type: ignore[attr-defined]
        except threading.BrokenBarrierError:
            self.send_error(599, "the requests were not sent together")
            return
        name = self.path.rsplit("/", 1)[-1]
        body = json.dumps({"name": name, "desiredState": "inactive"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _BacklogServer(_UnixServer):
    request_queue_size = 2 * MAX_IN_FLIGHT  # every connection is accepted, however slow


def test_the_real_transport_carries_max_in_flight_requests_at_once(tmp_path: Path) -> None:
    path = os.path.join(tmp_path, "fleet.sock")
    server = _BacklogServer(path, _BlockingUnits)
    server.barrier = threading.Barrier(MAX_IN_FLIGHT, timeout=DEADLINE)  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    endpoint, _ = parse_endpoint(f"unix://{path}")
    client = FleetClient(endpoint, transport=make_transport(endpoint), timeout=DEADLINE)
    names = [f"u{i}.service" for i in range(2 * MAX_IN_FLIGHT)]
    try:
        found = fetch_units(client, names[:MAX_IN_FLIGHT])
        found.update(fetch_units(client, names[MAX_IN_FLIGHT:]))
    finally:
        client.close()
        server.shutdown()
        server.server_close()
    assert [unit.name if unit else None for unit in found.values()] == names
