"""A three-machine pyfleet cluster on real systemd, for the rig tests that run units.

`start_cluster()` brings up, on a network of its own, an etcd and the Compose file's three nodes
(their machine ids and metadata: `role=web` on node1, `role=db` on node2 and node3), built with
`tests/rig/nodes.py`'s helpers, so each cluster is what `scripts/rig-up` runs, with a short
machine lease (`AGENT_TTL`). node1 boots first and becomes the engine leader before the others
boot, so which machine leads is known (`Cluster.leader()` reads it back from etcd).

node1 also serves its API on a socket in a host directory, as in the Compose file: `fleetctl`
runs on the host against it (`Cluster.fleetctl`, in a working directory holding the unit files
`Cluster.write_unit` wrote), and `Cluster.api` speaks HTTP to the same socket. A test that takes
node1 away asks another node's API from inside it (`Cluster.states(via=...)`). Every node serves
the node-to-node endpoint with the cluster credential (`PEER_OPTIONS`), as in the Compose file.

Invariants:
* Every wait is a condition with a deadline (`nodes.wait_for`); a failed wait says what it saw
  last, with fleetd's journals.
* Containers and the network carry the rig tests' labels (see `nodes.py`) and are removed when
  the `with` block ends, whatever happened inside it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from testcontainers.core.container import DockerContainer

from fleetd.registry.keys import DEFAULT_PREFIX
from tests.rig.nodes import (
    api_get,
    compose_services,
    etcd_container,
    fleetd_journal,
    make_network,
    node_container,
    run_in,
    wait_for,
)

NODE_NAMES = ("node1", "node2", "node3")
AGENT_TTL = 3
"""Seconds of every test machine's lease (`FLEET_AGENT_TTL`): a killed machine is gone after it."""
FLEETCTL = Path(sys.executable).parent / "fleetctl"
PEER_PORT = 49154
SECRET_IN_NODE = "/etc/fleet/cluster-secret"
CLUSTER_SECRET = "rig-tests-cluster-secret-7d41"
PEER_OPTIONS = {
    "FLEET_PEER_LISTEN": f"0.0.0.0:{PEER_PORT}",
    "FLEET_CLUSTER_SECRET_FILE": SECRET_IN_NODE,
}
"""The node-to-node endpoint, as the Compose file configures it on every node."""
API_DIR_IN_NODE = "/run/fleet-api"
PREFIX = DEFAULT_PREFIX  # the nodes' fleetd keeps the default
UNITS_DIRECTORY = "/run/fleet/units"
RUNTIME_UNITS = "/run/systemd/system"
FLEETCTL_WITHIN = 120.0
"""Deadline for one fleetctl command (a blocking `start` waits for the units to run)."""
SETTLE_WITHIN = 30.0
"""Deadline for the cluster to do what it was asked (register, place, start, stop, destroy)."""
QUIET_WINDOW = 3
"""Seconds during which nothing changes, to count what the agent asks systemd meanwhile."""
QUIET_CALLS = 6
"""At most this many `ListUnitsByNames` calls in `QUIET_WINDOW` on a machine where nothing
changes: the agent and its publisher act on changes and on safety ticks of 30 s and 60 s, so such
a machine sees none, or a tick's worth; a feedback loop makes thousands."""
UNIT_PROPERTIES = (
    "LoadState",
    "ActiveState",
    "SubState",
    "MainPID",
    "InvocationID",
    "NRestarts",
    "ExecMainStartTimestampMonotonic",
)


@dataclass(frozen=True)
class UnitRow:
    """One row of `fleetctl list-units`: a unit's state on one machine."""

    unit: str
    machine: str
    load: str
    active: str
    sub: str


