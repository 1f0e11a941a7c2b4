"""`fleetctl journal` and `fleetctl status` end to end, in one process: fleetctl against the API
as `serve_api` serves it (with a cluster credential), which forwards to the node-to-node endpoint
that the unit's machine publishes (`serve_peer` on TCP, its journal reader a stand-in: the fake
systemd has no journal; `tests/rig/test_journal.py` reads real ones), on a real etcd with the
real engine and agent."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from devtools.etcd_server import free_port
from devtools.fakehost import FakeHost
from fleetd.api.listeners import serve_api
from fleetd.api.peer import serve_peer
from fleetd.config import Config
from fleetd.engine.engine import Engine
from fleetd.registry.client import EtcdClient
from fleetd.registry.keys import Keys
from fleetd.runtime.journal import JournalQuery
from tests.engine.cluster import running, wait_until
from tests.integration.cluster import WEB, Cluster
from tests.integration.scenario import HELLO

SECRET = "integration-cluster-secret"
WITHIN = 15.0
STAMP = 1764763201_000000


class Journal:
    """The stand-in journal of the unit's machine: two entries per unit, then, when followed,
    nothing more until the reader is closed."""

    def __init__(self) -> None:
        self.following = asyncio.Event()

    async def __call__(self, query: JournalQuery) -> AsyncIterator[bytes]:
        for n in range(2):
            entry = {
                "__CURSOR": f"c{n}",
                "__REALTIME_TIMESTAMP": str(STAMP + n),
                "_HOSTNAME": "web",
                "SYSLOG_IDENTIFIER": "bash",
                "_PID": "7",
                "MESSAGE": f"{query.unit} says {n}",
            }
            yield json.dumps(entry).encode()
        if query.follow:
            self.following.set()
            await asyncio.Event().wait()


@pytest.fixture
def journal() -> Journal:
    return Journal()


@pytest.fixture
async def cluster(
    etcd: EtcdClient,
    key_prefix: str,
    tmp_path: Path,
    journal: Journal,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Cluster]:
    keys = Keys(key_prefix)
    workdir = tmp_path / "units"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    for name in list(os.environ):
        if name.startswith("FLEETCTL_"):
            monkeypatch.delenv(name)
    secret = tmp_path / "cluster-secret"
    secret.write_text(SECRET)
    socket_dir = tempfile.mkdtemp(prefix="pyfleet-jr-", dir="/tmp")
    socket_path = os.path.join(socket_dir, "fleet.sock")
    peer_port = free_port()
    config = Config(
        etcd_key_prefix=key_prefix, listen=(socket_path,), cluster_secret_file=str(secret)
    )
    host = FakeHost(etcd, keys, WEB, tmp_path / "host", peer_address=f"127.0.0.1:{peer_port}")
    host.start()
    tasks = [
        asyncio.create_task(serve_api(config, etcd, keys, shutdown_timeout=1.0)),
        asyncio.create_task(
            serve_peer(f"127.0.0.1:{peer_port}", SECRET, shutdown_timeout=1.0, reader=journal)
        ),
    ]
    engine = Engine(etcd, keys, WEB, reconcile_interval=0.5)
    try:
        async with running(engine):

            async def ready() -> bool:
                for task in tasks:
                    if task.done():
                        task.result()
                transport = httpx.AsyncHTTPTransport(uds=socket_path)
                async with httpx.AsyncClient(transport=transport, base_url="http://f") as http:
                    try:
                        health = (await http.get("/healthz")).json()
                    except httpx.TransportError:
                        return False
                return bool(health["viewReady"])

            await wait_until(ready, "the API", within=WITHIN)
            async with asyncio.timeout(WITHIN):
                await engine.leading.wait()
                await host.ready()
            yield Cluster(etcd, keys, engine, socket_path, 0, workdir, {WEB: host})
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await host.leave()
        shutil.rmtree(socket_dir, ignore_errors=True)


async def test_journal_and_status_show_the_units_lines(cluster: Cluster) -> None:
    cluster.write_unit("hello.service", HELLO)
    assert (await cluster.fleetctl("start", "hello.service")).code == 0

    journal = await cluster.fleetctl("journal", "--output", "cat", "hello")
    assert (journal.code, journal.out, journal.err) == (
        0,
        "hello.service says 0\nhello.service says 1\n",
        "",
    )
    short = await cluster.fleetctl("journal", "--lines", "1", "hello.service")
    assert short.out.endswith(" web bash[7]: hello.service says 1\n")

    status = await cluster.fleetctl("status", "hello.service")
    assert status.code == 0
    block, tail = status.out.split("\n\n")
    assert block.splitlines()[2] == "     Active: active (running)"
    assert [line.split(": ", 1)[1] for line in tail.splitlines()] == [
        "hello.service says 0",
        "hello.service says 1",
    ]


async def test_a_followed_journal_ends_when_the_unit_is_destroyed(
    cluster: Cluster, journal: Journal
) -> None:
    cluster.write_unit("hello.service", HELLO)
    assert (await cluster.fleetctl("start", "hello.service")).code == 0
    following = asyncio.create_task(cluster.fleetctl("journal", "-f", "--output", "cat", "hello"))
    await asyncio.wait_for(journal.following.wait(), WITHIN)
    transport = httpx.AsyncHTTPTransport(uds=cluster.socket_path)
    async with httpx.AsyncClient(transport=transport, base_url="http://f") as http:
        assert (await http.delete("/fleet/v1/units/hello.service")).status_code == 204
    result = await asyncio.wait_for(following, WITHIN)
    assert result.code == 0
    assert result.out == "hello.service says 0\nhello.service says 1\n"
    assert result.err == "unit hello.service was destroyed\n"


async def test_a_unit_that_is_not_running(cluster: Cluster) -> None:
    cluster.write_unit("hello.service", HELLO)
    assert (await cluster.fleetctl("submit", "hello.service")).code == 0
    result = await cluster.fleetctl("journal", "hello.service")
    assert (result.code, result.out) == (1, "")
    assert result.err == "Unit hello.service does not appear to be running.\n"
