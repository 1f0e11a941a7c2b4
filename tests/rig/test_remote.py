"""fleet's ways in from outside, on the rig: `restart` in systemd, the node's SSH server,
`fleetctl fd-forward` run through it, `fleetctl --tunnel` and `fleetctl ssh` from the host, and
`--endpoint https://` with client certificates.

The host's key is made per session (`ssh-keygen` into a temporary directory, never committed),
served by an `ssh-agent` of the test's own (fleet's client authenticated through the agent
too), and authorized on each node in `/etc/ssh/authorized_keys.d/root`. Host keys are each
node's own (made at its first boot), so they are not checked here
(`--strict-host-key-checking=false`).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from testcontainers.core.container import DockerContainer
from testcontainers.core.network import Network

from devtools.certs import write_all
from tests.rig.cluster import FLEETCTL, NODE_NAMES, Cluster, service
from tests.rig.nodes import TEST_TIMEOUT, fleetd_journal, node_container, run_in, wait_for

pytestmark = pytest.mark.timeout(TEST_TIMEOUT)

SSH_OPTIONS = [
    "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
    "-o", "LogLevel=ERROR", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
]  # fmt: skip
WITHIN = 60.0


def node_ip(cluster: Cluster, node: str) -> str:
    container = cluster.nodes[node].get_wrapped_container()
    container.reload()
    networks = container.attrs["NetworkSettings"]["Networks"]
    return str(next(iter(networks.values()))["IPAddress"])


@pytest.fixture(scope="module")
def ssh_agent(shared_cluster: Cluster) -> Iterator[dict[str, str]]:
    """An ssh-agent holding a fresh key that every node of the cluster accepts for root; the
    environment that points ssh at it."""
    with tempfile.TemporaryDirectory(prefix="pyfleet-ssh-") as directory:
        key = Path(directory) / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        public = key.with_suffix(".pub").read_text().strip()
        for node in NODE_NAMES:
            code, output = run_in(
                shared_cluster.nodes[node],
                ["sh", "-c", 'printf "%s\\n" "$1" > /etc/ssh/authorized_keys.d/root', "sh", public],
            )
            assert code == 0, output
        socket_path = str(Path(directory) / "agent.sock")
        agent = subprocess.Popen(["ssh-agent", "-D", "-a", socket_path], stdout=subprocess.DEVNULL)
        try:
            env = {**os.environ, "SSH_AUTH_SOCK": socket_path}

            def agent_up() -> tuple[bool, str]:
                done = subprocess.run(
                    ["ssh-add", str(key)], env=env, capture_output=True, text=True, check=False
                )
                return done.returncode == 0, done.stderr

            shared_cluster.wait(agent_up, "the test's ssh-agent to take the key")
            yield env
        finally:
            agent.terminate()
            agent.wait()


def ssh_ready(cluster: Cluster, env: dict[str, str], ip: str) -> None:
    def answers() -> tuple[bool, str]:
        done = subprocess.run(
            ["ssh", *SSH_OPTIONS, f"root@{ip}", "true"],
            env=env, capture_output=True, text=True, timeout=WITHIN, check=False,
        )  # fmt: skip
        return done.returncode == 0, done.stderr

    cluster.wait(answers, f"sshd on {ip} to let the test's key in")


def test_restart_gives_a_running_unit_a_new_main_process(cluster: Cluster) -> None:
    cluster.write_unit("hello.service", service("Hello"))
    cluster.fleetctl("start", "hello.service")
    (row,) = cluster.wait_rows(
        "hello.service", lambda rows: [r.active for r in rows] == ["active"], "active once"
    )
    node = cluster.node_of(row.machine)
    before = cluster.systemd(node, "hello.service")
    assert before["ActiveState"] == "active"
    assert int(before["MainPID"]) > 0

    restart = cluster.fleetctl("restart", "hello.service")
    loaded, launched = restart.stdout.splitlines()
    assert loaded.startswith(f"Unit hello.service loaded on {row.machine[:8]}..."), loaded
    assert launched.startswith(f"Unit hello.service launched on {row.machine[:8]}..."), launched
    after = cluster.systemd(node, "hello.service")
    assert after["ActiveState"] == "active"
    assert after["MainPID"] != before["MainPID"]
    assert after["InvocationID"] != before["InvocationID"]
    assert cluster.active_on("hello.service") == {node}


def test_fd_forward_over_ssh_serves_the_api(cluster: Cluster, ssh_agent: dict[str, str]) -> None:
    ip = node_ip(cluster, "node2")
    ssh_ready(cluster, ssh_agent, ip)
    request = b"GET /fleet/v1/machines HTTP/1.1\r\nHost: domain-sock\r\nConnection: close\r\n\r\n"
    command = ["ssh", *SSH_OPTIONS, f"root@{ip}", "fleetctl fd-forward /var/run/fleet.sock"]
    with subprocess.Popen(
        command, env=ssh_agent, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    ) as process:
        assert process.stdin is not None
        assert process.stdout is not None
        try:
            process.stdin.write(request)
            process.stdin.flush()
            answer = process.stdout.read()  # to the end: fleetd closes, fd-forward and ssh end
            assert process.wait(WITHIN) == 0
        finally:
            if process.poll() is None:
                process.kill()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), answer
    for machine in cluster.machines.values():
        assert machine.encode() in body


def test_tunnel_and_ssh_from_the_host(cluster: Cluster, ssh_agent: dict[str, str]) -> None:
    ip = node_ip(cluster, "node3")
    ssh_ready(cluster, ssh_agent, ip)
    cluster.write_unit("hello.service", service("Hello"))
    cluster.fleetctl("start", "hello.service")
    tunnel = [
        str(FLEETCTL), "--tunnel", ip, "--ssh-username", "root",
        "--strict-host-key-checking=false",
    ]  # fmt: skip

    def fleetctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*tunnel, *args], env=ssh_agent, capture_output=True, text=True,
            timeout=WITHIN, check=False,
        )  # fmt: skip

    units = fleetctl("list-units", "--fields", "unit,active", "--no-legend")
    assert (units.returncode, units.stderr) == (0, ""), units.stderr
    assert units.stdout.split() == ["hello.service", "active"]
    machines = fleetctl("list-machines", "--no-legend", "--full", "--fields", "machine")
    assert sorted(machines.stdout.split()) == sorted(cluster.machines.values())

    # `fleetctl ssh UNIT CMD` reaches the unit's machine (through the tunnel node)
    (row,) = cluster.rows_of("hello.service")
    where = fleetctl("ssh", "hello.service", "cat", "/etc/machine-id")
    assert (where.returncode, where.stdout.strip()) == (0, row.machine), where.stderr
    # and the remote command's exit status is fleetctl's
    assert fleetctl("ssh", "--machine", row.machine[:8], "exit", "7").returncode == 7


TLS_NODE_ID = "7e57c0de7e57c0de7e57c0de7e57c0de"
TLS_PORT = 49153


def test_https_with_client_certificates_from_the_host(
    node_image: str, rig_network: Network, rig_etcd: DockerContainer, tmp_path: Path
) -> None:
    certs = write_all(tmp_path / "tls")
    inside = "/etc/fleet/tls"
    environment = {
        "FLEET_LISTEN": f"/var/run/fleet.sock,0.0.0.0:{TLS_PORT}",
        "FLEET_API_CERTFILE": f"{inside}/server.pem",
        "FLEET_API_KEYFILE": f"{inside}/server-key.pem",
        "FLEET_API_CLIENT_CAFILE": f"{inside}/ca.pem",
    }
    container = node_container(
        node_image, rig_network, "tls-node", machine_id=TLS_NODE_ID, environment=environment
    )
    container.with_volume_mapping(str(tmp_path / "tls"), inside, "ro")
    container.with_exposed_ports(TLS_PORT)
    with container as node:
        endpoint = f"https://127.0.0.1:{node.get_exposed_port(TLS_PORT)}"
        flags = [
            f"--ca-file={certs.ca}",
            f"--cert-file={certs.client}",
            f"--key-file={certs.client_key}",
        ]

        def fleetctl(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [str(FLEETCTL), "--endpoint", endpoint, *args],
                capture_output=True, text=True, timeout=WITHIN, check=False,
            )  # fmt: skip

        def listed() -> tuple[bool, str]:
            done = fleetctl(*flags, "list-machines", "--full", "--no-legend")
            return TLS_NODE_ID in done.stdout, done.stderr + fleetd_journal(node)

        wait_for(listed, "the node's machine listed over https with a client certificate")
        anonymous = fleetctl(f"--ca-file={certs.ca}", "list-machines")
        assert anonymous.returncode == 1
        assert "without one signed by its CA" in anonymous.stderr, anonymous.stderr
        stranger = fleetctl(
            f"--ca-file={certs.ca}",
            f"--cert-file={certs.stranger}",
            f"--key-file={certs.stranger_key}",
            "list-machines",
        )
        assert stranger.returncode == 1, stranger.stdout
