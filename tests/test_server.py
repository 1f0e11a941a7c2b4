"""fleetd as a whole: it waits out an unreachable etcd, runs its engine and its API, and stops
when told."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
import structlog

from devtools.etcd_server import EtcdServer
from fleetd.config import Config
from fleetd.registry.client import EtcdClient
from fleetd.registry.keys import Keys
from fleetd.server import MachineIdError, read_machine_id, serve
from tests.engine.cluster import add_machine, placements, submit, wait_until

MACHINE = "d" * 32


def test_machine_id_is_read_and_checked(tmp_path: Path) -> None:
    good = tmp_path / "machine-id"
    good.write_text(MACHINE + "\n")
    assert read_machine_id(str(good)) == MACHINE
    bad = tmp_path / "bad"
    bad.write_text("not-an-id\n")
    with pytest.raises(MachineIdError, match="does not hold a machine id"):
        read_machine_id(str(bad))
    with pytest.raises(MachineIdError, match="cannot read machine id from"):
        read_machine_id(str(tmp_path / "missing"))


async def test_fleetd_waits_for_etcd_then_schedules(tmp_path: Path, key_prefix: str) -> None:
    server = EtcdServer()  # ports chosen, not started: etcd is unreachable at first
    machine_id = tmp_path / "machine-id"
    machine_id.write_text(MACHINE)
    config = Config(
        etcd_servers=(server.endpoint,),
        etcd_key_prefix=key_prefix,
        etcd_request_timeout=1.0,
        engine_reconcile_interval=0.5,
        disable_agent=True,
        machine_id_file=str(machine_id),
        listen=(),
    )
    keys = Keys(key_prefix)
    stop = asyncio.Event()
    try:
        with structlog.testing.capture_logs() as logs:
            fleetd = asyncio.create_task(serve(config, stop, shutdown_timeout=5))

            async def said_retrying() -> bool:
                await asyncio.sleep(0)
                return any(e["event"] == "etcd unreachable, retrying" for e in logs)

            await wait_until(said_retrying, "fleetd to log that it retries", within=10)
            assert not fleetd.done()
            server.start()
            client = await EtcdClient.connect([server.endpoint])
            try:
                lease = await add_machine(client, keys, MACHINE)
                await submit(client, keys, "hello.service")

                async def placed() -> bool:
                    return (await placements(client, keys)).get("hello.service") == {MACHINE}

                await wait_until(placed, "fleetd's engine to place hello.service", within=20)
                stop.set()
                await asyncio.wait_for(fleetd, timeout=10)
                await lease.revoke()
            finally:
                await client.close()
    finally:
        stop.set()
        server.cleanup()


async def test_fleetd_serves_the_api_on_its_unix_socket(
    tmp_path: Path, etcd_server: EtcdServer, etcd: EtcdClient, key_prefix: str
) -> None:
    machine_id = tmp_path / "machine-id"
    machine_id.write_text(MACHINE)
    socket_path = tmp_path / "fleet.sock"
    config = Config(
        etcd_servers=(etcd_server.endpoint,),
        etcd_key_prefix=key_prefix,
        disable_agent=True,
        disable_engine=True,
        machine_id_file=str(machine_id),
        listen=(str(socket_path),),
    )
    lease = await add_machine(etcd, Keys(key_prefix), MACHINE, role="web")
    stop = asyncio.Event()
    with structlog.testing.capture_logs() as logs:  # no stdout left over from other tests
        fleetd = asyncio.create_task(serve(config, stop, shutdown_timeout=5))
        await _serve_machines(fleetd, stop, socket_path)
    assert {"event": "API listening", "address": str(socket_path), "log_level": "info"} in logs
    assert not socket_path.exists()
    await lease.revoke()


async def _serve_machines(
    fleetd: asyncio.Task[None], stop: asyncio.Event, socket_path: Path
) -> None:
    transport = httpx.AsyncHTTPTransport(uds=str(socket_path))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://fleet") as client:

            async def machines_listed() -> httpx.Response | None:
                try:
                    response = await client.get("/fleet/v1/machines")
                except httpx.TransportError:
                    return None
                return response if response.status_code == 200 else None

            response = await wait_until(machines_listed, "fleetd to serve /fleet/v1/machines")
            assert response is not None
            assert response.json() == {
                "machines": [{"id": MACHINE, "metadata": {"role": "web"}, "primaryIP": "127.0.0.1"}]
            }
        stop.set()
        started = time.monotonic()
        await asyncio.wait_for(fleetd, timeout=10)
        assert time.monotonic() - started < 6
    finally:
        stop.set()
        await asyncio.gather(fleetd, return_exceptions=True)
