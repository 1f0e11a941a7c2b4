"""The etcd key layout: one place that knows where everything lives under the prefix.

    <prefix>units/<unit>                 the unit: options, hash, desired state       (API)
    <prefix>machines/<machine>           a live machine, on its agent's lease          (agent)
    <prefix>schedule/<machine>/<unit>    a placement: hash, desired state          (engine, fenced)
    <prefix>states/<machine>/<unit>      systemd's view of a unit, on the agent's lease (agent)
    <prefix>unplaceable/<unit>           why no machine can run a unit             (engine, fenced)
    <prefix>metadata/<machine>/<key>     metadata set through the API, over the record's (API)
    <prefix>engine/leader                the engine leader, on the leader's lease   (engine)
    <prefix>network/config               the container network, flannel's JSON      (operator)
    <prefix>network/subnets/<a.b.c.d-len> a machine's subnet lease, flannel's JSON   (agent)

The prefix always ends with "/". This layout is a public contract (`docs/architecture.md`).
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "/fleet/"


def as_prefix(prefix: str) -> str:
    """`prefix` ending with "/", as every key under it is built."""
    return prefix if prefix.endswith("/") else prefix + "/"


@dataclass(frozen=True, slots=True)
class Keys:
    """Key builders and parsers for one prefix."""

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        object.__setattr__(self, "prefix", as_prefix(self.prefix))

    @property
    def units(self) -> str:
        return f"{self.prefix}units/"

    def unit(self, name: str) -> str:
        return f"{self.units}{name}"

    @property
    def machines(self) -> str:
        return f"{self.prefix}machines/"

    def machine(self, machine_id: str) -> str:
        return f"{self.machines}{machine_id}"

    @property
    def schedule(self) -> str:
        return f"{self.prefix}schedule/"

    def schedule_of(self, machine_id: str) -> str:
        """The prefix an agent watches: its own schedule and nothing else."""
        return f"{self.schedule}{machine_id}/"

    def placement(self, machine_id: str, unit: str) -> str:
        return f"{self.schedule}{machine_id}/{unit}"

    @property
    def states(self) -> str:
        return f"{self.prefix}states/"

    def state(self, machine_id: str, unit: str) -> str:
        return f"{self.states}{machine_id}/{unit}"

    @property
    def unplaceable(self) -> str:
        return f"{self.prefix}unplaceable/"

    def unplaceable_unit(self, unit: str) -> str:
        return f"{self.unplaceable}{unit}"

    @property
    def metadata(self) -> str:
        return f"{self.prefix}metadata/"

    def metadata_key(self, machine_id: str, key: str) -> str:
        """Metadata set through the API; it outlives the machine's lease."""
        return f"{self.metadata}{machine_id}/{key}"

    @property
    def leader(self) -> str:
        return f"{self.prefix}engine/leader"

    @property
    def network_config(self) -> str:
        return f"{self.prefix}network/config"

    @property
    def subnets(self) -> str:
        return f"{self.prefix}network/subnets/"

    def subnet(self, name: str) -> str:
        """A subnet lease, named as flannel names it (`10.244.3.0-24`)."""
        return f"{self.subnets}{name}"

    def name_under(self, parent: str, key: str) -> str:
        """The last component of `key` below `parent` (a unit name or a machine id)."""
        if not key.startswith(parent):
            raise ValueError(f"key {key!r} is not under {parent!r}")
        return key[len(parent) :]

    def split_pair(self, parent: str, key: str) -> tuple[str, str]:
        """`(machine, unit)` from a `schedule/` or `states/` key."""
        machine, sep, unit = self.name_under(parent, key).partition("/")
        if not sep or not machine or not unit:
            raise ValueError(f"key {key!r} is not <machine>/<unit> under {parent!r}")
        return machine, unit
