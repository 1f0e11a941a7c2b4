"""Storing and removing units: `units/<name>`, written only after `check_unit` passed.

These are the writes the API makes for `fleetctl submit/load/start/destroy`. One put per
submission (desired state included), one delete per destroy; nothing is written for a unit that
fails its checks.

`put_unit`/`delete_unit` write unconditionally. The API uses the guarded forms instead:
`read_unit` returns the record with its `mod_revision`, `store_unit` writes only if the key is
still at that revision (0: still absent), and both `store_unit` and `remove_unit` return the
write's revision, so the caller can wait until its view has seen it. A guarded write that lost a
race writes nothing and returns None.
"""

from __future__ import annotations

from dataclasses import dataclass

from fleetd.core.states import JobState
from fleetd.core.submission import check_unit
from fleetd.core.unitfile import UnitFile
from fleetd.registry.client import Compare, Delete, EtcdClient, Put
from fleetd.registry.codec import UnitRecord, decode_unit, encode_unit
from fleetd.registry.keys import Keys


@dataclass(frozen=True, slots=True)
class StoredUnit:
    """A unit as read from etcd, with the revision of its last write."""

    record: UnitRecord
    mod_revision: int


async def put_unit(
    client: EtcdClient, keys: Keys, name: str, unit: UnitFile, desired: JobState
) -> UnitRecord:
    """Check the unit, then store it; raises `InvalidUnit` (nothing written) when it is bad."""
    check_unit(name, unit, desired)
    record = UnitRecord(name, unit.options, unit.hash, desired)
    await client.put(keys.unit(name), encode_unit(record))
    return record


async def get_unit(client: EtcdClient, keys: Keys, name: str) -> UnitRecord | None:
    stored = await read_unit(client, keys, name)
    return None if stored is None else stored.record


async def delete_unit(client: EtcdClient, keys: Keys, name: str) -> bool:
    """Destroy a unit; the engine then removes its placements. True if it existed."""
    return await client.delete(keys.unit(name)) > 0


async def read_unit(client: EtcdClient, keys: Keys, name: str) -> StoredUnit | None:
    """The stored unit and its mod revision; None when there is none. Raises `CodecError`."""
    kv = await client.get(keys.unit(name))
    return None if kv is None else StoredUnit(decode_unit(kv.key, kv.value), kv.mod_revision)


async def store_unit(
    client: EtcdClient, keys: Keys, record: UnitRecord, *, expected_revision: int
) -> int | None:
    """Check, then store `record` if `units/<name>` is still at `expected_revision` (0: absent).

    Returns the write's revision, or None when the key has moved on (nothing written). Raises
    `InvalidUnit` (nothing written) when the unit is bad, or ValueError when `record.hash` is not
    the hash of its options.
    """
    unit = record.unit_file
    check_unit(record.name, unit, record.desired)
    if unit.hash != record.hash:
        raise ValueError(f"unit {record.name}: hash {record.hash} is not its options' hash")
    key = keys.unit(record.name)
    result = await client.txn(
        [Compare.mod_revision(key, "==", expected_revision)], [Put(key, encode_unit(record))]
    )
    return result.revision if result.succeeded else None


async def remove_unit(client: EtcdClient, keys: Keys, name: str) -> int | None:
    """Destroy a unit; the delete's revision, or None when there was no such unit."""
    key = keys.unit(name)
    result = await client.txn([Compare.version(key, ">", 0)], [Delete(key)])
    return result.revision if result.succeeded else None
