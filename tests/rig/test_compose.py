"""docker-compose.yml, run through `rig/compose` by Compose v1 (Debian's docker-compose, the one
this machine has): etcd and three nodes come up, then healthy, with their own machine ids and the
open-files limit fleet.service asks for (or the host's, when lower), fleetctl on the host reaches
node1's API through the socket directory, and `down` leaves nothing behind.

The test runs its own Compose project (a unique name, the API socket in a temporary directory),
so a rig a developer has up is left alone; an override file adds the tests' labels to every
container, the network and the volume, for `.ci/run` to clean up after a killed run.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.rig.nodes import LABELS, ROOT, TEST_TIMEOUT, compose_services, wait_for

pytestmark = pytest.mark.timeout(TEST_TIMEOUT)

NODES = ("node1", "node2", "node3")
FLEETCTL = Path(sys.executable).parent / "fleetctl"


def docker(*args: str) -> list[str]:
    """Lines of a docker CLI command's output; it must succeed."""
    done = subprocess.run(["docker", *args], capture_output=True, text=True, check=True)
    return done.stdout.split()


def test_compose_brings_up_etcd_and_three_nodes_then_tears_down(
    node_image: str, tmp_path: Path
) -> None:
    compose = shutil.which("docker-compose")
    assert compose, "docker-compose (Compose v1) is missing: scripts/bootstrap installs it"
    services = compose_services()
    project = f"pyfleet-test-{uuid.uuid4().hex[:8]}"
    api_dir = tmp_path / "api"
    override = tmp_path / "labels.yml"  # JSON is YAML
    override.write_text(
        json.dumps(
            {
                "services": {name: {"labels": LABELS} for name in services},
                "networks": {"default": {"labels": LABELS}},
                "volumes": {"etcd-data": {"labels": LABELS}},
            }
        )
    )
    secret = tmp_path / "cluster-secret"  # as scripts/rig-up makes it: owner-only
    secret.write_text("compose-test-secret\n")
    secret.chmod(0o600)
    env = {
        **os.environ,
        "PYFLEET_IMAGE": node_image,
        "PYFLEET_RIG_API_DIR": str(api_dir),
        "PYFLEET_COMPOSE": compose,
        "COMPOSE_PROJECT_NAME": project,
        "PYFLEET_RIG_SECRET": str(secret),
        "PYFLEET_RIG_SSH_DIR": str(tmp_path / "ssh"),  # the nodes' authorized keys, empty here
    }
    env.pop("PYFLEET_RIG_NOFILE", None)
    base = [str(ROOT / "rig" / "compose"), "--file", str(override)]

    def compose_run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*base, *args], env=env, capture_output=True, text=True, check=False)

    def fleetctl(*args: str) -> subprocess.CompletedProcess[str]:
        endpoint = f"unix://{api_dir}/fleet.sock"
        command = [str(FLEETCTL), "--endpoint", endpoint, *args]
        return subprocess.run(command, capture_output=True, text=True, check=False)

    def containers(*, healthy: bool) -> tuple[bool, str]:
        """Whether all four containers run (and docker's health check says `healthy`)."""
        ids = docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={project}")
        if not ids:
            return False, "no containers"
        template = "{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}"
        lines = subprocess.run(
            ["docker", "inspect", "-f", template, *ids], capture_output=True, text=True, check=False
        ).stdout.splitlines()
        wanted = ["running", "healthy"] if healthy else ["running"]
        matching = [line for line in lines if line.split()[1 : 1 + len(wanted)] == wanted]
        return len(ids) == 4 and len(matching) == 4, "\n".join(lines)

    def three_machines() -> tuple[bool, str]:
        """node1's API answers fleetctl on the host and lists the three machines (each fleetd
        registers its machine once its systemd has booted)."""
        done = fleetctl("list-machines", "--no-legend")
        listed = done.stdout.splitlines()
        return done.returncode == 0 and len(listed) == 3, done.stdout + done.stderr

    try:
        up = compose_run("up", "-d")
        assert up.returncode == 0, up.stderr
        wait_for(lambda: containers(healthy=False), "etcd and three nodes running")
        wait_for(three_machines, "fleetctl list-machines from the host listing three machines")

        expected_ids = {name: services[name]["environment"]["container_uuid"] for name in NODES}
        machine_ids = {
            name: compose_run("exec", "-T", name, "cat", "/etc/machine-id").stdout.strip()
            for name in NODES
        }
        assert machine_ids == expected_ids
        assert len(set(machine_ids.values())) == 3
        # fleet.service's LimitNOFILE=65536, unless this host's hard limit is lower
        host_hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        nofile = str(65536 if host_hard == resource.RLIM_INFINITY else min(65536, host_hard))
        for name in NODES:
            limits = compose_run("exec", "-T", name, "sh", "-c", "ulimit -Sn; ulimit -Hn")
            assert limits.stdout.split() == [nofile, nofile], limits.stdout + limits.stderr

        # fleetctl on the host reached node1's socket in the bind-mounted directory (above).
        # Machines register through the agent; those listed are the rig's, with its metadata.
        listed = fleetctl("list-machines", "--no-legend", "--full", "--fields", "machine,metadata")
        metadata = {name: services[name]["environment"]["FLEET_METADATA"] for name in NODES}
        expected = {expected_ids[name]: metadata[name] for name in NODES}
        for line in listed.stdout.splitlines():
            machine, _, machine_metadata = line.partition("\t")
            assert expected.get(machine) == machine_metadata, listed.stdout

        # node1's sshd on a loopback port of the host, for `fleetctl --tunnel`
        published = compose_run("port", "node1", "22").stdout.strip()
        host, _, port = published.rpartition(":")
        assert host == "127.0.0.1", published

        def sshd_greets() -> tuple[bool, str]:
            try:
                with socket.create_connection((host, int(port)), timeout=5) as conn:
                    banner = conn.recv(64).decode(errors="replace")
            except OSError as exc:
                return False, str(exc)
            return banner.startswith("SSH-2.0-OpenSSH"), banner

        wait_for(sshd_greets, "node1's sshd answering on its published port")
        # docker's own health checks pass too: its first runs 30 s after a container started
        wait_for(lambda: containers(healthy=True), "etcd and three nodes healthy")
    finally:
        down = compose_run("down", "--volumes", "--remove-orphans", "--timeout", "20")
    assert down.returncode == 0, down.stderr
    label = f"label=com.docker.compose.project={project}"
    assert docker("ps", "-aq", "--filter", label) == []
    assert docker("network", "ls", "-q", "--filter", label) == []
    assert docker("volume", "ls", "-q", "--filter", label) == []


def rig_config(env: dict[str, str], hard_limit: int | None = None) -> str:
    """`rig/compose config` (no container starts), under an open-files hard limit if given."""

    def lower_limit() -> None:
        if hard_limit is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard_limit, hard_limit))

    done = subprocess.run(
        [str(ROOT / "rig" / "compose"), "config"],
        env={**os.environ, "PYFLEET_COMPOSE": "docker-compose", **env},
        capture_output=True,
        text=True,
        check=False,
        preexec_fn=lower_limit,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_nodes_open_files_limit_is_the_hosts_when_lower_or_as_asked() -> None:
    # unset: 65536, or the hard limit rig/compose runs under when that is lower
    config = rig_config({"PYFLEET_RIG_NOFILE": ""}, hard_limit=4096)
    assert config.count("nofile: 4096") == 3, config
    config = rig_config({"PYFLEET_RIG_NOFILE": "1234"})
    assert config.count("nofile: 1234") == 3, config
