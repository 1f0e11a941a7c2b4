"""The relay behind `fleetctl fd-forward SOCKET`, standard library only.

`fleetctl --tunnel` (fleet's and pyfleet's) runs `fleetctl fd-forward /var/run/fleet.sock` on the
node for every API connection, so its start-up is on the path of every tunnelled request: the
entry point (`fleetctl.entry`) runs this module directly for that exact command line, without
loading the CLI (typer, rich, httpx), which takes several times as long to import.

* Bytes from stdin go to the socket and bytes from the socket to stdout, unchanged.
* It ends when the socket is closed by its server (exit 0), once what it sent is written out.
* At the end of stdin it half-closes the socket (no more requests) and keeps relaying the answers
  until the server closes; fleet stopped at once and could drop an answer still on its way.
* fleet's messages on stderr: `Failed dialing remote address: ...` (exit 1; fleet exited 0
  there) and `Encountered error during copy: ...` (exit 1).
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading

CHUNK = 65536


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def relay(path: str, stdin: int, stdout: int) -> str | None:
    """Relay between the descriptors and the socket at `path` until the socket's server closes
    it; returns the error that stopped it, or None."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        return f"Failed dialing remote address: {exc}"
    failures: list[str] = []

    def upstream() -> None:
        try:
            while data := os.read(stdin, CHUNK):
                sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            failures.append(f"Encountered error during copy: {exc}")
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes the downstream copy

    # daemon: a relay whose server has closed ends even while stdin stays open (ssh's does)
    threading.Thread(target=upstream, name="fd-forward-stdin", daemon=True).start()
    try:
        while data := sock.recv(CHUNK):
            _write_all(stdout, data)
    except OSError as exc:
        failures.append(f"Encountered error during copy: {exc}")
    finally:
        sock.close()
    return failures[0] if failures else None


def forward(path: str) -> int:
    """`fleetctl fd-forward PATH` on this process's stdin and stdout; the exit code."""
    sys.stdout.flush()
    problem = relay(path, sys.stdin.fileno(), sys.stdout.fileno())
    if problem is not None:
        sys.stderr.write(problem + "\n")
        return 1
    return 0
