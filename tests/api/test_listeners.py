"""The api component for real: uvicorn on a unix socket and on TCP with a bearer token."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
import time
from collections.abc import AsyncIterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog

from devtools.etcd_server import free_port
from fleetd import __version__
from fleetd.api.connections import ConnectionLimits
from fleetd.api.listeners import ApiStartError, bind_tcp, bind_unix, read_token, serve_api
from fleetd.config import Config
from fleetd.registry.client import EtcdClient
from fleetd.registry.keys import Keys
from tests.engine.cluster import wait_until

UNIT = {
    "desiredState": "loaded",
    "options": [{"section": "Service", "name": "ExecStart", "value": "/bin/true"}],
}


@dataclass
class Served:
    """The running API component and what it has logged so far."""

    task: asyncio.Task[None]
    logs: list[MutableMapping[str, Any]]


@contextlib.asynccontextmanager
async def serving(
    config: Config,
    etcd: EtcdClient,
    limits: ConnectionLimits = ConnectionLimits(),  # noqa: B008 - frozen
) -> AsyncIterator[Served]:
    """serve_api in the background (its logs captured, not printed); stopped, bounded, after."""
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(
            serve_api(config, etcd, Keys(config.etcd_key_prefix), shutdown_timeout=2, limits=limits)
        )
        try:
            yield Served(task, logs)
        finally:
            task.cancel()
            started = time.monotonic()
            await asyncio.gather(task, return_exceptions=True)
            assert time.monotonic() - started < 5, "the API took too long to stop"
    listening = [e["address"] for e in logs if e["event"] == "API listening"]
    assert listening == list(config.listen)


async def ready(client: httpx.AsyncClient) -> bool:
    try:
        response = await client.get("/healthz")
    except httpx.TransportError:
        return False
    return response.status_code == 200 and response.json()["viewReady"] is True


def unix_client(path: Path) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.AsyncHTTPTransport(uds=str(path)), base_url="http://fleet"
    )


async def test_serves_on_a_unix_socket(tmp_path: Path, etcd: EtcdClient, key_prefix: str) -> None:
    path = tmp_path / "fleet.sock"
    config = Config(listen=(str(path),), etcd_key_prefix=key_prefix)
    async with serving(config, etcd) as served, unix_client(path) as client:
        await wait_until(lambda: ready(client), "the API to answer on its socket", within=10)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        machines = await client.get("/fleet/v1/machines")
        assert (machines.status_code, machines.content) == (200, b"{}")
        assert machines.headers["server"] == f"fleetd/{__version__}"
        created = await client.put("/fleet/v1/units/a.service", json=UNIT)
        assert created.status_code == 201
        units = (await client.get("/fleet/v1/units")).json()["units"]
        assert [(u["name"], u["desiredState"]) for u in units] == [("a.service", "loaded")]
        assert not served.task.done()
    assert not path.exists()


async def test_a_stale_socket_is_replaced(
    tmp_path: Path, etcd: EtcdClient, key_prefix: str
) -> None:
    path = tmp_path / "fleet.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as old:
        old.bind(str(path))  # left behind, as by a crashed fleetd
    config = Config(listen=(str(path),), etcd_key_prefix=key_prefix)
    async with serving(config, etcd), unix_client(path) as client:
        await wait_until(lambda: ready(client), "the API to answer on its socket", within=10)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660


async def test_a_live_socket_or_another_file_is_not_replaced(
    tmp_path: Path, etcd: EtcdClient, key_prefix: str
) -> None:
    path = tmp_path / "fleet.sock"
    live = bind_unix(str(path))
    try:
        with pytest.raises(ApiStartError, match="another server is listening on"):
            bind_unix(str(path))
        config = Config(listen=(str(path),), etcd_key_prefix=key_prefix)
        with pytest.raises(ApiStartError, match="another server is listening on"):
            await asyncio.wait_for(serve_api(config, etcd, Keys(key_prefix)), 5)
    finally:
        live.sock.close()
    path.unlink()
    path.write_text("not a socket")
    with pytest.raises(ApiStartError, match="exists and is not a socket"):
        bind_unix(str(path))
    assert path.read_text() == "not a socket"


async def test_tcp_needs_the_token(tmp_path: Path, etcd: EtcdClient, key_prefix: str) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("  s3cret\n")
    path = tmp_path / "fleet.sock"
    address = f"127.0.0.1:{free_port()}"
    config = Config(
        listen=(str(path), address), api_token_file=str(token_file), etcd_key_prefix=key_prefix
    )
    async with (
        serving(config, etcd),
        httpx.AsyncClient(base_url=f"http://{address}") as remote,
        unix_client(path) as local,
    ):
        await wait_until(lambda: ready(remote), "the API to answer on TCP", within=10)
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Bearer S3CRET"}):
            refused = await remote.get("/fleet/v1/machines", headers=headers)
            assert (refused.status_code, refused.json()) == (
                401,
                {"error": {"code": 401, "message": "missing or wrong bearer token"}},
            )
        right = await remote.get("/fleet/v1/machines", headers={"Authorization": "Bearer s3cret"})
        assert (right.status_code, right.content) == (200, b"{}")
        assert (await local.get("/fleet/v1/machines")).status_code == 200  # the file mode guards it


def test_token_files(tmp_path: Path) -> None:
    good = tmp_path / "good"
    good.write_text("\n tok en \n")
    assert read_token(str(good)) == "tok en"
    empty = tmp_path / "empty"
    empty.write_text(" \n")
    with pytest.raises(ApiStartError, match="is empty"):
        read_token(str(empty))
    with pytest.raises(ApiStartError, match="cannot read api_token_file"):
        read_token(str(tmp_path / "missing"))


async def test_an_empty_token_file_stops_the_api_before_it_listens(
    tmp_path: Path, etcd: EtcdClient, key_prefix: str
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("")
    path = tmp_path / "fleet.sock"
    config = Config(listen=(str(path), f"127.0.0.1:{free_port()}"), api_token_file=str(token_file))
    with pytest.raises(ApiStartError, match="is empty"):
        await asyncio.wait_for(serve_api(config, etcd, Keys(key_prefix)), 5)
    assert not path.exists()


def test_tcp_addresses_that_cannot_be_used() -> None:
    taken = bind_tcp("127.0.0.1:0")
    try:
        port = taken.sock.getsockname()[1]
        with pytest.raises(ApiStartError, match=f"cannot listen on 127.0.0.1:{port}"):
            bind_tcp(f"127.0.0.1:{port}")
    finally:
        taken.sock.close()
    with pytest.raises(ApiStartError, match=r"cannot listen on no-such-host\.invalid:80"):
        bind_tcp("no-such-host.invalid:80")
    ipv6 = bind_tcp("[::1]:0")
    try:
        assert ipv6.sock.family == socket.AF_INET6
    finally:
        ipv6.sock.close()
