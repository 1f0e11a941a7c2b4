"""Pod-to-pod throughput and latency across two "nodes" against node-to-node, on this kernel.

Two scratch network namespaces stand for two machines, joined by a veth pair (their L2 link,
MTU 1500); each holds the agent's routes for the backend (`agent.network.netlink`, as the agent
applies them) and one pod connected by `fleetpod.network`. Measured with a Python TCP sender
and receiver (1 MiB writes, `--seconds` each) and a request/response loop (1-byte messages,
`--round-trips`), between:

* the two nodes' own addresses (the baseline: "host to host"),
* the two pods over `vxlan`, and over `host-gw`.

Not the Docker rig: the rig's nodes add Docker's bridge and, here, run beside other work on 2
cores; the namespaces isolate what the cluster network itself costs. Root. Prints JSON and
writes `bench/results/pod_throughput.json`.

    PYTHONPATH=. .venv/bin/python -m bench.pod_throughput --seconds 3 --round-trips 2000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import uuid
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Any

from agent.network.executor import apply_network_tasks
from agent.network.netlink import NetlinkKernel
from agent.network.plan import desired_network, plan_changes, vtep_mac
from devtools.netns import Namespaces, in_netns
from fleetd.core.network import SubnetLease, parse_network_config
from fleetpod.ipam import NodeNetwork
from fleetpod.network import connect_pod, disconnect_pod, netns_name

NETWORK = IPv4Network("10.244.0.0/16")
PORT = 5201

_SERVER = r"""
import socket, sys, time
mode, address, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((address, port)); s.listen(1); print("ready", flush=True)
c, _ = s.accept()
if mode == "bulk":
    total, start, buf = 0, None, bytearray(1 << 20)
    while True:
        n = c.recv_into(buf)
        if not n:
            break
        if start is None:
            start = time.perf_counter()
        total += n
    print(f"{total} {time.perf_counter() - start}")
else:
    while True:
        data = c.recv(1)
        if not data:
            break
        c.sendall(data)
"""

_CLIENT = r"""
import socket, sys, time, statistics
mode, address, port, amount = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
c = socket.create_connection((address, port))
if mode == "bulk":
    chunk, end = b"x" * (1 << 20), time.perf_counter() + amount
    while time.perf_counter() < end:
        c.sendall(chunk)
    c.close()
else:
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    took = []
    for _ in range(int(amount)):
        start = time.perf_counter(); c.sendall(b"x"); c.recv(1)
        took.append(time.perf_counter() - start)
    c.close()
    took.sort()
    print(f"{statistics.median(took)} {took[int(len(took) * 0.99) - 1]}")
"""


def exchange(mode: str, server_ns: str, client_ns: str, address: str, amount: float) -> str:
    server = subprocess.Popen(
        in_netns(server_ns, sys.executable, "-c", _SERVER, mode, address, str(PORT)),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready"
        client = subprocess.run(
            in_netns(
                client_ns, sys.executable, "-c", _CLIENT, mode, address, str(PORT), str(amount)
            ),
            capture_output=True,
            text=True,
            check=True,
            timeout=amount + 60 if mode == "bulk" else 120,
        )
        out, _ = server.communicate(timeout=60)
        return out.strip() if mode == "bulk" else client.stdout.strip()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        if server.stdout is not None:
            server.stdout.close()


def measure(
    server_ns: str, client_ns: str, address: str, seconds: float, trips: int
) -> dict[str, Any]:
    total, took = exchange("bulk", server_ns, client_ns, address, seconds).split()
    median, p99 = exchange("rr", server_ns, client_ns, address, trips).split()
    return {
        "throughput_gbit_s": round(int(total) * 8 / float(took) / 1e9, 2),
        "round_trip_median_us": round(float(median) * 1e6, 1),
        "round_trip_p99_us": round(float(p99) * 1e6, 1),
    }


def pods_on(kind: str, namespaces: Namespaces, seconds: float, trips: int) -> dict[str, Any]:
    config = parse_network_config(json.dumps({"Network": str(NETWORK), "Backend": {"Type": kind}}))
    one, two = namespaces.create("n1"), namespaces.create("n2")
    namespaces.link(one, "192.168.77.1/24", two, "192.168.77.2/24")
    extra = (1, vtep_mac("m1")), (1, vtep_mac("m2"))
    leases = [
        SubnetLease(
            IPv4Network(f"10.244.{n}.0/24"),
            IPv4Address(f"192.168.77.{n}"),
            kind,
            *(extra[n - 1] if kind == "vxlan" else ()),
        )
        for n in (1, 2)
    ]
    pods = []
    try:
        for n, (node, own) in enumerate(((one, leases[0]), (two, leases[1])), start=1):
            subprocess.run(in_netns(node, "sysctl", "-qw", "net.ipv4.ip_forward=1"), check=True)
            kernel = NetlinkKernel(node)
            desired = desired_network(config, own, leases)
            apply_network_tasks(kernel, plan_changes(kernel.observe(NETWORK, "flannel.1"), desired))
            pod = str(uuid.uuid4())
            pods.append((pod, node))
            view = NodeNetwork(NETWORK, IPv4Interface(f"10.244.{n}.1/24"), config.backend.mtu(1500))
            connect_pod(view, pod, IPv4Interface(f"10.244.{n}.2/24"), host_netns=node)
        result = {
            "pod_to_pod": measure(
                netns_name(pods[1][0]), netns_name(pods[0][0]), "10.244.2.2", seconds, trips
            )
        }
        if kind == "vxlan":  # the baseline, on the same pair of nodes
            result["host_to_host"] = measure(two, one, "192.168.77.2", seconds, trips)
        return result
    finally:
        for pod, node in pods:
            disconnect_pod(pod, host_netns=node)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--round-trips", type=int, default=2000)
    args = parser.parse_args()
    result: dict[str, Any] = {}
    for kind in ("vxlan", "host-gw"):
        namespaces = Namespaces()
        try:
            result[kind] = pods_on(kind, namespaces, args.seconds, args.round_trips)
        finally:
            namespaces.cleanup()
    base = result["vxlan"]["host_to_host"]["throughput_gbit_s"]
    for kind in ("vxlan", "host-gw"):
        pod = result[kind]["pod_to_pod"]["throughput_gbit_s"]
        result[kind]["pod_throughput_vs_host"] = round(pod / base, 2) if base else None
    out = Path(__file__).parent / "results" / "pod_throughput.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
