"""What the benchmarks call "running": a unit whose state an agent published as `active`/`running`.

`RunningWatch` follows `states/` (and `machines/`) in etcd with one `PrefixWatcher` each, as any
client of the cluster could, and keeps:

* `first_running`: unit -> when (`time.monotonic()`, the same clock in every process on the host)
  it was first seen running anywhere;
* `running`: unit -> machine -> when it last started running there (a unit stopped, unloaded or
  gone with its machine's lease leaves the map);
* `machines`: the machines registered now.

`wait_for(condition)` returns once `condition()` holds, checked after every batch of events.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from fleetd.registry.client import EtcdClient, KeyValue
from fleetd.registry.codec import CodecError, decode_state
from fleetd.registry.keys import Keys
from fleetd.registry.watch import Changes, PrefixWatcher, Snapshot


class RunningWatch:
    """Which units run where, from the states agents publish; see the module docstring."""

    def __init__(self, client: EtcdClient, keys: Keys) -> None:
        self._client = client
        self._keys = keys
        self.first_running: dict[str, float] = {}
        self.running: dict[str, dict[str, float]] = {}
        self.machines: set[str] = set()
        self.machine_gone: dict[str, float] = {}  # machine -> when its record went
        self._changed = asyncio.Condition()

    async def run(self) -> None:
        """Follow both prefixes until cancelled."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._follow(self._keys.states, self._state, self.running.clear))
            group.create_task(self._follow(self._keys.machines, self._machine, self.machines.clear))

    async def wait_for(self, condition: Callable[[], bool]) -> None:
        """Return once `condition()` holds; the caller bounds the wait."""
        async with self._changed:
            await self._changed.wait_for(condition)

    def running_units(self) -> int:
        return len(self.running)

    async def _follow(
        self, prefix: str, apply: Callable[[KeyValue, bool, float], None], reset: Callable[[], None]
    ) -> None:
        async for batch in PrefixWatcher(self._client, prefix):
            now = time.monotonic()
            match batch:
                case Snapshot(_, kvs):
                    reset()  # a (re)read: what is not in it is gone
                    for kv in kvs:
                        apply(kv, False, now)
                case Changes(_, events):
                    if not events:
                        continue
                    for event in events:
                        apply(event.kv, event.kind != "put", now)
            async with self._changed:
                self._changed.notify_all()

    def _state(self, kv: KeyValue, deleted: bool, now: float) -> None:
        machine, unit = self._keys.split_pair(self._keys.states, kv.key)
        running = False
        if not deleted:
            try:
                record = decode_state(kv.key, kv.value)
            except CodecError:
                record = None
            running = record is not None and (record.active_state, record.sub_state) == (
                "active",
                "running",
            )
        where = self.running.get(unit)
        if running:
            if where is None:
                where = self.running[unit] = {}
            where.setdefault(machine, now)
            self.first_running.setdefault(unit, now)
        elif where is not None:
            where.pop(machine, None)
            if not where:
                del self.running[unit]

    def _machine(self, kv: KeyValue, deleted: bool, now: float) -> None:
        machine = self._keys.name_under(self._keys.machines, kv.key)
        if deleted:
            self.machines.discard(machine)
            self.machine_gone[machine] = now
        else:
            self.machines.add(machine)
