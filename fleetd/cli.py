"""The `fleetd` command: read the configuration, set up logging, serve until a signal."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence

from fleetd import __version__
from fleetd.config import Config, ConfigError, help_text, load_config
from fleetd.runtime.limits import raise_open_files_limit
from fleetd.runtime.logs import configure_logging
from fleetd.runtime.supervise import install_signal_handlers
from fleetd.wiring import MachineIdError, serve


async def _run(config: Config) -> None:
    stop = asyncio.Event()
    install_signal_handlers(stop)
    await serve(config, stop)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `fleetd` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        config = load_config(args, os.environ)
    except ConfigError as exc:
        sys.stderr.write(f"fleetd: {exc}\n")
        return 2
    if config.show_help:
        sys.stdout.write(help_text())
        return 0
    if config.show_version:
        sys.stdout.write(f"fleetd version {__version__}\n")
        return 0
    configure_logging(config.verbosity)
    raise_open_files_limit()  # systemd's soft limit of 1,024 is for select() users; fleetd is not
    try:
        asyncio.run(_run(config))
    except MachineIdError as exc:
        sys.stderr.write(f"fleetd: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
