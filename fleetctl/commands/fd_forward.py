"""`fleetctl fd-forward SOCKET`: relay stdin and stdout to a unix socket, as fleet's did.

fleet's `fleetctl --tunnel` runs `fleetctl fd-forward /var/run/fleet.sock` on the node over SSH
and speaks HTTP through it, so this command must exist on every node, with fleet's name and
behaviour (`fleetctl.relay`). This module is the command as the CLI knows it (help, global
flags, `Provide a single argument`); the plain `fleetctl fd-forward PATH` that tunnels run skips
the CLI altogether (`fleetctl.entry`). It never talks to the API and ignores the global flags.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from fleetctl.relay import forward


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
    raise typer.Exit(forward(sockets[0]))
