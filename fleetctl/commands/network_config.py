"""`fleetctl network-config [CONFIG]`: show the container network's configuration, or set it.

Without an argument it prints the stored configuration as flannel's JSON with every default
filled in (`--raw`: as written); a stored configuration the agents refuse prints its error and
exits 1. With one, it stores CONFIG (flannel's JSON; `-` reads it from standard input, `@FILE`
from a file): the API checks it first, and a bad one is refused with the field named, nothing
written (exit 1). Machines take a new configuration up from their watch.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from fleetctl.client import FleetctlError
from fleetctl.network import get_config, set_config
from fleetctl.session import Session


def _read(argument: str) -> str:
    if argument == "-":
        return sys.stdin.read()
    if argument.startswith("@"):
        return Path(argument[1:]).read_text()
    return argument


def network_config(
    ctx: typer.Context,
    config: Annotated[
        str | None,
        typer.Argument(help="flannel's JSON to store; '-' reads stdin, '@FILE' a file."),
    ] = None,
    raw: Annotated[bool, typer.Option("--raw", help="Show the JSON as stored.")] = False,
) -> None:
    """Show or set the container network's configuration (flannel's JSON)."""
    session = Session.of(ctx)

    def show(document: dict[str, Any]) -> None:
        if session.out.json:
            session.out.put("network", document)
        else:
            shown = document.get("config") if raw else document.get("effective")
            session.out.write(json.dumps(shown, indent=2) + "\n")

    def run_network_config() -> int:
        if config is None:
            try:
                document = get_config(session.client)
            except FleetctlError as exc:
                session.out.error(f"Error retrieving the network configuration ({exc})")
                return 1
            if document is None:
                session.out.error("No network configuration is set")
                return 1
            if "error" in document and not raw:
                session.out.error(
                    f"The stored network configuration is refused: {document['error']}"
                )
                return 1
            show(document)
            return 0
        try:
            text = _read(config)
        except OSError as exc:
            session.out.error(f"Cannot read the network configuration: {exc}")
            return 1
        try:
            parsed = json.loads(text)
        except ValueError as exc:
            session.out.error(f"Network configuration is not JSON: {exc}")
            return 1
        try:
            document = set_config(session.client, parsed)
        except FleetctlError as exc:
            session.out.error(f"Error setting the network configuration ({exc})")
            return 1
        show(document)
        return 0

    session.run(run_network_config)
