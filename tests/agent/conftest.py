"""Agent fixtures: keys under the test's own prefix, a fake systemd with its units directory, and
a private D-Bus daemon with the mock systemd on it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agent.systemd.fake import FakeSystemd, FakeUnitManager
from fleetd.registry.keys import Keys
from tests.agent.bus import BusDaemon, MockManager, MockSystemd


@pytest.fixture
def keys(key_prefix: str) -> Keys:
    return Keys(key_prefix)


@pytest.fixture
def units_dir(tmp_path: Path) -> Path:
    return tmp_path / "units"


@pytest.fixture
def systemd() -> FakeSystemd:
    return FakeSystemd()


@pytest.fixture
def manager(units_dir: Path, systemd: FakeSystemd) -> Iterator[FakeUnitManager]:
    fake = FakeUnitManager(units_dir, systemd)
    yield fake
    fake.close()


@pytest.fixture
def bus_daemon() -> Iterator[BusDaemon]:
    daemon = BusDaemon()
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.cleanup()


@pytest.fixture
async def mock_systemd(bus_daemon: BusDaemon) -> AsyncIterator[MockManager]:
    mock = MockSystemd()
    manager = await mock.start(bus_daemon.address)
    yield manager
    await mock.stop()
