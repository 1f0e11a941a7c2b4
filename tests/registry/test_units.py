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
    UnitAt,
    checked_unit_record,
    confirm_unit_write,
    delete_unit,
    get_unit,
    put_unit,
    read_unit_at,
    remove_unit_write,
    store_unit_write,
)
from fleetd.registry.writes import Applied, GuardedWrite, Moved, apply_guarded, deadline_in

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

    async def apply(write: GuardedWrite) -> Applied | Moved:
        return await apply_guarded(etcd, write, deadline=deadline_in(5), resolve_for=5)

    absent = await read_unit_at(etcd, keys, "hello.service", deadline=deadline_in(5))
    assert (absent.record, absent.mod_revision) == (None, 0)
    created = await apply(store_unit_write(keys, record, absent))
    assert isinstance(created, Applied)
    stored = await read_unit_at(etcd, keys, "hello.service", deadline=deadline_in(5))
    assert (stored.record, stored.mod_revision) == (record, created.revision)
    assert stored.observed_at >= created.revision
    # a writer that decided from "absent", or from an older revision, loses and writes nothing
    launched = replace(record, desired=JobState.LAUNCHED)
    assert await apply(store_unit_write(keys, launched, absent)) == Moved()
    older = UnitAt(record, created.revision - 1, created.revision - 1)
    assert await apply(store_unit_write(keys, launched, older)) == Moved()
    assert await apply(remove_unit_write(keys, "hello.service", older)) == Moved()
    assert await apply(confirm_unit_write(keys, "hello.service", absent)) == Moved()
    assert isinstance(await apply(confirm_unit_write(keys, "hello.service", stored)), Applied)
    assert await get_unit(etcd, keys, "hello.service") == record
    updated = await apply(store_unit_write(keys, launched, stored))
    assert isinstance(updated, Applied)
    assert updated.revision > created.revision
    current = await read_unit_at(etcd, keys, "hello.service", deadline=deadline_in(5))
    removed = await apply(remove_unit_write(keys, "hello.service", current))
    assert isinstance(removed, Applied)
    assert await get_unit(etcd, keys, "hello.service") is None
    with pytest.raises(ValueError, match="nothing to remove"):
        remove_unit_write(keys, "hello.service", absent)


def test_a_record_to_store_is_checked_and_carries_its_options_hash() -> None:
    unit = parse_unit(GOOD)
    with pytest.raises(InvalidUnit, match=r'cannot activate template "t@\.service"'):
        checked_unit_record("t@.service", unit, JobState.LAUNCHED)
    record = checked_unit_record("a.service", unit, JobState.LOADED)
    assert record == UnitRecord("a.service", unit.options, unit.hash, JobState.LOADED)
