"""Storing units in etcd: good units are written once, bad ones leave nothing behind."""

from __future__ import annotations

import pytest

from fleetd.core.states import JobState
from fleetd.core.submission import InvalidUnit
from fleetd.core.unitfile import parse_unit
from fleetd.registry.client import EtcdClient
from fleetd.registry.keys import Keys
from fleetd.registry.units import delete_unit, get_unit, put_unit

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
