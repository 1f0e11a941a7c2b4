"""MachineDirectory against a real etcd: records merged with the metadata set through the API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import structlog

from fleetd.core.model import Machine
from fleetd.registry.client import Delete, EtcdClient, Put
from fleetd.registry.codec import encode_machine, encode_metadata_value
from fleetd.registry.keys import Keys
from fleetd.registry.machines import (
    MachineDirectory,
    MetadataAt,
    metadata_write,
    read_metadata_at,
)
from fleetd.registry.mirror import Mirror
from fleetd.registry.writes import Applied, Moved, apply_guarded, deadline_in

M1, M2 = "1" * 32, "2" * 32


class Mirrored:
    """A bare Mirror holding only a MachineDirectory, and a way to write and wait."""

    def __init__(self, etcd: EtcdClient, keys: Keys) -> None:
        self.etcd = etcd
        self.keys = keys
        self.mirror = Mirror(etcd)
        self.directory = MachineDirectory(self.mirror, keys)

    async def apply(self, prefix: str, op: Put | Delete) -> None:
        result = await self.etcd.txn([], [op])
        await asyncio.wait_for(self.mirror.wait_for({prefix: result.revision}), 10)

    async def machine(self, machine: Machine) -> None:
        record = encode_machine(machine, "test")
        await self.apply(self.keys.machines, Put(self.keys.machine(machine.id), record))

    async def metadata(self, machine_id: str, key: str, value: str) -> None:
        put = Put(self.keys.metadata_key(machine_id, key), encode_metadata_value(value))
        await self.apply(self.keys.metadata, put)


@pytest.fixture
async def mirrored(etcd: EtcdClient, key_prefix: str) -> AsyncIterator[Mirrored]:
    state = Mirrored(etcd, Keys(key_prefix))
    task = asyncio.create_task(state.mirror.run())
    try:
        await asyncio.wait_for(state.mirror.wait_ready(), 10)
        yield state
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_records_are_merged_with_overrides(mirrored: Mirrored) -> None:
    merged = mirrored.directory.merged
    await mirrored.machine(Machine(M1, {"az": "a", "role": "db"}, "10.0.0.1"))
    assert merged == {M1: Machine(M1, {"az": "a", "role": "db"}, "10.0.0.1")}
    await mirrored.metadata(M1, "role", "web")
    await mirrored.metadata(M1, "az", "")  # a tombstone hides the record's own value
    await mirrored.metadata(M1, "disk", "ssd")
    assert merged[M1] == Machine(M1, {"role": "web", "disk": "ssd"}, "10.0.0.1")
    await mirrored.apply(mirrored.keys.metadata, Delete(mirrored.keys.metadata_key(M1, "az")))
    assert merged[M1].metadata == {"az": "a", "role": "web", "disk": "ssd"}


async def test_overrides_outlive_the_machine(mirrored: Mirrored) -> None:
    merged = mirrored.directory.merged
    await mirrored.metadata(M2, "role", "web")
    assert merged == {}  # no record, no machine
    await mirrored.machine(Machine(M2))
    assert merged[M2].metadata == {"role": "web"}
    await mirrored.apply(mirrored.keys.machines, Delete(mirrored.keys.machine(M2)))
    assert merged == {}
    await mirrored.machine(Machine(M2, {"role": "db"}))
    assert merged[M2].metadata == {"role": "web"}


async def test_a_record_for_another_id_is_skipped(mirrored: Mirrored) -> None:
    record = encode_machine(Machine(M1), "test")
    with structlog.testing.capture_logs() as logs:
        await mirrored.apply(mirrored.keys.machines, Put(mirrored.keys.machine(M2), record))
    assert mirrored.directory.merged == {}
    assert any(e["event"] == "skipping unreadable record" for e in logs)


async def test_a_late_directory_reads_both_prefixes(mirrored: Mirrored) -> None:
    await mirrored.machine(Machine(M1, {"az": "a"}))
    await mirrored.metadata(M1, "az", "b")
    late = Mirrored(mirrored.etcd, mirrored.keys)
    task = asyncio.create_task(late.mirror.run())
    try:
        await asyncio.wait_for(late.mirror.wait_ready(), 10)
        assert late.directory.merged == {M1: Machine(M1, {"az": "b"})}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_metadata_writes_are_guarded_by_the_revisions_seen(mirrored: Mirrored) -> None:
    keys, etcd = mirrored.keys, mirrored.etcd
    role, az = keys.metadata_key(M1, "role"), keys.metadata_key(M2, "az")
    await mirrored.metadata(M1, "role", "db")
    seen = mirrored.directory.metadata_at([role, az])
    role_kv = await etcd.get(role)
    assert role_kv is not None
    assert seen.revisions == {role: role_kv.mod_revision, az: 0}
    assert seen.observed_at == mirrored.mirror.revision(keys.metadata)
    assert await read_metadata_at(etcd, [role, az], deadline=deadline_in(5)) == MetadataAt(
        {role: role_kv.mod_revision}, (await etcd.get_prefix(keys.prefix))[1]
    )
    write = metadata_write({role: "web", az: ""}, seen)
    assert write.changes == {role: encode_metadata_value("web"), az: encode_metadata_value("")}
    applied = await apply_guarded(etcd, write, deadline=deadline_in(5), resolve_for=5)
    assert isinstance(applied, Applied)
    await asyncio.wait_for(mirrored.mirror.wait_for({keys.metadata: applied.revision}), 10)
    assert mirrored.directory.metadata_at([role, az]).revisions == {
        role: applied.revision,
        az: applied.revision,
    }
    # decided from what was seen before: a guard fails and nothing is written
    stale = await apply_guarded(
        etcd, metadata_write({role: "x"}, seen), deadline=deadline_in(5), resolve_for=5
    )
    assert stale == Moved()
    assert mirrored.directory.merged == {}  # no machine record: the values wait for it
    value = await etcd.get(role)
    assert value is not None
    assert (value.value, value.mod_revision) == (encode_metadata_value("web"), applied.revision)
    await mirrored.apply(keys.metadata, Delete(role))
    assert mirrored.directory.metadata_at([role]).revisions == {role: 0}
