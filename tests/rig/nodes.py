"""Rig containers for the tests: the node image, etcd and systemd nodes, through testcontainers.

Containers are started the way `docker-compose.yml` starts them: the node recipe (capability
list, security options, tmpfs mounts, the host's cgroup tree) and etcd's command are read from
that file, so the tests run exactly what a user of the rig runs.

Invariants:
* Ryuk is off (it is an image to pull, and no registry is reachable here). Every container,
  network and volume the tests make carries `LABELS` instead, and `.ci/run` removes what a killed
  run left behind by those labels.
* The image comes from `scripts/rig-build`, which reuses an unchanged image, so the session pays
  for a build only when the Dockerfile, rig/ or pyfleet's sources changed.
* Every wait polls a condition with a deadline and, when it fails, says what it saw last
  (with fleetd's journal for a node); nothing sleeps blindly.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]
from testcontainers.core.config import testcontainers_config
from testcontainers.core.container import DockerContainer
from testcontainers.core.network import Network
from testcontainers.core.wait_strategies import ExecWaitStrategy

testcontainers_config.ryuk_disabled = True  # also when another module imported it first

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
LABELS = {"org.pyfleet.test": "true"}
NODE1_ID = "0c1ab2f2f1a34a7e8d3a6e1f20aa0001"
"""The machine id of the session's node (the Compose file's node1 has the same)."""
TEST_TIMEOUT = 900
"""pytest-timeout for a rig test: the first one's setup may build the image from nothing
(debootstrap and all), which takes minutes; the tests themselves take seconds."""
BOOT_WITHIN = 60.0
"""Deadline for systemd to boot and fleetd to come up; a boot takes about 2 s here."""
POLL_INTERVAL = 0.2


def build_image() -> str:
    """The node image's tag, built by `scripts/rig-build` or reused when nothing changed."""
    done = subprocess.run(
        [str(ROOT / "scripts" / "rig-build")], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"scripts/rig-build failed:\n{done.stderr}")
    return done.stdout.strip()


def compose_file() -> dict[str, Any]:
    """docker-compose.yml, with its YAML anchors and merge keys resolved."""
    document: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return document


def compose_services() -> dict[str, Any]:
    """The services of docker-compose.yml."""
    services: dict[str, Any] = compose_file()["services"]
    return services


def wait_for(
    check: Callable[[], tuple[bool, str]], what: str, *, within: float = BOOT_WITHIN
) -> str:
    """Poll `check` (which returns whether it holds and what it saw) until it holds.

    Returns what it saw then; fails with the last sight after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        held, seen = check()
        if held:
            return seen
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {within:.0f} s; last seen:\n{seen}")
        time.sleep(POLL_INTERVAL)


def run_in(container: DockerContainer, command: Sequence[str]) -> tuple[int, str]:
    """Run `command` in `container`: its exit code and its output (stdout and stderr)."""
    result = container.exec(list(command))
    output = result.output.decode(errors="replace") if result.output else ""
    assert result.exit_code is not None  # None only for a detached exec
    return result.exit_code, output.strip()


def make_network() -> Network:
    """A fresh, labelled bridge network (Docker's DNS resolves the containers' aliases on it)."""
    return Network(docker_network_kw={"labels": dict(LABELS)}).create()


def etcd_container(image: str, network: Network) -> DockerContainer:
    """etcd from the node image, as the Compose file runs it, known as `etcd` on `network`.

    Not started yet: `with etcd_container(...) as etcd:` starts it, returns once /health answers
    true, and removes it afterwards (also when it does not come up)."""
    service = compose_services()["etcd"]
    return (
        DockerContainer(image)
        .with_command(service["command"])
        .with_network(network)
        .with_network_aliases("etcd")
        .with_tmpfs_mount("/var/lib/etcd")  # the tests' etcd needs no durable fsyncs
        .with_kwargs(hostname="etcd", labels=dict(LABELS), stop_signal=service["stop_signal"])
        .waiting_for(
            ExecWaitStrategy(
                [
                    "python3",
                    "-c",
                    "import urllib.request as r; "
                    "r.urlopen('http://127.0.0.1:2379/health', timeout=2)",
                ]
            )
            .with_startup_timeout(int(BOOT_WITHIN))
            .with_poll_interval(POLL_INTERVAL)
        )
    )


def node_container(
    image: str,
    network: Network,
    name: str,
    *,
    machine_id: str | None = None,
    environment: Mapping[str, str] | None = None,
) -> DockerContainer:
    """A systemd node from the Compose file's recipe, known as `name` on `network`.

    `machine_id` becomes its /etc/machine-id (through `$container_uuid`; a random one when None),
    `environment` holds FLEET_* options for its fleetd. Not started yet: `with node_container(...)
    as node:` starts it, returns once systemd reports the system running (or degraded: some unit
    failed), and removes it afterwards."""
    recipe = compose_file()["x-node"]  # what every node of the Compose file starts from
    container = (
        DockerContainer(image)
        .with_network(network)
        .with_network_aliases(name)
        .with_kwargs(
            hostname=name,
            labels=dict(LABELS),
            cap_add=list(recipe["cap_add"]),
            security_opt=list(recipe["security_opt"]),
        )
        .waiting_for(
            ExecWaitStrategy(
                ["sh", "-c", "systemctl is-system-running | grep -qE '^(running|degraded)$'"]
            )
            .with_startup_timeout(int(BOOT_WITHIN))
            .with_poll_interval(POLL_INTERVAL)
        )
    )
    for entry in recipe["tmpfs"]:
        path, _, options = entry.partition(":")  # docker's "PATH:OPTIONS" form
        container.with_tmpfs_mount(path, options or None)
    for volume in recipe["volumes"]:
        host, inside, mode = volume.split(":")
        container.with_volume_mapping(host, inside, mode)
    if machine_id is not None:
        container.with_env("container_uuid", machine_id)
    for key, value in (environment or {}).items():
        container.with_env(key, value)
    return container


def fleetd_journal(node: DockerContainer, lines: int = 40) -> str:
    """The last lines of fleet.service's journal on `node`, for failure messages."""
    _, journal = run_in(
        node, ["journalctl", "-u", "fleet.service", "-n", str(lines), "--no-pager", "-o", "cat"]
    )
    return journal


def api_get(node: DockerContainer, path: str) -> tuple[int, str]:
    """`GET path` on the node's own fleet API (its unix socket), with the node's httpx.

    Returns the status (0 when fleetd did not answer) and the body or the error."""
    script = (
        "import sys, httpx\n"
        "transport = httpx.HTTPTransport(uds='/var/run/fleet.sock')\n"
        "try:\n"
        "    with httpx.Client(transport=transport, timeout=3) as client:\n"
        "        response = client.get('http://fleet' + sys.argv[1])\n"
        "except httpx.TransportError as exc:\n"
        "    print(0, exc)\n"
        "else:\n"
        "    print(response.status_code, response.text)\n"
    )
    _, output = run_in(node, ["/opt/pyfleet/bin/python", "-c", script, path])
    status, _, body = output.partition(" ")
    return (int(status), body) if status.isdigit() else (0, output)
