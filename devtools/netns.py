"""Network namespaces for tests: scratch "machines" joined by veth links, and a TCP exchange
between processes in them. Needs root (the suite runs as root).

`Namespaces` creates each namespace with a unique name and deletes every one it made (and so
every link inside) on `cleanup()`, even after a failed test. `link(a, b, ...)` joins two
namespaces with a veth pair, each end up with its address: the "L2 segment" between machines.
`serve_tcp`/`fetch_tcp` run a one-shot TCP server and client in namespaces (through `ip netns
exec`, test scaffolding only), for a real exchange across the links under test.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from ipaddress import IPv4Interface

from pyroute2 import IPRoute, netns

_SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1)
print("ready", flush=True)
c, peer = s.accept(); data = c.recv(100)
c.sendall(b"hello " + data + b" from " + peer[0].encode()); c.close()
"""
_CLIENT = """
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
c.sendall(sys.argv[3].encode()); print(c.recv(200).decode())
"""


class Namespaces:
    """Scratch network namespaces, all removed by `cleanup()`."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def create(self, label: str) -> str:
        name = f"pyf-{label}-{uuid.uuid4().hex[:8]}"
        netns.create(name)
        self.names.append(name)
        with IPRoute(netns=name) as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        return name

    def link(self, a: str, a_address: str, b: str, b_address: str, name: str = "eth0") -> None:
        """A veth pair `name` between `a` and `b`, each end up with its address (CIDR)."""
        peer = f"p{uuid.uuid4().hex[:10]}"
        with IPRoute(netns=a) as ipr:
            ipr.link("add", ifname=name, kind="veth", peer=peer)
            ipr.link("set", index=ipr.link_lookup(ifname=peer)[0], net_ns_fd=b)
            _address_up(ipr, name, a_address)
        with IPRoute(netns=b) as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname=peer)[0], ifname=name)
            _address_up(ipr, name, b_address)

    def cleanup(self) -> None:
        for name in self.names:
            if name in netns.listnetns():
                netns.remove(name)
        self.names.clear()


def _address_up(ipr: IPRoute, ifname: str, address: str) -> None:
    interface = IPv4Interface(address)
    index = ipr.link_lookup(ifname=ifname)[0]
    ipr.addr("add", index=index, address=str(interface.ip), prefixlen=interface.network.prefixlen)
    ipr.link("set", index=index, state="up")


def in_netns(name: str, *argv: str) -> list[str]:
    """`argv` run inside namespace `name`."""
    return ["ip", "netns", "exec", name, *argv]


@contextmanager
def serve_tcp(name: str, address: str, port: int) -> Iterator[subprocess.Popen[str]]:
    """A one-shot TCP server in namespace `name`, listening once this returns."""
    server = subprocess.Popen(
        in_netns(name, sys.executable, "-c", _SERVER, address, str(port)),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready"
        yield server
    finally:
        server.kill()
        server.wait()
        if server.stdout is not None:
            server.stdout.close()


def fetch_tcp(name: str, address: str, port: int, message: str) -> str:
    """The server's answer to `message`, from a client in namespace `name`."""
    result = subprocess.run(
        in_netns(name, sys.executable, "-c", _CLIENT, address, str(port), message),
        capture_output=True,
        text=True,
        timeout=20,
        env={**os.environ},
        check=False,
    )
    if result.returncode != 0:
        raise ConnectionError(f"no answer from {address}:{port} in {name}: {result.stderr}")
    return result.stdout.strip()