@dataclass
class Cluster:
    """A running cluster; see the module docstring."""

    etcd: DockerContainer
    nodes: dict[str, DockerContainer]
    machines: dict[str, str]  # node name -> machine id
    api_socket: Path
    unit_dir: Path  # fleetctl's working directory, where unit files are written
    killed: set[str] = field(default_factory=set)

    # ---- naming

    def node_of(self, machine_id: str) -> str:
        for name, machine in self.machines.items():
            if machine == machine_id:
                return name
        raise AssertionError(f"no node has machine id {machine_id!r}")

    def live_nodes(self) -> list[str]:
        return [name for name in NODE_NAMES if name in self.nodes and name not in self.killed]

    def wait(
        self, check: Callable[[], tuple[bool, str]], what: str, within: float = SETTLE_WITHIN
    ) -> str:
        """`nodes.wait_for`, with fleetd's journals in the failure message."""
        try:
            return wait_for(check, what, within=within)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.journals()}") from None

    # ---- fleetctl and the API, through node1's socket

    def write_unit(self, name: str, text: str) -> None:
        (self.unit_dir / name).write_text(text)

    def fleetctl(
        self, *args: str, check: bool = True, within: float = FLEETCTL_WITHIN
    ) -> subprocess.CompletedProcess[str]:
        """fleetctl on the host against node1's API; it must succeed unless `check` is False,
        and it must finish `within` seconds."""
        command = [str(FLEETCTL), "--endpoint", f"unix://{self.api_socket}", *args]
        try:
            done = subprocess.run(
                command,
                cwd=self.unit_dir,
                capture_output=True,
                text=True,
                timeout=within,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            output = [part for part in (exc.stdout, exc.stderr) if part]
            seen = "".join(p.decode() if isinstance(p, bytes) else p for p in output)
            raise AssertionError(
                f"fleetctl {' '.join(args)} still running after {within:g} s:\n{seen}"
            ) from None
        if check and done.returncode != 0:
            raise AssertionError(
                f"fleetctl {' '.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}"
                f"\n{self.journals()}"
            )
        return done

    def list_units(self) -> list[UnitRow]:
        """`fleetctl list-units` with every field (its JSON output)."""
        done = self.fleetctl(
            "--output", "json", "list-units", "--fields", "unit,machine,load,active,sub"
        )
        return [
            UnitRow(*(row[key] or "" for key in ("unit", "machine", "load", "active", "sub")))
            for row in json.loads(done.stdout)["states"]
        ]

    def rows_of(self, unit: str) -> list[UnitRow]:
        return [row for row in self.list_units() if row.unit == unit]

    def wait_rows(
        self, unit: str, holds: Callable[[list[UnitRow]], bool], what: str
    ) -> list[UnitRow]:
        """Wait until `fleetctl list-units`'s rows of `unit` satisfy `holds`; returns them."""

        def check() -> tuple[bool, str]:
            rows = self.rows_of(unit)
            return holds(rows), f"{rows}"

        self.wait(check, f"list-units: {unit} {what}")
        return self.rows_of(unit)

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, str]:
        """One request to node1's API (the path is sent as given); the status and the body."""
        transport = httpx.HTTPTransport(uds=str(self.api_socket))
        with httpx.Client(transport=transport, timeout=10) as client:
            response = client.request(method, "http://fleet" + path, json=body)
        return response.status_code, response.text

    def unit_names(self) -> list[str]:
        """The units in the registry (`GET /fleet/v1/units`, one page is plenty here)."""
        status, body = self.api("GET", "/fleet/v1/units")
        assert status == 200, body
        return [unit["name"] for unit in json.loads(body).get("units", [])]

    def states(self, via: str = "node1") -> list[dict[str, str]]:
        """`GET /fleet/v1/state` asked inside node `via` (works whichever node is gone)."""
        status, body = api_get(self.nodes[via], "/fleet/v1/state")
        assert status == 200, f"{status} {body}"
        states: list[dict[str, str]] = json.loads(body).get("states", [])
        return states

    def destroy_all(self) -> None:
        """Destroy every unit, then wait until no machine reports or holds any of them."""
        for name in self.unit_names():
            status, body = self.api("DELETE", "/fleet/v1/units/" + quote(name, safe=""))
            assert status in (204, 404), body

        def gone() -> tuple[bool, str]:
            left = self.unit_names()
            states = self.states()
            files = {node: self.units_directory(node) for node in self.live_nodes()}
            held = not left and not states and not any(files.values())
            return held, f"units {left}\nstates {states}\nfiles {files}"

        self.wait(gone, "every unit destroyed and unloaded")
        for path in self.unit_dir.iterdir():
            path.unlink()

    # ---- systemd inside the nodes

    def systemd(self, node: str, unit: str) -> dict[str, str]:
        """`systemctl show` of `unit` on `node`: the `UNIT_PROPERTIES`."""
        code, output = run_in(
            self.nodes[node], ["systemctl", "show", "-p", ",".join(UNIT_PROPERTIES), unit]
        )
        assert code == 0, output
        return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)

    def is_active(self, node: str, unit: str) -> str:
        """`systemctl is-active unit` on `node`: `active`, `inactive`, `failed`, ..."""
        return run_in(self.nodes[node], ["systemctl", "is-active", unit])[1]

    def active_on(self, unit: str) -> set[str]:
        """The live nodes whose systemd has `unit` active."""
        return {node for node in self.live_nodes() if self.is_active(node, unit) == "active"}

    def wait_active_on(self, unit: str, count: int) -> set[str]:
        """Wait until systemd runs `unit` on exactly `count` live nodes; returns them."""

        def check() -> tuple[bool, str]:
            nodes = self.active_on(unit)
            return len(nodes) == count, f"{unit} active on {sorted(nodes)}"

        self.wait(check, f"{unit} active on {count} node(s)")
        return self.active_on(unit)

    def files_of(self, node: str, unit: str) -> list[str]:
        """Which of the unit's file in the units directory and its runtime link in systemd's
        directory exist on `node` (a dangling link counts)."""
        paths = (f"{UNITS_DIRECTORY}/{unit}", f"{RUNTIME_UNITS}/{unit}")
        script = 'for p in "$@"; do if [ -e "$p" ] || [ -L "$p" ]; then echo "$p"; fi; done'
        _, output = run_in(self.nodes[node], ["sh", "-c", script, "sh", *paths])
        return output.splitlines()

    def units_directory(self, node: str) -> list[str]:
        """The unit files in `node`'s units directory (not the agent's own dot files)."""
        _, output = run_in(self.nodes[node], ["ls", "-1", UNITS_DIRECTORY])
        return [name for name in output.splitlines() if name and "No such file" not in name]

    def bus_calls(self, node: str, member: str, seconds: int) -> int:
        """How many D-Bus calls of `member` to systemd the node's bus carries in `seconds`."""
        script = (
            f"timeout {seconds} busctl monitor --system 2>/dev/null"
            f" | grep -c 'Destination=org.freedesktop.systemd1 .*Member={member}'"
        )
        _, output = run_in(self.nodes[node], ["sh", "-c", script])
        return int(output.splitlines()[-1])

    def journal_cursor(self, node: str) -> str:
        """The cursor of the last entry of `node`'s journal (for `journal_after`)."""
        _, output = run_in(self.nodes[node], ["journalctl", "-n", "0", "--show-cursor", "-q"])
        return output.rpartition("cursor: ")[2].strip()

    def journal_after(self, node: str, cursor: str, *matches: str) -> list[str]:
        """`node`'s journal messages after `cursor`, restricted by journalctl `matches`."""
        command = ["journalctl", "--no-pager", "-q", "-o", "cat", "--after-cursor", cursor]
        _, output = run_in(self.nodes[node], [*command, *matches])
        return [line for line in output.splitlines() if line]

    def fleetd_log(self, node: str, unit: str) -> list[dict[str, Any]]:
        """fleetd's structured log entries on `node` about `unit` (their `unit` field)."""
        _, output = run_in(
            self.nodes[node], ["journalctl", "-u", "fleet.service", "--no-pager", "-o", "cat"]
        )
        entries = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
        return [entry for entry in entries if entry.get("unit") == unit]

    def journals(self, lines: int = 25) -> str:
        """fleetd's last journal lines on every live node, for failure messages."""
        return "\n".join(
            f"--- fleetd on {node}:\n{fleetd_journal(self.nodes[node], lines)}"
            for node in self.live_nodes()
        )

    # ---- etcd

    def etcd_get(self, key: str) -> tuple[Any, int] | None:
        """The JSON value etcd holds at `key` and the lease it is on, or None (asked through
        etcd's JSON gateway inside the etcd container)."""
        request = json.dumps({"key": base64.b64encode(key.encode()).decode()})
        script = (
            "import sys, urllib.request as r\n"
            "q = r.Request('http://127.0.0.1:2379/v3/kv/range', data=sys.argv[1].encode())\n"
            "print(r.urlopen(q, timeout=5).read().decode())\n"
        )
        code, output = run_in(self.etcd, ["python3", "-c", script, request])
        assert code == 0, output
        kvs = json.loads(output).get("kvs", [])
        if not kvs:
            return None
        return json.loads(base64.b64decode(kvs[0]["value"])), int(kvs[0].get("lease", 0))

    def etcd_put(self, key: str, value: str) -> None:
        """Store `value` at `key` (through etcd's JSON gateway inside the etcd container)."""
        request = json.dumps(
            {
                "key": base64.b64encode(key.encode()).decode(),
                "value": base64.b64encode(value.encode()).decode(),
            }
        )
        script = (
            "import sys, urllib.request as r\n"
            "q = r.Request('http://127.0.0.1:2379/v3/kv/put', data=sys.argv[1].encode())\n"
            "print(r.urlopen(q, timeout=5).read().decode())\n"
        )
        code, output = run_in(self.etcd, ["python3", "-c", script, request])
        assert code == 0, output

    def leader(self) -> str | None:
        """The machine id of the engine leader."""
        found = self.etcd_get(f"{PREFIX}engine/leader")
        return None if found is None else str(found[0]["machineID"])

    def machine_lease(self, node: str) -> int:
        """The lease `machines/<id>` of `node` is on (0 when the machine is not registered)."""
        found = self.etcd_get(f"{PREFIX}machines/{self.machines[node]}")
        return 0 if found is None else found[1]

    def registered(self) -> set[str]:
        """The machine ids node1's API lists."""
        status, body = self.api("GET", "/fleet/v1/machines")
        return {m["id"] for m in json.loads(body).get("machines", [])} if status == 200 else set()

    # ---- disruptions

    def kill(self, node: str) -> None:
        """SIGKILL the node's container: systemd, fleetd and its units die at once."""
        self.killed.add(node)
        self.nodes[node].get_wrapped_container().kill()


