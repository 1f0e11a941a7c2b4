"""The cluster as the engine sees it: units, machines, placements, and one snapshot of them all.

Everything here is immutable. A `ClusterSnapshot` is what the planners read: a watch-fed view
hands one over per pass and never changes it while the planner runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from fleetd.core.requirements import Requirements
from fleetd.core.states import JobState

NO_REQUIREMENTS = Requirements()

# fleet's default `agent_ttl`, seconds: a machine whose agent stops refreshing its presence is
# gone this long afterwards, and its units with it.
AGENT_TTL = 10.0


def lease_seconds(ttl: float) -> int:
    """The etcd lease TTL for `ttl` seconds: whole seconds in etcd, so rounded up, at least 1."""
    return max(1, math.ceil(ttl))


AGENT_LEASE_TTL = lease_seconds(AGENT_TTL)


@dataclass(frozen=True, slots=True)
class Unit:
    """A unit as the engine needs it: identity, content hash, desired state, requirements."""

    name: str
    hash: str
    desired: JobState
    requirements: Requirements = NO_REQUIREMENTS


@dataclass(frozen=True, slots=True)
class Machine:
    """A live machine: its id, address and metadata (`role=web`, ...), and the `host:port` of its
    fleetd's node-to-node endpoint ("" when it serves none)."""

    id: str
    metadata: Mapping[str, str] = field(default_factory=dict, hash=False)
    primary_ip: str = ""
    peer_address: str = ""

    @property
    def short_id(self) -> str:
        """The 8-character form fleet prints and accepts in `MachineID=`."""
        return self.id[:8]


def merge_metadata(own: Mapping[str, str], overrides: Mapping[str, str] | None) -> dict[str, str]:
    """A machine's metadata: its own, under the values set through the API ("" removes a key)."""
    merged = dict(own)
    for key, value in (overrides or {}).items():
        if value:
            merged[key] = value
        else:
            merged.pop(key, None)
    return merged


@dataclass(frozen=True, slots=True)
class Placement:
    """One schedule entry: `unit` should be in state `desired` on `machine`, at content `hash`."""

    unit: str
    machine: str
    hash: str
    desired: JobState


@dataclass(frozen=True, slots=True)
class ClusterSnapshot:
    """Units, live machines, the current schedule and the stored reasons, at one moment.

    `schedule` maps a machine id to the placements on it; it may name machines that are gone.
    `unplaceable` maps a unit to the reasons the engine last stored for not placing it.
    """

    units: Mapping[str, Unit] = field(default_factory=dict)
    machines: Mapping[str, Machine] = field(default_factory=dict)
    schedule: Mapping[str, Mapping[str, Placement]] = field(default_factory=dict)
    unplaceable: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
