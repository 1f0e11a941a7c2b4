"""A machine without systemd: the real agent on the fake systemd.

`FakeHost` is one machine for the demo, the benchmarks and the integration tests. It holds a
`FakeUnitManager` (an in-memory systemd over a real units directory of its own) and the real
`agent.agent.Agent` on it, so everything the agent does in etcd is the agent's own code: presence
on the heart's lease, the watch of its own schedule, reconcile passes, state publishing. Only
systemd is in memory; a started service is `active`/`running` at once.

Life of a host:
* `start()` runs the agent on a task; `ready()` returns once the machine is registered and the
  agent has read its schedule once.
* `stop()` stops the agent as a stopped fleetd would: its lease is left to run out, so the
  machine and its states stay for up to the TTL (the units keep running in the fake systemd).
* `leave()` also revokes the lease: the machine record and its states go at once.
A failure of the agent itself is raised by `stop()`/`leave()`, never swallowed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

from agent.agent import RECONCILE_INTERVAL, Agent
from agent.systemd.fake import FakeUnitManager
from fleetd.core.model import AGENT_LEASE_TTL, Machine
from fleetd.registry.client import EtcdClient
from fleetd.registry.keys import Keys
from fleetd.runtime.metrics import Metrics

READY_POLL = 0.01  # how often `ready()` looks whether the first schedule has been read


class FakeHost:
    """One machine: the real `Agent` on a `FakeUnitManager`; see the module docstring."""

    def __init__(
        self,
        client: EtcdClient,
        keys: Keys,
        machine_id: str,
        units_directory: Path,
        *,
        metadata: Mapping[str, str] | None = None,
        ip: str = "127.0.0.1",
        ttl: int = AGENT_LEASE_TTL,
        reconcile_interval: float = RECONCILE_INTERVAL,
        metrics: Metrics | None = None,
        peer_address: str = "",
        pod_addresses: Path | None = None,
    ) -> None:
        """`pod_addresses`: the directory its agent reads pod addresses from (None: no pods)."""
        self.manager = FakeUnitManager(units_directory)
        self.agent = Agent(
            client,
            keys,
            self.manager,
            Machine(machine_id, dict(metadata or {}), ip, peer_address),
            ttl=ttl,
            reconcile_interval=reconcile_interval,
            metrics=metrics,
            pod_addresses=pod_addresses,
        )
        self.task: asyncio.Task[None] | None = None

    @property
    def machine_id(self) -> str:
        return self.agent.machine.id

    def start(self) -> asyncio.Task[None]:
        """Run the agent on a task (once); returns the task."""
        if self.task is None:
            self.task = asyncio.create_task(self.agent.run(), name=f"agent-{self.machine_id}")
        return self.task

    async def ready(self) -> None:
        """Return once the machine is registered and its schedule has been read once.

        Waits without a deadline: the caller bounds it (`asyncio.timeout`). Raises what the
        agent failed with, if it stopped meanwhile.
        """
        task = self.start()
        await self.agent.heart.wait_lease()
        while self.agent.schedule is None:
            if task.done():
                task.result()
                raise RuntimeError(f"the agent of {self.machine_id} stopped before it was ready")
            await asyncio.sleep(READY_POLL)

    async def stop(self) -> None:
        """Stop the agent; its lease is left to run out (the machine stays for up to the TTL)."""
        task, self.task = self.task, None
        if task is None:
            return
        task.cancel()
        (outcome,) = await asyncio.gather(task, return_exceptions=True)
        if isinstance(outcome, BaseException) and not isinstance(outcome, asyncio.CancelledError):
            raise outcome

    async def leave(self) -> None:
        """The machine goes at once: stop the agent, then revoke its lease, which deletes its
        record and every state it published."""
        lease = self.agent.heart.lease
        try:
            await self.stop()
        finally:
            if lease is not None:
                await lease.revoke()
