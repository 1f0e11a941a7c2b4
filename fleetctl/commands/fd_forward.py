"""`fleetctl fd-forward SOCKET`: relay stdin and stdout to a unix socket, as fleet's did.

fleet's `fleetctl --tunnel` runs `fleetctl fd-forward /var/run/fleet.sock` on the node over SSH
and speaks HTTP through it, so this command must exist on every node, with fleet's name and
behaviour: bytes from stdin go to the socket, bytes from the socket go to stdout, unchanged.

* It ends when the socket is closed by its server (exit 0), once what it sent is written out.
* At the end of stdin it half-closes the socket (no more requests) and keeps relaying the answers
  until the server closes; fleet stopped at once and could drop an answer still on its way.
* fleet's messages on stderr: `Provide a single argument`, `Failed dialing remote address: ...`
  (exit 1; fleet exited 0 there) and `Encountered error during copy: ...` (exit 1).
* It never talks to the API itself and ignores the global flags.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
from typing import Annotated

import typer

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


def fd_forward(
    ctx: typer.Context,
    sockets: Annotated[list[str] | None, typer.Argument(metavar="SOCKET")] = None,
) -> None:
    """Proxy stdin and stdout to a unix domain socket.

    fleetctl utilizes fd-forward when --tunnel is used and --endpoint is a unix socket. This
    command is not intended to be called by users directly.
    """
    if not sockets or len(sockets) != 1:
        sys.stderr.write("Provide a single argument\n")
        raise typer.Exit(1)
    sys.stdout.flush()
    problem = relay(sockets[0], sys.stdin.fileno(), sys.stdout.fileno())
    if problem is not None:
        sys.stderr.write(problem + "\n")
        raise typer.Exit(1)
    raise typer.Exit(0)
