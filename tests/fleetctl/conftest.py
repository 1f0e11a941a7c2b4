"""Fixtures for fleetctl's tests.

The API fleetctl talks to comes from ONE fixture, `api_transport`. Here it is the in-memory
fake (`fake_api.FakeFleet`, a test double of the v1 wire semantics); to run the same command
tests against pyfleet's real API, override `api_transport` (fleetctl's client is synchronous
and `httpx.ASGITransport` is async-only: use the sync transport of a
`starlette.testclient.TestClient(app)`, or serve the app on a unix socket in a thread) and
`fleet` with an object that seeds the real cluster through the same methods (`add_machine`,
`add_unit`, `unplaceable`, `systemd`, `lag`, `requests`).

Time: `wait_clock` (autouse) replaces fleetctl's wait clock with `FakeClock`, whose `sleep`
advances time without sleeping, so blocking commands run instantly and count polls exactly.
Against a real server, override it with a real clock and small `POLL_INTERVAL`/`ATTEMPT_WINDOW`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from fleetctl import wait
from fleetctl.app import main
from tests.fleetctl.fake_api import FakeFleet

MACHINE_A = "113f16a7b1d84f6f8a2a9d5d2b3c2f19"
MACHINE_B = "2c7a0a25e4fb4e9d8d6f7b3d1e9c5a40"
HELLO = """\
[Unit]
Description=Hello World

[Service]
ExecStart=/bin/bash -c "while true; do echo Hello; sleep 1; done"
"""


class FakeClock:
    """A monotonic clock that only moves when slept on."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps = 0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.sleeps += 1


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


Run = Callable[..., Result]


@pytest.fixture(autouse=True)
def wait_clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    clock = FakeClock()
    monkeypatch.setattr(wait, "clock", clock)
    return clock


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FLEETCTL_ENDPOINT", "FLEETCTL_API_TOKEN", "FLEETCTL_OUTPUT", "FLEETCTL_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("FLEETCTL_REQUEST_TIMEOUT", raising=False)


@pytest.fixture
def fleet() -> FakeFleet:
    """The cluster behind the API: two machines, no units."""
    fake = FakeFleet()
    fake.add_machine(MACHINE_A, "172.17.8.103", az="us-west-1b", role="web")
    fake.add_machine(MACHINE_B, "172.17.8.104")
    return fake


@pytest.fixture
def api_transport(fleet: FakeFleet) -> httpx.BaseTransport:
    return fleet.transport()


@pytest.fixture
def run(api_transport: httpx.BaseTransport, capsys: pytest.CaptureFixture[str]) -> Run:
    """Run fleetctl with `argv` against the API; returns exit code, stdout and stderr."""

    def invoke(*argv: str) -> Result:
        code = main(list(argv), transport=api_transport)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return invoke


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A current directory for local unit files."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


GLOBAL = """\
[Unit]
Description=Everywhere

[Service]
ExecStart=/bin/true

[X-Fleet]
Global=true
"""
DB = """\
[Unit]
Description=Database

[Service]
ExecStart=/usr/bin/db

[X-Fleet]
MachineMetadata=role=db
"""
ON_A = "113f16a7.../172.17.8.103"
"""MACHINE_A's legend, as fleet prints it after `on` and in MACHINE/TARGET columns."""


@pytest.fixture
def unit_files(workdir: Path) -> Path:
    """A current directory holding hello.service, g.service (global) and db.service."""
    (workdir / "hello.service").write_text(HELLO)
    (workdir / "g.service").write_text(GLOBAL)
    (workdir / "db.service").write_text(DB)
    return workdir
