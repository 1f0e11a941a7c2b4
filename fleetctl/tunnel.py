"""fleet's `--tunnel`: the API reached through SSH, with the system's `ssh` client.

Role: build the `ssh` command lines fleet's flags describe, and `CommandRelay`, a private unix
socket whose every connection is handed to a fresh command as its stdin and stdout. httpx talks
to the relay's socket like any unix socket, so every API call (any command, any route) goes
through the tunnel unchanged.

* A unix endpoint (`unix:///var/run/fleet.sock`, the default) is reached as fleet reaches it:
  `ssh ... HOST fleetctl fd-forward /var/run/fleet.sock` on the node. A TCP endpoint is reached
  with `ssh -W host:port` (fleet's direct-tcpip channel); TLS to it still ends at fleetd.
* fleet's flags: `--tunnel host[:port]` (port 22 when none is given), `--ssh-username` (`core`),
  `--strict-host-key-checking` (true: hosts are checked against `--known-hosts-file`, by default
  fleet's `~/.fleetctl/known_hosts`, and ssh asks before adding a new one; false: no check and no
  file), `--ssh-timeout` (seconds to connect, 10). Authentication is ssh's own: the agent, keys,
  `~/.ssh/config`.
* The OpenSSH client is what fleet users already have, configure and trust (agents, `ProxyJump`,
  hardware keys); fleetctl adds no SSH library. ssh's own messages go to fleetctl's stderr.
* The relay's socket lives in a directory only this user can enter (mode 0700), removed on
  `close`; commands still running then get their stdin closed, a bounded wait, then SIGTERM.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

DEFAULT_SSH_USER: Final = "core"
DEFAULT_KNOWN_HOSTS: Final = "~/.fleetctl/known_hosts"
DEFAULT_SSH_TIMEOUT: Final = 10.0
DEFAULT_SSH_PORT: Final = 22
CLOSE_WAIT: Final = 2.0
"""Seconds a relayed command gets to end after fleetctl is done, before SIGTERM."""


class TunnelError(Exception):
    """A `--tunnel` or SSH setting fleetctl cannot use (printed as the run's error)."""


@dataclass(frozen=True, slots=True)
class SshOptions:
    """fleet's global SSH flags."""

    user: str = DEFAULT_SSH_USER
    known_hosts_file: str = DEFAULT_KNOWN_HOSTS
    strict_host_key_checking: bool = True
    timeout: float = DEFAULT_SSH_TIMEOUT


def split_address(address: str, default_port: int = DEFAULT_SSH_PORT) -> tuple[str, int]:
    """`host`, `host:port`, `[v6]` or `[v6]:port` as (host, port); fleet's rule: no port, 22."""
    text = address.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise TunnelError(f"invalid address {address!r}")
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""  # a bare host, or a bare IPv6 address
    if not host or host.startswith("-"):
        raise TunnelError(f"invalid address {address!r}: no host")
    if not port:
        return host, default_port
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise TunnelError(f"invalid address {address!r}: bad port {port!r}")
    return host, int(port)


def ssh_argv(
    options: SshOptions,
    address: str,
    remote: Sequence[str] = (),
    *,
    forward_to: str = "",
    tty: bool = False,
    forward_agent: bool = False,
    default_port: int = DEFAULT_SSH_PORT,
) -> list[str]:
    """The `ssh` command that reaches `address` and runs `remote` there (or, with `forward_to`,
    `host:port`, relays to it with `-W`)."""
    ssh = shutil.which("ssh")
    if ssh is None:
        raise TunnelError("cannot find the ssh command (install OpenSSH's client)")
    host, port = split_address(address, default_port)
    argv = [ssh, "-p", str(port), "-l", options.user]
    argv += ["-o", f"ConnectTimeout={max(1, math.ceil(options.timeout))}"]
    if options.strict_host_key_checking:
        known_hosts = Path(options.known_hosts_file).expanduser()
        with contextlib.suppress(OSError):
            known_hosts.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        argv += ["-o", "StrictHostKeyChecking=ask", "-o", f"UserKnownHostsFile={known_hosts}"]
    else:
        argv += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
        argv += ["-o", "LogLevel=ERROR"]  # no "Permanently added" line for every connection
    if forward_agent:
        argv.append("-A")
    if tty:
        argv.append("-t")
    if forward_to:
        argv += ["-W", forward_to]
    return [*argv, host, *remote]


class CommandRelay:
    """A unix socket whose connections each become the stdin and stdout of a new `argv`."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = list(argv)
        self._directory = tempfile.mkdtemp(prefix="fleetctl-tunnel-")  # mode 0700
        self.path = os.path.join(self._directory, "api.sock")
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.path)
        self._listener.listen(16)
        self._children: list[subprocess.Popen[bytes]] = []
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._accept, name="tunnel-relay", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # closed
            with conn, self._lock:
                if self._closed:
                    return
                try:
                    child = subprocess.Popen(
                        self.argv, stdin=conn.fileno(), stdout=conn.fileno(), close_fds=True
                    )
                except OSError:
                    continue  # the client sees its connection closed, ssh's error is ours
                self._children.append(child)

    def close(self) -> None:
        """Stop accepting, let the commands end (their stdin is closed by now), clean up."""
        with self._lock:
            self._closed = True
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as wake:
            wake.connect(self.path)  # the accept loop sees `_closed` and returns
        self._thread.join(CLOSE_WAIT)
        self._listener.close()
        for child in self._children:
            try:
                child.wait(CLOSE_WAIT)
            except subprocess.TimeoutExpired:
                child.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(CLOSE_WAIT)
                if child.poll() is None:
                    child.kill()
                    child.wait()
        shutil.rmtree(self._directory, ignore_errors=True)
