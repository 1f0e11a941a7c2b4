"""Logs without SSH on real systemd: `fleetctl journal` and `fleetctl status` through node1's API
read a unit's journal on node2, node2's fleetd reading it with journalctl; `--follow` prints a
line written after it began; the node-to-node endpoint refuses requests without the cluster
credential; a unit that is not running gets fleet's message, not a traceback.

The tests share the session's cluster (`cluster` fixture), whose nodes serve the node-to-node
endpoint with the cluster credential as the Compose file configures them."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import time

import pytest

from tests.rig.cluster import (
    CLUSTER_SECRET,
    FLEETCTL,
    PEER_PORT,
    PREFIX,
    SETTLE_WITHIN,
    Cluster,
    service,
)
from tests.rig.nodes import TEST_TIMEOUT, run_in

pytestmark = pytest.mark.timeout(TEST_TIMEOUT)

TRIGGER = "/run/journal-test-trigger"
CHATTY = (
    "/bin/sh -c 'echo journal-line-one; echo journal-line-two; "
    f"while sleep 0.2; do if [ -e {TRIGGER} ]; then rm -f {TRIGGER}; echo written-later; fi; "
    "done'"
)


def start_on_node2(cluster: Cluster, name: str) -> None:
    """Start `name` (the CHATTY service) pinned to node2, and wait until its lines are in
    node2's journal."""
    cluster.write_unit(
        name, service("Chatty", exec_start=CHATTY, MachineID=cluster.machines["node2"])
    )
    cluster.fleetctl("start", name)
    cluster.wait_active_on(name, 1)

    def logged() -> tuple[bool, str]:
        _, output = run_in(
            cluster.nodes["node2"], ["journalctl", "-u", name, "-o", "cat", "--no-pager"]
        )
        return "journal-line-two" in output, output

    cluster.wait(logged, f"{name}'s lines in node2's journal")


def test_journal_of_a_unit_on_node2_through_node1(cluster: Cluster) -> None:
    start_on_node2(cluster, "chatty.service")
    assert cluster.active_on("chatty.service") == {"node2"}

    done = cluster.fleetctl("journal", "--output", "cat", "chatty.service")
    assert "journal-line-one\njournal-line-two\n" in done.stdout
    assert done.stderr == ""

    short = cluster.fleetctl("journal", "--lines", "1", "chatty")
    (line,) = short.stdout.splitlines()
    assert line.endswith(": journal-line-two")
    assert " node2 sh[" in line  # the entry's host is node2, its identifier the unit's shell

    as_json = cluster.fleetctl("journal", "--output", "json", "chatty.service")
    entries = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert {"journal-line-one", "journal-line-two"} <= {e.get("MESSAGE") for e in entries}

    status = cluster.fleetctl("status", "chatty.service")
    assert "     Active: active (running)" in status.stdout
    assert status.stdout.rstrip().endswith(": journal-line-two")


def test_follow_prints_a_line_written_after_it_started(cluster: Cluster) -> None:
    start_on_node2(cluster, "follow.service")
    command = [
        str(FLEETCTL),
        "--endpoint",
        f"unix://{cluster.api_socket}",
        "journal",
        "-f",
        "--output",
        "cat",
        "follow.service",
    ]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cluster.unit_dir
    ) as follower:
        try:
            assert follower.stdout is not None
            os.set_blocking(follower.stdout.fileno(), False)
            seen = read_until(follower, "journal-line-two")
            run_in(cluster.nodes["node2"], ["touch", TRIGGER])
            seen += read_until(follower, "written-later")
            assert seen.index("journal-line-two") < seen.index("written-later")
            assert follower.poll() is None  # still following
            follower.send_signal(signal.SIGINT)
            assert follower.wait(timeout=SETTLE_WITHIN) == 0
            assert follower.stderr is not None
            assert "Traceback" not in follower.stderr.read()
        finally:
            if follower.poll() is None:
                follower.kill()


def read_until(process: subprocess.Popen[str], text: str) -> str:
    """What `process` prints until `text` appears (within the settle deadline)."""
    assert process.stdout is not None
    seen = ""
    deadline = time.monotonic() + SETTLE_WITHIN
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while text not in seen:
            left = deadline - time.monotonic()
            if left <= 0 or process.poll() is not None:
                raise AssertionError(f"{text!r} not printed; printed so far:\n{seen}")
            if selector.select(timeout=left):
                seen += process.stdout.read() or ""
    return seen


def test_a_unit_that_is_not_running(cluster: Cluster) -> None:
    cluster.write_unit("idle.service", service("Idle"))
    cluster.fleetctl("submit", "idle.service")
    done = cluster.fleetctl("journal", "idle.service", check=False)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == "Unit idle.service does not appear to be running.\n"
    missing = cluster.fleetctl("journal", "nope.service", check=False)
    assert (missing.returncode, missing.stderr) == (1, "Unit nope.service does not exist.\n")


PEER_GET = (
    "import sys, httpx\n"
    "headers = {'Authorization': sys.argv[2]} if sys.argv[2] else {}\n"
    "response = httpx.get(sys.argv[1], headers=headers, timeout=5)\n"
    "print(response.status_code, response.text)\n"
)


def test_node_to_node_requests_need_the_cluster_credential(cluster: Cluster) -> None:
    start_on_node2(cluster, "secret.service")
    record = cluster.etcd_get(f"{PREFIX}machines/{cluster.machines['node2']}")
    assert record is not None
    address = record[0]["peerAddress"]
    assert address.endswith(f":{PEER_PORT}")
    url = f"http://{address}/peer/v1/journal/secret.service"

    def ask(authorization: str) -> tuple[int, str]:
        _, output = run_in(
            cluster.nodes["node1"], ["/opt/pyfleet/bin/python", "-c", PEER_GET, url, authorization]
        )
        status, _, body = output.partition(" ")
        return int(status), body

    for authorization in ("", "Bearer wrong", f"Basic {CLUSTER_SECRET}"):
        status, body = ask(authorization)
        assert (status, json.loads(body)) == (
            401,
            {"error": {"code": 401, "message": "missing or wrong cluster credential"}},
        )
    status, body = ask(f"Bearer {CLUSTER_SECRET}")
    assert status == 200
    assert "journal-line-two" in body
