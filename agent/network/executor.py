"""Applies the route planner's tasks (`agent.network.plan`) to a kernel, one at a time.

`NetworkKernel` is the narrow port: read what the kernel holds for the cluster network
(`observe`) and perform one task (`apply`). The real adapter is `agent.network.netlink`
(pyroute2, netlink); `FakeKernel` keeps the same state in memory for unit tests.

`apply_network_tasks` logs each task with what it does, stops at the first failure (raising
`NetworkTaskFailed`, which names the task), and leaves the next pass to plan again from what the
kernel then holds: every task is idempotent (adding what is there or deleting what is gone is
not an error), so a pass interrupted half-way is finished by the next one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Network
from typing import Protocol

import structlog

from agent.network.plan import (
    AddFdb,
    AddNeighbour,
    AddRoute,
    DeleteFdb,
    DeleteLink,
    DeleteNeighbour,
    DeleteRoute,
    EnsureVxlan,
    FdbEntry,
    Neighbour,
    Observed,
    Route,
    Task,
    VxlanDevice,
)

log = structlog.get_logger(__name__)


class NetworkTaskFailed(RuntimeError):
    """A task the kernel refused; the message names the task and the kernel's reason."""


class NetworkKernel(Protocol):
    """What the cluster network needs from the kernel."""

    def observe(self, network: IPv4Network, vxlan_name: str | None) -> Observed:
        """The routes this machine added towards subnets of `network`, and the VXLAN device
        `vxlan_name` (when it exists) with its neighbour and forwarding entries."""
        ...

    def apply(self, task: Task) -> None:
        """Perform one task; idempotent."""
        ...

    def masquerade(self, network: IPv4Network) -> None:
        """Masquerade pods' traffic from `network` to anywhere outside it (only that)."""
        ...


def describe(task: Task) -> str:
    """One line saying what `task` does, for the log."""
    match task:
        case EnsureVxlan(device):
            return (
                f"create VXLAN device {device.name} (VNI {device.vni}, port {device.port}, "
                f"local {device.local}, {device.address}, MTU {device.mtu})"
            )
        case DeleteLink(name):
            return f"delete link {name}"
        case AddRoute(route):
            return f"route {route.dst} via {route.gateway}" + (
                f" dev {route.device}" if route.device else ""
            )
        case DeleteRoute(route):
            return f"remove route {route.dst} via {route.gateway}"
        case AddNeighbour(n):
            return f"neighbour {n.address} is {n.mac} on {n.device}"
        case DeleteNeighbour(n):
            return f"forget neighbour {n.address} on {n.device}"
        case AddFdb(entry):
            return f"forward {entry.mac} to {entry.dst} on {entry.device}"
        case DeleteFdb(entry):
            return f"stop forwarding {entry.mac} to {entry.dst} on {entry.device}"


def apply_network_tasks(kernel: NetworkKernel, tasks: Sequence[Task]) -> None:
    """Perform `tasks` in order; stop at the first failure (see the module docstring)."""
    for task in tasks:
        what = describe(task)
        try:
            kernel.apply(task)
        except OSError as exc:
            log.error("network task failed", task=what, error=str(exc))
            raise NetworkTaskFailed(f"{what}: {exc}") from exc
        log.info("network task done", task=what)


@dataclass
class FakeKernel:
    """The kernel's cluster-network state in memory, with the adapter's behaviour: routes via
    a VXLAN device need the device, a device of the same name is replaced."""

    vxlan: VxlanDevice | None = None
    routes: set[Route] = field(default_factory=set)
    neighbours: set[Neighbour] = field(default_factory=set)
    fdb: set[FdbEntry] = field(default_factory=set)
    applied: list[Task] = field(default_factory=list)
    fail_on: type | None = None  # a task type whose next application fails
    masqueraded: IPv4Network | None = None

    def masquerade(self, network: IPv4Network) -> None:
        self.masqueraded = network

    def observe(self, network: IPv4Network, vxlan_name: str | None) -> Observed:
        vxlan = self.vxlan if self.vxlan is not None and self.vxlan.name == vxlan_name else None
        return Observed(
            vxlan,
            frozenset(r for r in self.routes if r.dst.subnet_of(network)),
            frozenset(self.neighbours) if vxlan else frozenset(),
            frozenset(self.fdb) if vxlan else frozenset(),
        )

    def _device(self, name: str | None) -> None:
        if name is not None and (self.vxlan is None or self.vxlan.name != name):
            raise OSError(19, f"no device {name}")

    def apply(self, task: Task) -> None:
        if self.fail_on is not None and isinstance(task, self.fail_on):
            self.fail_on = None
            raise OSError(1, "operation not permitted")
        self.applied.append(task)
        match task:
            case EnsureVxlan(device):
                self.vxlan = replace(device)
                self.routes = {r for r in self.routes if r.device != device.name}
                self.neighbours.clear()
                self.fdb.clear()
            case DeleteLink(name):
                if self.vxlan is not None and self.vxlan.name == name:
                    self.vxlan = None
                    self.routes = {r for r in self.routes if r.device != name}
                    self.neighbours.clear()
                    self.fdb.clear()
            case AddRoute(route):
                self._device(route.device)
                self.routes = {r for r in self.routes if r.dst != route.dst} | {route}
            case DeleteRoute(route):
                self.routes.discard(route)
            case AddNeighbour(n):
                self._device(n.device)
                self.neighbours = {x for x in self.neighbours if x.address != n.address} | {n}
            case DeleteNeighbour(n):
                self.neighbours.discard(n)
            case AddFdb(entry):
                self._device(entry.device)
                self.fdb.add(entry)
            case DeleteFdb(entry):
                self.fdb.discard(entry)
