"""The rig as `bench.rig` sees it: node containers through docker, the cluster through the API.

Role: everything `bench.rig` needs from the running rig that is not a timed `fleetctl` command:
reads of node1's API (with fleetctl's own client, on the host socket), the nodes' containers
(found by their Compose labels, so any Compose version works), `docker kill` / `docker start`,
systemd's unit list inside a node, the rig's effective `agent_ttl`, and `scripts/rig-up` /
`scripts/rig-down`.

Invariants:
* Every external command runs with a timeout; a read that fails raises `RigError` naming the
  command and what it said.
* Nothing here waits for a condition: the benchmark's steps do, each with its own deadline.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fleetctl.client import FleetClient, FleetctlError, parse_endpoint
from fleetctl.models import UnitState

NODE_NAMES = ("node1", "node2", "node3")
API_NODE = "node1"
"""The node whose API socket the host's fleetctl uses: the benchmark never kills it."""
COMMAND_TIMEOUT = 30.0
"""Seconds for one docker command."""
API_TIMEOUT = 10.0
"""Seconds for one API request."""
EFFECTIVE_TTL = (
    "import os; from fleetd.config import load_config; print(load_config([], os.environ).agent_ttl)"
)
"""Run by the node's own Python: fleetd's configuration as fleet.service gives it to fleetd
(/etc/fleet/fleet.conf, then the container's FLEET_* variables; the unit passes no flags)."""


class RigError(Exception):
    """The rig did not answer as expected; the message says which command and what it said."""


def run(argv: Sequence[str], timeout: float = COMMAND_TIMEOUT) -> str:
    """`argv`'s stdout; `RigError` when it fails or outlives `timeout` seconds."""
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise RigError(f"{' '.join(argv)}: no result within {timeout:g} s") from None
    if done.returncode != 0:
        raise RigError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


@dataclass(frozen=True)
class Health:
    """A node container's docker state (`running`, `exited`, ...) and health check status."""

    status: str
    health: str


class Rig:
    """The Compose project `project` of the checkout at `root`, with node1's API at `socket`."""

    def __init__(self, root: Path, project: str, socket: Path) -> None:
        self.root, self.project, self.socket = root, project, socket
        self.endpoint = f"unix://{socket}"
        endpoint, _ = parse_endpoint(self.endpoint)
        self._client = FleetClient(endpoint, timeout=API_TIMEOUT)

    def close(self) -> None:
        self._client.close()

    # ---- the API (node1's, through the host socket)

    def answers(self) -> bool:
        """Whether node1's API answers a list of machines."""
        if not self.socket.exists():
            return False
        try:
            self._client.machines()
        except FleetctlError:
            return False
        return True

    def machines(self) -> set[str]:
        """The ids of the live machines."""
        return {machine.id for machine in self._client.machines()}

    def states(self) -> list[UnitState]:
        """Every unit state systemd reported on every machine."""
        return self._client.unit_states()

    def unit_names(self) -> list[str]:
        """The units in the registry."""
        return [unit.name for unit in self._client.units()]

    # ---- the node containers

    def containers(self) -> dict[str, str]:
        """Node name -> container id, for every node container of the project (even stopped)."""
        out = run(
            [
                "docker", "ps", "--all", "--no-trunc",
                "--filter", f"label=com.docker.compose.project={self.project}",
                "--format", '{{.ID}} {{.Label "com.docker.compose.service"}}',
            ]
        )  # fmt: skip
        found: dict[str, str] = {}
        for line in out.splitlines():
            container, _, service = line.partition(" ")
            found[service.strip()] = container
        return {name: found[name] for name in NODE_NAMES if name in found}

    def machine_ids(self) -> dict[str, str]:
        """Node name -> machine id (systemd's /etc/machine-id inside the node)."""
        return {
            name: run(["docker", "exec", container, "cat", "/etc/machine-id"]).strip()
            for name, container in self.containers().items()
        }

    def agent_ttl(self) -> float:
        """The `agent_ttl` fleetd runs with on node1, read by fleetd's own configuration code."""
        container = self.containers()[API_NODE]
        out = run(["docker", "exec", container, "/opt/pyfleet/bin/python", "-c", EFFECTIVE_TTL])
        return float(out.strip())

    def kill(self, node: str) -> None:
        """SIGKILL to the node's container: systemd, fleetd and every unit die at once."""
        run(["docker", "kill", self.containers()[node]])

    def start(self, node: str) -> None:
        run(["docker", "start", self.containers()[node]])

    def health(self, node: str) -> Health:
        container = self.containers()[node]
        out = run(
            [
                "docker", "inspect", "--format",
                "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}",
                container,
            ]
        )  # fmt: skip
        status, _, health = out.strip().partition(" ")
        return Health(status, health)

    def systemd_units(self, node: str, patterns: Sequence[str]) -> list[str]:
        """The units systemd has loaded on `node` (in any state) whose names match one of
        `patterns` (shell globs)."""
        container = self.containers()[node]
        out = run(
            [
                "docker", "exec", container, "systemctl", "list-units", "--all", "--plain",
                "--no-legend", "--no-pager", "--", *patterns,
            ]
        )  # fmt: skip
        return [line.split()[0] for line in out.splitlines() if line.strip()]

    def journal(self, node: str, unit: str, since: str) -> str:
        """`journalctl -u unit` on `node` since `since` (a journalctl time), with microseconds."""
        container = self.containers()[node]
        return run(
            [
                "docker", "exec", container, "journalctl", "-u", unit, "--since", since,
                "--no-pager", "--output", "short-precise",
            ]
        )  # fmt: skip

    # ---- bringing the rig up and down

    def _script(self, name: str, timeout: float) -> None:
        env = dict(os.environ, COMPOSE_PROJECT_NAME=self.project)
        env["PYFLEET_RIG_API_DIR"] = str(self.socket.parent)
        try:
            done = subprocess.run(
                [str(self.root / "scripts" / name)],
                cwd=self.root,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise RigError(f"scripts/{name}: not done within {timeout:g} s") from None
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
            raise RigError(f"scripts/{name} exited {done.returncode}:\n{tail}")

    def up(self, timeout: float) -> None:
        """`scripts/rig-up` (builds the image when needed, starts the example units)."""
        self._script("rig-up", timeout)

    def down(self, timeout: float) -> None:
        """`scripts/rig-down`: the containers, the network and etcd's volume go."""
        self._script("rig-down", timeout)
