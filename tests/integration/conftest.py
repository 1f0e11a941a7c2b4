"""The integration cluster: fleetctl against the real API, engine and etcd, over real sockets.

`fleet_cluster` brings up, on the suite's etcd and under the test's own key prefix:
* three machines, each the real agent on the fake systemd (`devtools.fakehost.FakeHost`, with a
  units directory of its own): `WEB` (role=web), `DB1` and `DB2` (role=db); each registers
  `machines/<id>` on its own kept-alive lease, runs what is scheduled on it and publishes the
  states;
* a real `Engine`, campaigning as `WEB`;
* the v1 API served by `fleetd.api.listeners.serve_api`, exactly as fleetd serves it: on a unix
  socket (no token) and on TCP 127.0.0.1 with a bearer token read from a token file, with pages
  of `PAGE_SIZE` items.

It returns once the API answers with its view ready and lists the three machines, the engine
leads and every agent is registered and has read its schedule, so each test starts from a settled
cluster; the current directory is then the cluster's `workdir`, where tests write their unit files.

fleetctl's wait windows are shortened through `fleetctl.wait`'s module constants; every other
wait is for a condition, with a deadline.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TextIO

import httpx
import pytest
import structlog

from devtools.etcd_server import free_port
from devtools.fakehost import FakeHost
from fleetctl import wait
from fleetd.api.listeners import serve_api
from fleetd.config import Config
from fleetd.engine.engine import Engine
from fleetd.registry.client import EtcdClient
from fleetd.registry.keys import Keys
from tests.engine.cluster import running, wait_until
from tests.integration.cluster import (
    ATTEMPT_WINDOW,
    IP,
    MACHINE_ROLES,
    POLL_INTERVAL,
    TOKEN,
    WEB,
    Cluster,
)

STARTUP_WITHIN = 15.0
PAGE_SIZE = 4
"""The API's page size: small, so fleetctl follows `nextPageToken` through most lists (eight
unit states come as two full pages and an empty third, as in fleet)."""
ENGINE_INTERVAL = 0.5


@pytest.fixture(autouse=True)
def fleetctl_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No FLEETCTL_* variable from the developer's shell, and short wait windows."""
    for name in list(os.environ):
        if name.startswith("FLEETCTL_"):
            monkeypatch.delenv(name)
    monkeypatch.setattr(wait, "POLL_INTERVAL", POLL_INTERVAL)
    monkeypatch.setattr(wait, "ATTEMPT_WINDOW", ATTEMPT_WINDOW)


@pytest.fixture(autouse=True)
def fleetd_log(tmp_path: Path) -> Iterator[TextIO]:
    """fleetd's structlog output goes to `fleetd.log` in the test's tmp dir (read it when a test
    fails), never to the stdout fleetctl writes on."""
    with (tmp_path / "fleetd.log").open("w", encoding="utf-8") as handle:
        structlog.configure(
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso"),
                structlog.processors.KeyValueRenderer(key_order=["timestamp", "level", "event"]),
            ],
            logger_factory=structlog.WriteLoggerFactory(file=handle),
        )
        try:
            yield handle
        finally:
            structlog.reset_defaults()


@pytest.fixture
def socket_dir() -> Iterator[str]:
    """A short directory for the API socket (a unix socket path must fit in 108 bytes)."""
    path = tempfile.mkdtemp(prefix="pyfleet-it-", dir="/tmp")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def _get(socket_path: str, path: str) -> httpx.Response | None:
    transport = httpx.AsyncHTTPTransport(uds=socket_path)
    async with httpx.AsyncClient(transport=transport, base_url="http://fleet") as http:
        try:
            return await http.get(path)
        except httpx.TransportError:
            return None  # not listening yet


async def _settled(socket_path: str) -> bool:
    """The API's view is ready and lists the three machines."""
    health = await _get(socket_path, "/healthz")
    if health is None or health.status_code != 200 or not health.json().get("viewReady"):
        return False
    machines = await _get(socket_path, "/fleet/v1/machines")
    assert machines is not None
    listed = {machine["id"] for machine in machines.json().get("machines", [])}
    return listed == set(MACHINE_ROLES)


@pytest.fixture
async def fleet_cluster(
    etcd: EtcdClient,
    key_prefix: str,
    tmp_path: Path,
    socket_dir: str,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Cluster]:
    keys = Keys(key_prefix)
    workdir = tmp_path / "units"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    token_file = tmp_path / "api-token"
    token_file.write_text(f"  {TOKEN}\n", encoding="utf-8")  # serve_api strips whitespace
    socket_path = os.path.join(socket_dir, "fleet.sock")
    port = free_port()
    config = Config(
        etcd_key_prefix=key_prefix,
        listen=(socket_path, f"127.0.0.1:{port}"),
        api_token_file=str(token_file),
        token_limit=PAGE_SIZE,
    )

    hosts = {
        machine: FakeHost(
            etcd,
            keys,
            machine,
            tmp_path / "hosts" / machine,
            metadata={"role": role},
            ip=IP,
            pod_addresses=tmp_path / "pod-addresses" / machine,
        )
        for machine, role in MACHINE_ROLES.items()
    }
    for host in hosts.values():
        host.start()
    api = asyncio.create_task(serve_api(config, etcd, keys, shutdown_timeout=1.0), name="api")
    engine = Engine(etcd, keys, WEB, reconcile_interval=ENGINE_INTERVAL)
    try:
        async with running(engine) as engine_task:

            async def settled() -> bool:
                if api.done():
                    api.result()  # it failed to start: raise why
                return await _settled(socket_path)

            await wait_until(settled, "the API", within=STARTUP_WITHIN)
            async with asyncio.timeout(STARTUP_WITHIN):
                await engine.leading.wait()
                for host in hosts.values():
                    await host.ready()
            cluster = Cluster(etcd, keys, engine, socket_path, port, workdir, dict(hosts))
            yield cluster
            agents = [host.task for host in cluster.hosts.values()]
            for task in (engine_task, api, *agents):
                assert task is not None
                assert not task.done(), f"{task.get_name()} stopped during the test"
    finally:
        api.cancel()
        await asyncio.gather(api, return_exceptions=True)
        for host in hosts.values():
            await host.leave()
