"""A stand-in for the per-host agent, until the real one (on systemd) arrives.

`SimulatedAgent` does the agent's etcd side exactly as the key layout says: it registers
`machines/<id>` on its own kept-alive lease, watches only `schedule/<id>/`, and for every
placement publishes `states/<id>/<unit>` on the same lease (`active/running` for a launched unit,
`loaded/inactive/dead` for a loaded one) and removes it when the unit is unscheduled. It starts
nothing: there is no systemd behind it. The demo, the bench and the end-to-end tests use it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

from fleetd.core.model import Machine
from fleetd.core.states import JobState
from fleetd.registry.client import EtcdClient, KeyValue
from fleetd.registry.codec import (
    UnitStateRecord,
    decode_placement,
    encode_machine,
    encode_state,
)
from fleetd.registry.keys import Keys
from fleetd.registry.lease import Lease
from fleetd.registry.watch import Changes, PrefixWatcher, Snapshot


class SimulatedAgent:
    """One simulated machine: presence on a lease, its own schedule, published states."""

    def __init__(
        self,
        client: EtcdClient,
        keys: Keys,
        machine_id: str,
        metadata: Mapping[str, str] | None = None,
        *,
        ip: str = "127.0.0.1",
        ttl: int = 10,
        lease: Lease | None = None,
        on_published: Callable[[str, str], None] = lambda unit, machine: None,
    ) -> None:
        self.client, self.keys, self.machine_id = client, keys, machine_id
        self.machine = Machine(machine_id, dict(metadata or {}), ip)
        self.ttl = ttl
        self.on_published = on_published
        self.lease = lease  # given: the machine is registered already, on this lease
        self.published = 0
        self.watching = asyncio.Event()  # set once the first snapshot of the schedule is applied

    async def register(self) -> None:
        """Grant the lease, keep it alive, and write the machine record on it."""
        self.lease = await Lease.grant(self.client, self.ttl)
        self.lease.start()
        record = encode_machine(self.machine, "simulated")
        await self.client.put(self.keys.machine(self.machine_id), record, lease=self.lease.id)

    async def run(self) -> None:
        """Register (if not yet) and publish states for this machine's schedule until cancelled."""
        if self.lease is None:
            await self.register()
        prefix = self.keys.schedule_of(self.machine_id)
        async for batch in PrefixWatcher(self.client, prefix):
            match batch:
                case Snapshot(_, kvs):
                    await self._resync(kvs)
                    self.watching.set()
                case Changes(_, events):
                    for event in events:
                        if event.kind == "put":
                            await self._publish(event.kv.key, event.kv.value)
                        else:
                            unit = self.keys.name_under(prefix, event.kv.key)
                            await self.client.delete(self.keys.state(self.machine_id, unit))

    async def stop(self) -> None:
        """Leave: the lease goes, and with it the machine record and every state."""
        if self.lease is not None:
            await self.lease.revoke()

    async def _resync(self, kvs: list[KeyValue]) -> None:
        """After a (re)snapshot: drop states of units no longer placed here, publish the rest."""
        prefix = self.keys.schedule_of(self.machine_id)
        placed = {self.keys.name_under(prefix, kv.key) for kv in kvs}
        mine = f"{self.keys.states}{self.machine_id}/"
        published, _ = await self.client.get_prefix(mine)
        for kv in published:
            if self.keys.name_under(mine, kv.key) not in placed:
                await self.client.delete(kv.key)
        for kv in kvs:
            await self._publish(kv.key, kv.value)

    async def _publish(self, key: str, value: bytes) -> None:
        assert self.lease is not None
        unit = self.keys.name_under(self.keys.schedule_of(self.machine_id), key)
        placement = decode_placement(key, value, self.machine_id, unit)
        running = placement.desired is JobState.LAUNCHED
        state = UnitStateRecord(
            "loaded",
            "active" if running else "inactive",
            "running" if running else "dead",
            placement.hash,
            time.time(),
        )
        await self.client.put(
            self.keys.state(self.machine_id, unit), encode_state(state), lease=self.lease.id
        )
        self.published += 1
        self.on_published(unit, self.machine_id)
