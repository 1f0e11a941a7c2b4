"""What putting a pod on the cluster network adds to its start: `fleetpod.network.connect_pod`
(a network namespace, a veth pair to the node's bridge, the pod's address, MTU and default
route) with the address taken from `fleetpod.ipam`, then `disconnect_pod`, for `--pods` pods one
after another on a scratch "node" (a network namespace of its own; root), plus the cost of
importing the netlink code in a fresh fleet-pod process (pyroute2; stage0 imports it only for a
pod that joins the network).

Prints JSON and writes `bench/results/pod_network.json`.

    PYTHONPATH=. .venv/bin/python -m bench.pod_network --pods 50
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from ipaddress import IPv4Interface, IPv4Network
from pathlib import Path
from typing import Any

from devtools.netns import Namespaces, in_netns
from fleetpod.ipam import AddressBook, NodeNetwork
from fleetpod.network import connect_pod, disconnect_pod


def summary(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 2),
        "p90_ms": round(ordered[int(len(ordered) * 0.9) - 1] * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
        "first_ms": round(seconds[0] * 1000, 2),
    }


def import_cost(package: str, runs: int = 5) -> float:
    """Median seconds a fresh interpreter spends importing `package` (`-X importtime`)."""
    took = []
    for _ in range(runs):
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", f"import {package}"],
            capture_output=True,
            text=True,
            check=True,
        )
        line = next(x for x in done.stderr.splitlines() if x.rstrip().endswith(f"| {package}"))
        took.append(int(line.split("|")[1]) / 1e6)
    return statistics.median(took)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pods", type=int, default=50)
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.inside:  # run again inside a scratch node namespace, as fleet-pod runs on a node
        namespaces = Namespaces()
        try:
            node_ns = namespaces.create("bench")
            command = [sys.executable, "-m", "bench.pod_network", "--inside"]
            subprocess.run(in_netns(node_ns, *command, "--pods", str(args.pods)), check=True)
        finally:
            namespaces.cleanup()
        return
    node = NodeNetwork(IPv4Network("10.244.0.0/16"), IPv4Interface("10.244.7.1/24"), 1450)
    connect, disconnect = [], []
    with tempfile.TemporaryDirectory() as data:
        book = AddressBook(Path(data))
        pods = [str(uuid.uuid4()) for _ in range(args.pods)]
        for pod in pods:
            start = time.perf_counter()
            address = book.allocate(node, pod)
            connect_pod(node, pod, address)
            connect.append(time.perf_counter() - start)
        for pod in pods:
            start = time.perf_counter()
            disconnect_pod(pod)
            book.release(pod)
            disconnect.append(time.perf_counter() - start)
    result: dict[str, Any] = {
        "pods": args.pods,
        "connect (address, namespace, veth, bridge port, address, route)": summary(connect),
        "disconnect": summary(disconnect),
        "import pyroute2 in a fresh process, ms": round(import_cost("pyroute2") * 1000, 1),
    }
    out = Path(__file__).parent / "results" / "pod_network.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
