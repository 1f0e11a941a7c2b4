"""Storing and removing units: `units/<name>`, written only after `check_unit` passed.

These are the writes the API makes for `fleetctl submit/load/start/destroy`. One put per
submission (desired state included), one delete per destroy; nothing is written for a unit that
fails its checks: `checked_unit_record` is the one place a new unit is checked and its record
built, and a record to store comes from it (or is a stored one given a desired state that
`check_unit` allowed).

`put_unit`/`delete_unit` write unconditionally. The API decides from a `UnitAt` (the unit as its
view or a read saw it, with the key's mod revision and the revision it was seen at) and writes
with a `GuardedWrite` (`fleetd.registry.writes`) built here: `store_unit_write` and
`remove_unit_write` change the key only if it is still at that mod revision (0: still absent),
`confirm_unit_write` changes nothing and only checks that the decision's premise still holds.
A write whose guard fails writes nothing; `read_unit_at` then gives a fresh `UnitAt`.
"""

from __future__ import annotations

from dataclasses import dataclass

from fleetd.core.states import JobState
from fleetd.core.submission import check_unit
from fleetd.core.unitfile import UnitFile
from fleetd.registry.client import EtcdClient
from fleetd.registry.codec import UnitRecord, decode_unit, encode_unit
from fleetd.registry.keys import Keys
from fleetd.registry.writes import GuardedWrite, read_keys


@dataclass(frozen=True, slots=True)
class UnitAt:
    """A unit as seen at etcd revision `observed_at`: its record and mod revision (0: absent)."""

    record: UnitRecord | None
    mod_revision: int
    observed_at: int


def checked_unit_record(name: str, unit: UnitFile, desired: JobState) -> UnitRecord:
    """The record that stores `unit` as `name`, once `check_unit` passed; raises `InvalidUnit`."""
    check_unit(name, unit, desired)
    return UnitRecord(name, unit.options, unit.hash, desired)


async def put_unit(
    client: EtcdClient, keys: Keys, name: str, unit: UnitFile, desired: JobState
) -> UnitRecord:
    """Check the unit, then store it; raises `InvalidUnit` (nothing written) when it is bad."""
    record = checked_unit_record(name, unit, desired)
    await client.put(keys.unit(name), encode_unit(record))
    return record


async def get_unit(client: EtcdClient, keys: Keys, name: str) -> UnitRecord | None:
    """The stored unit; None when there is none. Raises `CodecError`."""
    kv = await client.get(keys.unit(name))
    return None if kv is None else decode_unit(kv.key, kv.value)


async def delete_unit(client: EtcdClient, keys: Keys, name: str) -> bool:
    """Destroy a unit; the engine then removes its placements. True if it existed."""
    return await client.delete(keys.unit(name)) > 0


async def read_unit_at(client: EtcdClient, keys: Keys, name: str, *, deadline: float) -> UnitAt:
    """The unit as etcd holds it now (a linearizable read). Raises `CodecError`, `EtcdError`."""
    found, revision = await read_keys(client, [keys.unit(name)], deadline=deadline)
    kv = found.get(keys.unit(name))
    if kv is None:
        return UnitAt(None, 0, revision)
    return UnitAt(decode_unit(kv.key, kv.value), kv.mod_revision, revision)


def store_unit_write(keys: Keys, record: UnitRecord, known: UnitAt) -> GuardedWrite:
    """Store `record` (already checked, see above) if the key is still as `known` saw it."""
    key = keys.unit(record.name)
    return GuardedWrite({key: known.mod_revision}, {key: encode_unit(record)}, known.observed_at)


def remove_unit_write(keys: Keys, name: str, known: UnitAt) -> GuardedWrite:
    """Delete the unit if the key is still as `known` saw it (present)."""
    if known.record is None:
        raise ValueError(f"unit {name}: nothing to remove")
    key = keys.unit(name)
    return GuardedWrite({key: known.mod_revision}, {key: None}, known.observed_at)


def confirm_unit_write(keys: Keys, name: str, known: UnitAt) -> GuardedWrite:
    """Write nothing; succeed only if the key is still as `known` saw it."""
    return GuardedWrite({keys.unit(name): known.mod_revision}, {}, known.observed_at)
