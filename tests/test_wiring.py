"""fleetd as a whole: it waits out an unreachable etcd, runs its engine, its API and its agent
(through a mock systemd on a private bus), waits out an unreachable system bus, and stops when
told."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from pathlib import Path

import httpx
import pytest
import structlog

from devtools.etcd_server import EtcdServer
from fleetd.config import Config, ConfigError, load_config
from fleetd.core.model import Machine
from fleetd.registry.client import EtcdClient, KeyValue
from fleetd.registry.codec import decode_machine, decode_state
from fleetd.registry.keys import Keys
from fleetd.wiring import (
    MachineIdError,
    agent_machine,
    default_route_interface,
    detect_public_ip,
    interface_address,
    peer_address,
    read_machine_id,
    serve,
)
from tests.agent.bus import BusDaemon, MockSystemd
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


# ---- the agent component


def _agent_config(tmp_path: Path, endpoint: str, key_prefix: str, *extra: str) -> Config:
    machine_id = tmp_path / "machine-id"
    machine_id.write_text(MACHINE)
    empty = tmp_path / "fleet.conf"
    empty.write_text("")
    argv = [
        "--config", str(empty),
        "--etcd-servers", endpoint,
        "--etcd-key-prefix", key_prefix,
        "--machine-id-file", str(machine_id),
        "--units-directory", str(tmp_path / "units"),
        "--listen", "",
        *extra,
    ]  # fmt: skip
    return load_config(argv, {})


async def test_fleetd_runs_scheduled_units_through_systemd(
    tmp_path: Path,
    etcd_server: EtcdServer,
    etcd: EtcdClient,
    key_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = _agent_config(
        tmp_path,
        etcd_server.endpoint,
        key_prefix,
        "--public-ip", "10.1.2.3",
        "--metadata", "role=web",
        "--agent-ttl", "3s",
        "--engine-reconcile-interval", "0.2s",
    )  # fmt: skip
    assert config.units_directory == str(tmp_path / "units")
    keys = Keys(key_prefix)
    daemon = BusDaemon()
    mock = MockSystemd()
    stop = asyncio.Event()
    try:
        daemon.start()
        manager = await mock.start(daemon.address)
        monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", daemon.address)
        fleetd = asyncio.create_task(serve(config, stop, shutdown_timeout=5))
        try:

            async def registered() -> KeyValue | None:
                return await etcd.get(keys.machine(MACHINE))

            machine = await wait_until(registered, "the agent to register the machine")
            assert machine is not None
            assert decode_machine(machine.key, machine.value) == Machine(
                MACHINE, {"role": "web"}, "10.1.2.3"
            )
            await submit(etcd, keys, "hello.service")

            async def running() -> bool:
                kv = await etcd.get(keys.state(MACHINE, "hello.service"))
                return kv is not None and decode_state(kv.key, kv.value).active_state == "active"

            await wait_until(running, "hello.service to run and its state to be published")
            assert ("StartUnit", ("hello.service", "replace")) in manager.calls
            assert (tmp_path / "units" / "hello.service").is_file()
            stop.set()
            await asyncio.wait_for(fleetd, timeout=10)
        finally:
            stop.set()
            await asyncio.gather(fleetd, return_exceptions=True)
        # A stopped fleetd leaves its units running and its machine to its lease's TTL.
        assert not any(method == "StopUnit" for method, _ in manager.calls)
        assert mock.model.status("hello.service").active_state == "active"
        left = await etcd.get(keys.machine(MACHINE))
        assert left is not None
        await etcd.lease_revoke(left.lease)
    finally:
        await mock.stop()
        daemon.cleanup()


async def test_fleetd_waits_for_the_system_bus(
    tmp_path: Path,
    etcd_server: EtcdServer,
    etcd: EtcdClient,
    key_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = _agent_config(tmp_path, etcd_server.endpoint, key_prefix, "--disable-engine")
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path / 'no-bus'}")
    stop = asyncio.Event()
    with structlog.testing.capture_logs() as logs:
        fleetd = asyncio.create_task(serve(config, stop, shutdown_timeout=5))
        try:

            async def retried() -> bool:
                await asyncio.sleep(0)
                retries = [e for e in logs if e["event"] == "systemd D-Bus unreachable, retrying"]
                return len(retries) >= 2

            await wait_until(retried, "fleetd to log that it retries the system bus")
            assert not fleetd.done()
            # No systemd, no presence: a host that cannot run units does not attract them.
            assert await etcd.get(Keys(key_prefix).machine(MACHINE)) is None
            stop.set()
            await asyncio.wait_for(fleetd, timeout=10)
        finally:
            stop.set()
            await asyncio.gather(fleetd, return_exceptions=True)
    retry = next(e for e in logs if e["event"] == "systemd D-Bus unreachable, retrying")
    assert retry["log_level"] == "warning"
    assert retry["address"] == f"unix:path={tmp_path / 'no-bus'}"
    assert "No such file" in retry["error"]


def test_public_ip_defaults_to_the_default_routes_interface(tmp_path: Path) -> None:
    header = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n"
    via_lo = tmp_path / "via-lo"
    via_lo.write_text(header + "lo\t00000000\t0100007F\t0003\t0\t0\t0\t00000000\t0\t0\t0\n")
    no_default = tmp_path / "no-default"
    no_default.write_text(header + "lo\t0000007F\t00000000\t0001\t0\t0\t0\t000000FF\t0\t0\t0\n")
    ghost = tmp_path / "ghost"
    ghost.write_text(header + "nosuch0\t00000000\t01020304\t0003\t0\t0\t0\t00000000\t0\t0\t0\n")
    assert default_route_interface(via_lo.read_text()) == "lo"
    assert detect_public_ip(str(via_lo)) == "127.0.0.1"
    assert default_route_interface(no_default.read_text()) is None
    assert detect_public_ip(str(no_default)) == "127.0.0.1"
    assert interface_address("nosuch0") is None
    assert detect_public_ip(str(ghost)) == "127.0.0.1"
    assert detect_public_ip(str(tmp_path / "missing")) == "127.0.0.1"
    assert ipaddress.ip_address(detect_public_ip()).version == 4  # this host's own table


def test_agent_machine_uses_configured_identity() -> None:
    config = Config(public_ip="192.0.2.7", metadata=(("az", "1"), ("role", "db")))
    assert agent_machine(config, MACHINE) == Machine(
        MACHINE, {"az": "1", "role": "db"}, "192.0.2.7"
    )
    assert agent_machine(Config(), MACHINE).primary_ip == detect_public_ip()


def test_units_directory_must_be_absolute(tmp_path: Path) -> None:
    empty = tmp_path / "fleet.conf"
    empty.write_text("")
    assert load_config(["--config", str(empty)], {}).units_directory == "/run/fleet/units/"
    with pytest.raises(ConfigError, match="units_directory: must be an absolute path"):
        load_config(["--config", str(empty), "--units-directory", "run/units"], {})


@pytest.mark.parametrize(
    ("peer_listen", "public_ip", "address"),
    [
        ("", "192.0.2.7", ""),
        ("0.0.0.0:49154", "192.0.2.7", "192.0.2.7:49154"),
        (":49154", "192.0.2.7", "192.0.2.7:49154"),
        ("[::]:49154", "2001:db8::7", "[2001:db8::7]:49154"),
        ("10.1.1.1:49154", "192.0.2.7", "10.1.1.1:49154"),
    ],
)
def test_the_published_node_to_node_address(peer_listen: str, public_ip: str, address: str) -> None:
    assert peer_address(peer_listen, public_ip) == address
    config = Config(public_ip="192.0.2.7", peer_listen=peer_listen)
    expected = peer_address(peer_listen, "192.0.2.7")
    assert agent_machine(config, MACHINE).peer_address == expected
