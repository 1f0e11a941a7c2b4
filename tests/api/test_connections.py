"""The API's connection limits on real sockets: the served app in-process, and a real fleetd.

In-process (`serve_api` with small limits): a listener refuses connections beyond its limit at
once while the unix socket answers; a request that cannot be parsed is a 400 in fleet's shape,
logged with a count; a client that does not send a whole request in time is closed. In a
`fleetd` process whose open-files limit is lowered: idle connections cannot take the API down,
and running out of descriptors is refused and logged once per interval.

Every wait has a deadline and ends on a condition (a close, a response, a log line).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import resource
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devtools.etcd_server import EtcdServer, free_port
from fleetd.api.connections import ConnectionLimits, refusal
from fleetd.config import Config
from fleetd.registry.client import EtcdClient
from tests.api.test_listeners import ready, serving, unix_client
from tests.engine.cluster import wait_until

DEADLINE = 10.0  # for a close or a response that should come at once: only a hang reaches it
TOKEN = "s3cret"
Opener = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


def tcp(address: str) -> Opener:
    host, _, port = address.rpartition(":")
    return lambda: asyncio.open_connection(host, int(port))


def unix(path: Path | str) -> Opener:
    return lambda: asyncio.open_unix_connection(str(path))


def get(path: str, *, token: str | None = TOKEN, close: bool = True) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: fleet"]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def exchange(open_connection: Opener, request: bytes) -> bytes:
    """Send `request` (maybe nothing) on a new connection; everything read until the server
    closes it, within DEADLINE."""
    reader, writer = await open_connection()
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(DEADLINE):
            return await reader.read()
    finally:
        writer.close()


def parse(response: bytes) -> tuple[int, dict[str, str], Any]:
    """Status, headers (lower-case names) and JSON body of one whole HTTP/1.1 response."""
    head, _, body = response.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    assert len(body) == int(headers["content-length"]), response
    return int(status_line.split()[1]), headers, json.loads(body)


def events(logs: list[MutableMapping[str, Any]], event: str) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == event]


def tcp_config(tmp_path: Path, key_prefix: str) -> Config:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    return Config(
        listen=(str(tmp_path / "fleet.sock"), f"127.0.0.1:{free_port()}"),
        api_token_file=str(token_file),
        etcd_key_prefix=key_prefix,
    )


def test_a_refusal_is_a_whole_response_in_fleets_error_shape() -> None:
    status, headers, body = parse(refusal("too many"))
    assert status == 503
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert body == {"error": {"code": 503, "message": "too many"}}


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="max_connections must be at least 1"):
        ConnectionLimits(max_connections=0)
    with pytest.raises(ValueError, match="header_timeout must be greater than zero"):
        ConnectionLimits(header_timeout=0)


async def test_beyond_its_limit_a_listener_refuses_at_once_and_the_unix_socket_answers(
    tmp_path: Path, etcd: EtcdClient, key_prefix: str
) -> None:
    config = tcp_config(tmp_path, key_prefix)
    path, address = config.listen
    remote = tcp(address)
    async with serving(config, etcd, ConnectionLimits(max_connections=3)) as served:
        async with unix_client(Path(path)) as local:
            await wait_until(lambda: ready(local), "the API to answer on its socket", within=10)
        held = [await remote() for _ in range(3)]  # idle: they never send a request
        try:
            for _ in range(10):
                status, headers, body = parse(await exchange(remote, b""))
                assert (status, headers["retry-after"]) == (503, "1")
                assert body == {
                    "error": {
                        "code": 503,
                        "message": "too many connections to this fleetd API listener (limit 3); "
                        "retry later",
                    }
                }
            # The unix socket has its own limit: a flood on TCP does not reach it.
            status, _, machines = parse(await exchange(unix(path), get("/fleet/v1/machines")))
            assert (status, machines) == (200, {})
        finally:
            for _, writer in held:
                writer.close()

        async def tcp_answers() -> bool:
            response = await exchange(remote, get("/fleet/v1/machines"))
            return parse(response)[0] == 200

        await wait_until(tcp_answers, "TCP to serve again once its idle connections closed")
        assert parse(await exchange(remote, get("/fleet/v1/machines", token="wrong")))[0] == 401
    refused = events(served.logs, "API listener full: connections refused")
    first = refused[0]
    assert (first["count"], first["address"], first["limit"]) == (1, address, 3)
    assert sum(line["count"] for line in refused) >= 10
    assert len(refused) <= 3  # the first at once, the rest at the interval or at shutdown


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /fleet/v1/units HTTP/1.1\r\n\r\n",  # no Host
        b"PUT /fleet/v1/units/a.service HTTP/1.1\r\nHost: fleet\r\nContent-Length: x\r\n\r\n",
        b"PUT /fleet/v1/units/a.service HTTP/1.1\r\nHost: fleet\r\n"
        b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
    ids=["request-line", "no-host", "content-length", "chunk"],
)
async def test_a_request_that_cannot_be_parsed_is_a_400_in_fleets_shape(
    tmp_path: Path,
    etcd: EtcdClient,
    key_prefix: str,
    caplog: pytest.LogCaptureFixture,
    request_bytes: bytes,
) -> None:
    """uvicorn's own answer is plain text, and it logs a line per request: on both listeners the
    answer is fleet's JSON error, and the log has one line with a count."""
    config = tcp_config(tmp_path, key_prefix)
    path, address = config.listen
    async with serving(config, etcd) as served:
        async with unix_client(Path(path)) as local:
            await wait_until(lambda: ready(local), "the API to answer on its socket", within=10)
        for opener in [unix(path), tcp(address)] * 3:
            status, headers, body = parse(await exchange(opener, request_bytes))
            assert (status, headers["content-type"], headers["connection"]) == (
                400,
                "application/json",
                "close",
            )
            assert body == {"error": {"code": 400, "message": "malformed HTTP request"}}
        status, _, machines = parse(await exchange(unix(path), get("/fleet/v1/machines")))
        assert (status, machines) == (200, {})
    lines = events(served.logs, "API answered requests it could not parse with 400")
    assert sorted(line["address"] for line in lines if line["count"] == 1) == sorted(config.listen)
    assert sum(line["count"] for line in lines) == 6
    assert len(lines) <= 4  # per listener: the first at once, the rest at the interval or close
    assert not [r for r in caplog.records if "Invalid HTTP request" in r.getMessage()]


