"""Suite-wide fixtures: a real etcd started by the suite, clients on it, per-test key prefixes.

- `etcd_server` (session): one etcd shared by every test. Tests never stop it;
  they isolate themselves by writing only under their own `key_prefix`.
- `private_etcd` (function): a fresh etcd for tests that kill, pause or
  restart the server.
- `etcd` (function): an EtcdClient on the shared server, created in the test's
  own event loop and closed afterwards (no channel outlives its loop).

A missing etcd binary is an error, not a skip (see devtools/etcd_server.py).

Every test under tests/rig/ is marked `rig` (real systemd in Docker), so `scripts/test --quick`
can leave them out.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import structlog
from hypothesis import settings

from devtools.etcd_server import EtcdServer
from fleetd.registry.client import EtcdClient

# CI explores the same examples on every run (a red CI always means a real, reproducible bug);
# `HYPOTHESIS_PROFILE=deep` explores far more, for a developer hunting planner bugs. No profile
# has a deadline: Hypothesis's 200 ms per example is a timing assertion, and a loaded machine
# (two cores shared with other work) crosses it with no bug at all.
settings.register_profile("dev", max_examples=300, deadline=None)
settings.register_profile("ci", max_examples=300, deadline=None, derandomize=True, print_blob=True)
settings.register_profile("deep", max_examples=5000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


RIG_TESTS = Path(__file__).parent / "rig"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(RIG_TESTS):
            item.add_marker(pytest.mark.rig)


def _running_etcd() -> Iterator[EtcdServer]:
    server = EtcdServer()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[EtcdServer]:
    yield from _running_etcd()


@pytest.fixture
def private_etcd() -> Iterator[EtcdServer]:
    yield from _running_etcd()


@pytest.fixture
async def etcd(etcd_server: EtcdServer) -> AsyncIterator[EtcdClient]:
    client = await EtcdClient.connect([etcd_server.endpoint])
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture(autouse=True)
def default_logging() -> None:
    """structlog as a fresh process has it: `fleetd.cli.main` (run by some tests) configures it
    to print to the stdout of the test that ran it, which pytest has closed since."""
    structlog.reset_defaults()


@pytest.fixture
def key_prefix() -> str:
    """A key prefix no other test uses, e.g. /t/3f2a.../"""
    return f"/t/{uuid.uuid4().hex}/"
