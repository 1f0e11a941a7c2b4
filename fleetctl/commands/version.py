"""`fleetctl version` (also `--version` and `-v`): `fleetctl version <v>`, exit 0."""

from __future__ import annotations

import typer

from fleetctl.session import Session
from fleetd import __version__


def version_line() -> str:
    return f"fleetctl version {__version__}"


def version(ctx: typer.Context) -> None:
    """Print the version and exit."""
    session = Session.of(ctx)

    def run_version() -> int:
        session.out.say(version_line())
        session.out.put("version", __version__)
        return 0

    session.run(run_version)
