"""Machines as every view sees them: a live record's metadata under the values set through the API.

`MachineDirectory` adds two sections to a `Mirror` and keeps one live map, `merged`
(machine id -> `Machine`), from them:

* `machines/<id>`: the records the agents keep on their leases;
* `metadata/<id>/<key>`: values set with `PATCH /fleet/v1/machines`. They outlive the machine's
  lease, override the record's own value, and "" removes the key, the record's value included.

Invariants: only machines with a live record are in `merged`; overrides of an absent machine wait
for it to (re)join. `merged` is updated in place (never rebound), so a view may hand it out as
its own attribute. A record whose `id` differs from its key is refused (the Mirror skips it).

Setting metadata (the API's PATCH) is a `GuardedWrite` from `metadata_write`: each key is written
only if it is still at the mod revision the directory (`metadata_at`) or a read
(`read_metadata_at`) saw, which makes a write whose answer was lost safe to resolve and resend.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from fleetd.core.model import Machine, merge_metadata
from fleetd.registry.client import EtcdClient, KeyValue
from fleetd.registry.codec import (
    CodecError,
    decode_machine,
    decode_metadata_value,
    encode_metadata_value,
)
from fleetd.registry.keys import Keys
from fleetd.registry.mirror import Mirror
from fleetd.registry.writes import GuardedWrite, read_keys


@dataclass(frozen=True, slots=True)
class MetadataAt:
    """Metadata keys' mod revisions (0: absent), as seen at etcd revision `observed_at`."""

    revisions: Mapping[str, int]
    observed_at: int


def metadata_write(values: Mapping[str, str], known: MetadataAt) -> GuardedWrite:
    """Set each metadata key to its value ("" hides the record's own) if still as `known` saw it."""
    changes: dict[str, bytes | None] = {
        key: encode_metadata_value(value) for key, value in values.items()
    }
    return GuardedWrite(
        {key: known.revisions.get(key, 0) for key in values}, changes, known.observed_at
    )


async def read_metadata_at(
    client: EtcdClient, metadata_keys: Sequence[str], *, deadline: float
) -> MetadataAt:
    """The keys' mod revisions as etcd holds them now, read in one snapshot."""
    found, revision = await read_keys(client, metadata_keys, deadline=deadline)
    return MetadataAt({key: kv.mod_revision for key, kv in found.items()}, revision)


class MachineDirectory:
    """The live machines of one mirror, metadata merged; see the module docstring."""

    def __init__(
        self, mirror: Mirror, keys: Keys, on_change: Callable[[str | None], None] = lambda _: None
    ) -> None:
        self._keys = keys
        self._on_change = on_change  # a machine id, or None when every machine may have changed
        self._mirror = mirror
        self.merged: dict[str, Machine] = {}
        self._records: dict[str, Machine] = {}
        self._overrides: dict[str, dict[str, str]] = {}
        self._override_revisions: dict[str, int] = {}  # metadata key -> its mod revision
        mirror.add_section(
            keys.machines, self._put_record, self._delete_record, self._clear_records
        )
        mirror.add_section(
            keys.metadata, self._put_override, self._delete_override, self._clear_overrides
        )

    def metadata_at(self, metadata_keys: Sequence[str]) -> MetadataAt:
        """The keys' mod revisions as this directory has them, and the revision it has read to."""
        revisions = {key: self._override_revisions.get(key, 0) for key in metadata_keys}
        return MetadataAt(revisions, self._mirror.revision(self._keys.metadata))

    def _put_record(self, kv: KeyValue) -> None:
        machine_id = self._keys.name_under(self._keys.machines, kv.key)
        machine = decode_machine(kv.key, kv.value)
        if machine.id != machine_id:
            raise CodecError(f"{kv.key}: record names machine {machine.id!r}")
        self._records[machine_id] = machine
        self._merge(machine_id)

    def _delete_record(self, key: str) -> None:
        machine_id = self._keys.name_under(self._keys.machines, key)
        self._records.pop(machine_id, None)
        self._merge(machine_id)

    def _clear_records(self) -> None:
        self._records.clear()
        self.merged.clear()
        self._on_change(None)

    def _put_override(self, kv: KeyValue) -> None:
        machine_id, name = self._keys.split_pair(self._keys.metadata, kv.key)
        self._overrides.setdefault(machine_id, {})[name] = decode_metadata_value(kv.key, kv.value)
        self._override_revisions[kv.key] = kv.mod_revision
        self._merge(machine_id)

    def _delete_override(self, key: str) -> None:
        machine_id, name = self._keys.split_pair(self._keys.metadata, key)
        self._override_revisions.pop(key, None)
        overrides = self._overrides.get(machine_id)
        if overrides is not None:
            overrides.pop(name, None)
            if not overrides:
                del self._overrides[machine_id]
        self._merge(machine_id)

    def _clear_overrides(self) -> None:
        self._overrides.clear()
        self._override_revisions.clear()
        for machine_id in list(self._records):
            self._merge(machine_id)
        self._on_change(None)

    def _merge(self, machine_id: str) -> None:
        self._on_change(machine_id)
        record = self._records.get(machine_id)
        if record is None:
            self.merged.pop(machine_id, None)
            return
        overrides = self._overrides.get(machine_id)
        self.merged[machine_id] = (
            replace(record, metadata=merge_metadata(record.metadata, overrides))
            if overrides
            else record
        )