def service(description: str, *, exec_start: str = "/bin/sleep infinity", **fleet: str) -> str:
    """The text of a service unit; keyword arguments are its `[X-Fleet]` options."""
    lines = ["[Unit]", f"Description={description}", "", "[Service]", f"ExecStart={exec_start}"]
    if fleet:
        lines += ["", "[X-Fleet]", *(f"{key}={value}" for key, value in fleet.items())]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def start_cluster(
    image: str,
    environment: Mapping[str, str] | None = None,
    *,
    network_config: str | None = None,
) -> Iterator[Cluster]:
    """An etcd and three registered nodes, node1 leading; all removed when the block ends.

    `environment` adds FLEET_* options for every node's fleetd (`FLEET_AGENT_TTL` is
    `AGENT_TTL` unless given); `network_config` (flannel's JSON) is in etcd before any node
    boots, so the nodes come up on the container network, as `scripts/rig-up`'s do."""
    services = compose_services()
    machines = {name: services[name]["environment"]["container_uuid"] for name in NODE_NAMES}
    options = {"FLEET_AGENT_TTL": f"{AGENT_TTL}s", **(environment or {})}
    with contextlib.ExitStack() as stack:
        network = make_network()
        stack.callback(network.remove)
        api_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pyfleet-api-")))
        secret_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pyfleet-key-")))
        secret = secret_dir / "cluster-secret"
        secret.write_text(CLUSTER_SECRET)
        secret.chmod(0o600)
        unit_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pyfleet-units-")))
        etcd = stack.enter_context(etcd_container(image, network))

        def boot(name: str) -> DockerContainer:
            env = {**options, "FLEET_METADATA": services[name]["environment"]["FLEET_METADATA"]}
            env.update(PEER_OPTIONS)
            if name == "node1":
                env["FLEET_LISTEN"] = f"/var/run/fleet.sock,{API_DIR_IN_NODE}/fleet.sock"
            node = node_container(image, network, name, machine_id=machines[name], environment=env)
            node.with_volume_mapping(str(secret), SECRET_IN_NODE, "ro")
            if name == "node1":
                node.with_volume_mapping(str(api_dir), API_DIR_IN_NODE, "rw")
            stack.callback(node.stop)  # registered first: a node that fails to boot goes too
            return node.start()

        cluster = Cluster(etcd, {}, machines, api_dir / "fleet.sock", unit_dir)
        if network_config is not None:
            cluster.etcd_put(f"{PREFIX}network/config", network_config)
        cluster.nodes["node1"] = boot("node1")

        def node1_leads() -> tuple[bool, str]:
            leader = cluster.leader()
            return leader == machines["node1"], f"leader {leader}"

        cluster.wait(node1_leads, "node1's engine leading")
        with ThreadPoolExecutor(max_workers=2) as pool:
            cluster.nodes.update(zip(NODE_NAMES[1:], pool.map(boot, NODE_NAMES[1:]), strict=True))

        def all_registered() -> tuple[bool, str]:
            seen = cluster.registered()
            return seen == set(machines.values()), f"{sorted(seen)}"

        cluster.wait(all_registered, "the three machines registered")
        yield cluster
