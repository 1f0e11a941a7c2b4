"""`fleetctl version`."""

from __future__ import annotations

import json

from fleetd import __version__
from tests.fleetctl.conftest import Result, Run


def test_version(run: Run) -> None:
    assert run("version") == Result(0, f"fleetctl version {__version__}\n", "")


def test_json(run: Run) -> None:
    document = json.loads(run("--output", "json", "version").out)
    assert document == {
        "command": "version",
        "ok": True,
        "version": __version__,
        "errors": [],
        "warnings": [],
    }
