"""The `fleetctl` script's entry point: the exact fd-forward line skips the CLI."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
sys.argv = ["fleetctl", *sys.argv[1:]]
from fleetctl.entry import main
code = main()
names = ("typer", "rich", "httpx", "httpx._main", "pygments", "fleetctl.app")
loaded = sorted(m for m in names if sys.modules.get(m) is not None)
print(code, ",".join(loaded))
"""


def probe(*argv: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    return done.stdout.strip()


def test_fd_forward_runs_without_loading_the_cli() -> None:
    assert probe("fd-forward", "/nonexistent/fleet.sock") == "1"  # dial failed, nothing loaded


def test_every_other_command_line_goes_to_the_cli_without_httpx_cli_or_rich() -> None:
    # neither httpx's command line tool nor rich (only a progress bar needs it) is imported
    assert probe("--version").endswith(" fleetctl.app,httpx,typer")
    assert probe("fd-forward").endswith(" fleetctl.app,httpx,typer")
