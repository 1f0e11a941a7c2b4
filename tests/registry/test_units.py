"""Storing units in etcd: good units are written once, bad ones leave nothing behind."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fleetd.core.states import JobState
from fleetd.core.submission import InvalidUnit
from fleetd.core.unitfile import parse_unit
from fleetd.registry.client import EtcdClient
from fleetd.registry.codec import UnitRecord
from fleetd.registry.keys import Keys
from fleetd.registry.units import (
    StoredUnit,
    delete_unit,
    get_unit,
    put_unit,
    read_unit,
    remove_unit,
    store_unit,
)

GOOD = "[Unit]\nDescription=Hello World\n\n[Service]\nExecStart=/bin/sleep 1\n"


async def test_put_get_delete(etcd: EtcdClient, key_prefix: str) -> None:
    keys = Keys(key_prefix)
    unit = parse_unit(GOOD)
    stored = await put_unit(etcd, keys, "hello.service", unit, JobState.LAUNCHED)
    assert stored.hash == unit.hash
    again = await get_unit(etcd, keys, "hello.service")
    assert again == stored
    assert again.unit_file.serialize() == unit.serialize()
    assert await delete_unit(etcd, keys, "hello.service") is True
    assert await get_unit(etcd, keys, "hello.service") is None
    assert await delete_unit(etcd, keys, "hello.service") is False


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("hello", GOOD, "invalid unit name"),
        ("hello.service", GOOD + "\n[X-Fleet]\nMachineMetdata=a=b\n", "unrecognized requirement"),
        ("hello.service", GOOD + "\n[X-Fleet]\nGlobal=1\nReplaces=x\n", "Global cannot be used"),
    ],
)
async def test_bad_units_write_nothing(
    etcd: EtcdClient, key_prefix: str, name: str, text: str, message: str
) -> None:
    keys = Keys(key_prefix)
    with pytest.raises(InvalidUnit, match=message):
        await put_unit(etcd, keys, name, parse_unit(text), JobState.LAUNCHED)
    kvs, _ = await etcd.get_prefix(key_prefix)
    assert kvs == []


async def test_guarded_writes(etcd: EtcdClient, key_prefix: str) -> None:
    keys = Keys(key_prefix)
    unit = parse_unit(GOOD)
    record = UnitRecord("hello.service", unit.options, unit.hash, JobState.LOADED)
    assert await read_unit(etcd, keys, "hello.service") is None
    created = await store_unit(etcd, keys, record, expected_revision=0)
    assert created is not None
    stored = await read_unit(etcd, keys, "hello.service")
    assert stored == StoredUnit(record, created)
    # a writer that decided from "absent", or from an older revision, loses and writes nothing
    launched = replace(record, desired=JobState.LAUNCHED)
    assert await store_unit(etcd, keys, launched, expected_revision=0) is None
    assert await store_unit(etcd, keys, launched, expected_revision=created - 1) is None
    assert await get_unit(etcd, keys, "hello.service") == record
    updated = await store_unit(etcd, keys, launched, expected_revision=created)
    assert updated is not None
    assert updated > created
    removed = await remove_unit(etcd, keys, "hello.service")
    assert removed is not None
    assert removed > updated
    assert await remove_unit(etcd, keys, "hello.service") is None


async def test_guarded_writes_check_the_unit(etcd: EtcdClient, key_prefix: str) -> None:
    keys = Keys(key_prefix)
    unit = parse_unit(GOOD)
    template = UnitRecord("t@.service", unit.options, unit.hash, JobState.LAUNCHED)
    with pytest.raises(InvalidUnit, match=r'cannot activate template "t@\.service"'):
        await store_unit(etcd, keys, template, expected_revision=0)
    wrong_hash = UnitRecord("a.service", unit.options, "0" * 40, JobState.LOADED)
    with pytest.raises(ValueError, match="is not its options' hash"):
        await store_unit(etcd, keys, wrong_hash, expected_revision=0)
    kvs, _ = await etcd.get_prefix(key_prefix)
    assert kvs == []
