"""`devtools.fakehost`: a machine that is the real agent on the fake systemd, on a real etcd."""

from __future__ import annotations

import asyncio
from pathlib import Path

from devtools.fakehost import FakeHost
from fleetd.registry.client import EtcdClient
from fleetd.registry.keys import Keys
from tests.agent.helpers import MACHINE, schedule, states
from tests.engine.cluster import wait_until

READY_WITHIN = 15.0


async def test_runs_what_is_scheduled_and_leaving_takes_its_record_and_states(
    etcd: EtcdClient, key_prefix: str, tmp_path: Path
) -> None:
    keys = Keys(key_prefix)
    host = FakeHost(
        etcd, keys, MACHINE, tmp_path / "units", metadata={"role": "web"}, ip="10.0.0.9"
    )
    try:
        async with asyncio.timeout(READY_WITHIN):
            await host.ready()
        record = await etcd.get(keys.machine(MACHINE))
        assert record is not None
        assert b'"primaryIP":"10.0.0.9"' in record.value
        assert b'"role":"web"' in record.value

        await schedule(etcd, keys, "web.service")

        async def running() -> bool:
            return await states(etcd, keys) == {"web.service": ("active", "running")}

        await wait_until(running, "web.service published running")
        assert (tmp_path / "units" / "web.service").is_file()
        assert host.manager.systemd.starts == {"web.service": 1}
    finally:
        await host.leave()
    assert host.task is None
    assert await etcd.get(keys.machine(MACHINE)) is None
    assert await states(etcd, keys) == {}


async def test_a_stopped_host_stays_registered_until_its_lease_runs_out(
    etcd: EtcdClient, key_prefix: str, tmp_path: Path
) -> None:
    keys = Keys(key_prefix)
    host = FakeHost(etcd, keys, MACHINE, tmp_path / "units", ttl=2)
    async with asyncio.timeout(READY_WITHIN):
        await host.ready()
    await host.stop()
    assert host.task is None
    assert await etcd.get(keys.machine(MACHINE)) is not None

    async def gone() -> bool:
        return await etcd.get(keys.machine(MACHINE)) is None

    await wait_until(gone, "the machine record gone with its lease")
