"""`fleetctl verify UNIT`: fleet's deprecated signature check; it only says so, and exits 2."""

from __future__ import annotations

import typer

from fleetctl.commands.common import UnitsArgument
from fleetctl.commands.submit import SIGNING_DEPRECATED
from fleetctl.session import Session

EXIT_DEPRECATED = 2


def verify(ctx: typer.Context, units: UnitsArgument = None) -> None:
    """DEPRECATED: verify the signature of a unit (signing is not supported)."""
    session = Session.of(ctx)

    def run_verify() -> int:
        session.out.error(SIGNING_DEPRECATED)
        return EXIT_DEPRECATED

    session.run(run_verify)
