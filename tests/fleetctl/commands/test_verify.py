"""`fleetctl verify`: the deprecation warning, exit 2."""

from __future__ import annotations

import json

from tests.fleetctl.conftest import Result, Run
from tests.fleetctl.fake_api import FakeFleet

WARNING = "WARNING: The signed/verified units feature is DEPRECATED and cannot be used.\n"


def test_verify_is_deprecated(run: Run, fleet: FakeFleet) -> None:
    assert run("verify", "hello.service") == Result(2, "", WARNING)
    assert fleet.requests == []


def test_json(run: Run) -> None:
    result = run("--output", "json", "verify", "hello.service")
    assert result.code == 2
    assert json.loads(result.out)["errors"] == [WARNING.strip()]
