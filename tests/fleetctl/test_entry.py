"""The `fleetctl` script's entry point: the exact fd-forward line skips the CLI."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
sys.argv = ["fleetctl", *sys.argv[1:]]
from fleetctl.entry import main
code = main()
loaded = sorted(m for m in ("typer", "rich", "httpx", "fleetctl.app") if m in sys.modules)
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


def test_every_other_command_line_goes_to_the_cli() -> None:
    assert probe("--version").endswith("fleetctl.app,httpx,rich,typer")
    assert probe("fd-forward").endswith("fleetctl.app,httpx,rich,typer")
