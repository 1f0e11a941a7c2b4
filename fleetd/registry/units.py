"""Storing and removing units: `units/<name>`, written only after `check_unit` passed.

These are the writes the API makes for `fleetctl submit/load/start/destroy`. One put per
submission (desired state included), one delete per destroy; nothing is written for a unit that
fails its checks.
"""

from __future__ import annotations

from fleetd.core.states import JobState
from fleetd.core.submission import check_unit
from fleetd.core.unitfile import UnitFile
from fleetd.registry.client import EtcdClient
from fleetd.registry.codec import UnitRecord, decode_unit, encode_unit
from fleetd.registry.keys import Keys


async def put_unit(
    client: EtcdClient, keys: Keys, name: str, unit: UnitFile, desired: JobState
) -> UnitRecord:
    """Check the unit, then store it; raises `InvalidUnit` (nothing written) when it is bad."""
    check_unit(name, unit, desired)
    record = UnitRecord(name, unit.options, unit.hash, desired)
    await client.put(keys.unit(name), encode_unit(record))
    return record


async def get_unit(client: EtcdClient, keys: Keys, name: str) -> UnitRecord | None:
    kv = await client.get(keys.unit(name))
    return None if kv is None else decode_unit(kv.key, kv.value)


async def delete_unit(client: EtcdClient, keys: Keys, name: str) -> bool:
    """Destroy a unit; the engine then removes its placements. True if it existed."""
    return await client.delete(keys.unit(name)) > 0