async def test_a_client_that_does_not_send_a_whole_request_in_time_is_closed(
    tmp_path: Path, etcd: EtcdClient, key_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    config = tcp_config(tmp_path, key_prefix)
    path, address = config.listen
    remote = tcp(address)
    # uvicorn's keep-alive timeout is far off: only the request deadlines can close these
    limits = ConnectionLimits(
        header_timeout=0.5, body_timeout=0.5, keep_alive_timeout=60, report_interval=0.1
    )
    async with serving(config, etcd, limits) as served:
        async with unix_client(Path(path)) as local:
            await wait_until(lambda: ready(local), "the API to answer on its socket", within=10)
        half_headers = b"GET /fleet/v1/machines HTTP/1.1\r\nHost: fleet\r\nAuthor"
        half_body = (
            b"PUT /fleet/v1/units/a.service HTTP/1.1\r\nHost: fleet\r\n"
            + f"Authorization: Bearer {TOKEN}\r\n".encode()
            + b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"desiredState"'
        )
        closed = await asyncio.gather(
            exchange(remote, b""),  # connects and never speaks
            exchange(remote, half_headers),
            exchange(unix(path), half_headers),
            exchange(remote, half_body),
        )
        assert list(closed) == [b"", b"", b"", b""]

        # After a response, the next request is held to the same deadline.
        reader, writer = await remote()
        try:
            writer.write(get("/fleet/v1/machines", close=False))
            async with asyncio.timeout(DEADLINE):
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                assert (head.split()[1], await reader.readexactly(length)) == (b"200", b"{}")
                writer.write(b"GET /fleet/v1/units HTT")
                assert await reader.read() == b""
        finally:
            writer.close()

        async def all_reported() -> list[MutableMapping[str, Any]]:
            lines = events(served.logs, "API closed connections that sent no whole request in time")
            return lines if sum(line["count"] for line in lines) >= 5 else []

        reported = await wait_until(all_reported, "the slow clients in the log")
        assert sum(line.get("headers", 0) for line in reported) == 4
        assert sum(line.get("body", 0) for line in reported) == 1
        assert parse(await exchange(remote, get("/fleet/v1/units")))[2] == {}  # nothing written
    assert not [e for e in served.logs if e["log_level"] == "error"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # uvicorn's tracebacks


# ---------------------------------------------------------------- a real fleetd, few descriptors


@dataclass
class Fleetd:
    process: subprocess.Popen[bytes]
    socket_path: Path
    tcp_address: str
    log_path: Path

    def log_lines(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines()

    def log_events(self, event: str) -> list[MutableMapping[str, Any]]:
        found: list[MutableMapping[str, Any]] = []
        for line in self.log_lines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict) and entry.get("event") == event:
                    found.append(entry)
        return found

    def descriptors(self) -> list[int]:
        return sorted(int(fd) for fd in os.listdir(f"/proc/{self.process.pid}/fd"))


@contextlib.contextmanager
def fleetd_api(
    tmp_path: Path, etcd_server: EtcdServer, key_prefix: str, *, nofile: tuple[int, int]
) -> Iterator[Fleetd]:
    """The `fleetd` command serving only the API (no engine, no agent) on a unix socket and TCP,
    started with RLIMIT_NOFILE `nofile` (soft, hard); its logs go to a file. Stopped afterwards."""
    machine_id = tmp_path / "machine-id"
    machine_id.write_text("a" * 32 + "\n")
    config = tcp_config(tmp_path, key_prefix)
    socket_path, address = config.listen
    fleetd = [
        sys.executable,
        "-m",
        "fleetd.cli",
        f"--etcd-servers={etcd_server.endpoint}",
        f"--etcd-key-prefix={key_prefix}",
        f"--machine-id-file={machine_id}",
        "--disable-engine",
        "--disable-agent",
        f"--listen={socket_path},{address}",
        f"--api-token-file={config.api_token_file}",
    ]
    # the limit is set in the child before fleetd runs (no preexec_fn in a threaded test process)
    limited = (
        "import os, resource, sys\n"
        f"resource.setrlimit(resource.RLIMIT_NOFILE, {nofile})\n"
        "os.execv(sys.executable, sys.argv[1:])\n"
    )
    log_path = tmp_path / "fleetd.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", limited, *fleetd],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).parents[2],
        )
    try:
        yield Fleetd(process, Path(socket_path), address, log_path)
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def started(fleetd: Fleetd) -> None:
    async def answers() -> bool:
        assert fleetd.process.poll() is None, "\n".join(fleetd.log_lines()[-30:])
        try:
            response = await exchange(unix(fleetd.socket_path), get("/healthz", token=None))
        except OSError:
            return False
        return parse(response)[2].get("viewReady") is True

    await wait_until(answers, "fleetd to serve its API", within=30)


