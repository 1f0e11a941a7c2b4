"""The agent's side of the pod-address handoff: a real watch (inotify, through watchfiles) on a
temporary directory, files written as fleet-pod writes them (atomically, by rename)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.pod_addresses import PodAddresses
from fleetd.core.pod_address import PodAddress, encode_pod_address
from fleetd.runtime.files import write_atomically
from tests.agent.helpers import background
from tests.engine.cluster import wait_until

UUID = "6f1d3c2a-0b4e-4a7f-9c1d-2e3f4a5b6c7d"


def hand_over(directory: Path, unit: str, address: str) -> None:
    write_atomically(directory / unit, encode_pod_address(PodAddress(address, UUID)))


async def is_dir(path: Path) -> bool:
    return await asyncio.to_thread(path.is_dir)


class Seen:
    """The units `on_change` reported, and a way to wait for one."""

    def __init__(self) -> None:
        self.units: list[set[str]] = []

    def __call__(self, units: set[str]) -> None:
        self.units.append(set(units))

    async def wait_for(self, unit: str, addresses: PodAddresses, address: str) -> None:
        async def reported() -> bool:
            return any(unit in batch for batch in self.units) and addresses.get(unit) == address

        await wait_until(reported, f"{unit} reported with address {address!r}")
        self.units.clear()


async def test_addresses_appear_change_and_go_as_fleet_pod_writes_them(tmp_path: Path) -> None:
    directory = tmp_path / "pod-addresses"  # missing: the watcher makes it
    addresses, seen = PodAddresses(directory), Seen()
    async with background(addresses.run(seen)):
        await wait_until(lambda: is_dir(directory), "the directory made")
        hand_over(directory, "web.service", "10.244.3.2")
        await seen.wait_for("web.service", addresses, "10.244.3.2")
        hand_over(directory, "web.service", "10.244.3.7")  # the unit's next pod
        await seen.wait_for("web.service", addresses, "10.244.3.7")
        (directory / "web.service").unlink()
        await seen.wait_for("web.service", addresses, "")
        assert addresses.get("db.service") == ""  # no file: no address, no read


async def test_files_already_there_are_read_at_start_and_bad_ones_count_as_none(
    tmp_path: Path,
) -> None:
    hand_over(tmp_path, "web.service", "10.244.3.2")
    hand_over(tmp_path, "db.service", "10.244.3.3")
    (tmp_path / "bad.service").write_text("10.244.3.4\n")  # not a record
    (tmp_path / ".web.service.x.tmp").write_text("{}")  # a writer's temporary file
    addresses, seen = PodAddresses(tmp_path), Seen()
    async with background(addresses.run(seen)):
        await seen.wait_for("db.service", addresses, "10.244.3.3")
        assert addresses.get("web.service") == "10.244.3.2"
        assert addresses.get("bad.service") == ""
        (tmp_path / "bad.service").write_text(  # rewritten in place: the close is the event
            encode_pod_address(PodAddress("10.244.3.4", UUID)).decode()
        )
        await seen.wait_for("bad.service", addresses, "10.244.3.4")


async def test_a_removed_directory_is_made_and_watched_again(tmp_path: Path) -> None:
    addresses, seen = PodAddresses(tmp_path / "dir"), Seen()
    async with background(addresses.run(seen)):
        await wait_until(lambda: is_dir(tmp_path / "dir"), "the directory made")
        hand_over(tmp_path / "dir", "web.service", "10.244.3.2")
        await seen.wait_for("web.service", addresses, "10.244.3.2")
        (tmp_path / "dir" / "web.service").unlink()
        (tmp_path / "dir").rmdir()
        await seen.wait_for("web.service", addresses, "")
        await wait_until(lambda: is_dir(tmp_path / "dir"), "the directory made again")
        hand_over(tmp_path / "dir", "db.service", "10.244.3.3")
        await seen.wait_for("db.service", addresses, "10.244.3.3")


async def test_without_a_directory_it_holds_no_addresses_and_waits(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    addresses = PodAddresses(blocker / "pod-addresses")  # cannot be made under a file
    task = asyncio.create_task(addresses.run(Seen()))
    await asyncio.sleep(0.05)
    assert not task.done()  # lives on, so the publisher's task group does too
    assert addresses.get("web.service") == ""
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