async def test_idle_connections_cannot_take_the_api_down(
    tmp_path: Path, etcd_server: EtcdServer, key_prefix: str
) -> None:
    with fleetd_api(tmp_path, etcd_server, key_prefix, nofile=(64, 96)) as fleetd:
        await started(fleetd)
        # fleetd raised its soft limit to the hard one, and gave each listener its share
        (limits,) = fleetd.log_events("API connection limits")
        assert (limits["open_files_limit"], limits["connections_per_listener"]) == (96, 24)
        remote = tcp(fleetd.tcp_address)
        idle = []
        try:
            for _ in range(200):  # twice the process's whole limit, none of them ever speaking
                idle.append(await remote())
            # the unix socket answers at once, and so does TCP: with a refusal
            status, _, machines = parse(
                await exchange(unix(fleetd.socket_path), get("/fleet/v1/machines"))
            )
            assert (status, machines) == (200, {})
            assert parse(await exchange(remote, b""))[0] == 503
            assert len(fleetd.descriptors()) < 96
        finally:
            for _, writer in idle:
                writer.close()
        assert fleetd.process.poll() is None
    lines = fleetd.log_lines()
    assert not [line for line in lines if "Traceback" in line or "out of system resource" in line]
    assert len(lines) < 20, "\n".join(lines)


async def test_running_out_of_descriptors_is_refused_and_logged_once_per_interval(
    tmp_path: Path, etcd_server: EtcdServer, key_prefix: str
) -> None:
    with fleetd_api(tmp_path, etcd_server, key_prefix, nofile=(256, 256)) as fleetd:
        await started(fleetd)
        remote = tcp(fleetd.tcp_address)
        # Something else took the descriptors: the limit drops to the highest one in use. Idle
        # connections fill the numbers free below it, so every further accept() fails.
        pid = fleetd.process.pid
        in_use = fleetd.descriptors()
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (in_use[-1] + 1, 256))
        holes = []
        started_at = time.monotonic()
        refused = 0
        try:
            for fd in range(in_use[-1]):
                if fd not in in_use:
                    holes.append(await remote())
            for _ in range(40):
                status, _, body = parse(await exchange(remote, b""))  # answered at once
                assert (status, body["error"]["message"]) == (
                    503,
                    "fleetd is out of file descriptors; retry later",
                )
                refused += 1
            # the process is not spinning on accept(): it still serves what it has
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (256, 256))
            response = await exchange(remote, get("/fleet/v1/machines"))
            assert parse(response)[0] == 200
        finally:
            for _, writer in holes:
                writer.close()
        elapsed = time.monotonic() - started_at

        async def over() -> list[MutableMapping[str, Any]]:
            return fleetd.log_events("API accepting connections again")

        await wait_until(over, "the end of the exhaustion in the log")
    exhausted = fleetd.log_events("API cannot accept connections: out of file descriptors")
    ended = fleetd.log_events("API accepting connections again")
    assert 1 <= len(exhausted) <= 1 + elapsed / 10 + 1  # one line per 10 s, not one per attempt
    assert sum(line.get("refused", 0) for line in exhausted + ended) == refused
    lines = fleetd.log_lines()
    assert not [line for line in lines if "Traceback" in line or "out of system resource" in line]
