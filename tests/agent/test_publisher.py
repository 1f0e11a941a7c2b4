"""The state publisher on a real etcd with the fake systemd: states follow systemd's changes, on
the heart's lease, coalesced, removed with their unit, and not rewritten after a restart."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from agent.heart import Heart
from agent.publisher import TXNS_IN_FLIGHT, StatePublisher
from agent.systemd.fake import FakeSystemd, FakeUnitManager
from agent.systemd.port import Job
from fleetd.core.model import Machine
from fleetd.core.pod_address import PodAddress, encode_pod_address
from fleetd.registry.client import Compare, Delete, EtcdClient, Put, TxnResult
from fleetd.registry.codec import UnitStateRecord, decode_state
from fleetd.registry.keys import Keys
from fleetd.runtime.files import write_atomically
from tests.agent.helpers import MACHINE, background, service, states
from tests.engine.cluster import wait_until


@contextlib.asynccontextmanager
async def publishing(
    etcd: EtcdClient, keys: Keys, manager: FakeUnitManager, *, ttl: int = 10
) -> AsyncIterator[tuple[Heart, StatePublisher]]:
    heart = Heart(etcd, keys, Machine(MACHINE), ttl=ttl)
    publisher = StatePublisher(etcd, keys, MACHINE, manager, heart, clock=lambda: 1000.0)
    async with background(heart.run()), background(publisher.run()):
        yield heart, publisher


async def wait_states(etcd: EtcdClient, keys: Keys, expected: dict[str, tuple[str, str]]) -> None:
    async def match() -> bool:
        return await states(etcd, keys) == expected

    await wait_until(match, f"published states {expected}")


async def test_states_follow_systemd(
    etcd: EtcdClient, keys: Keys, manager: FakeUnitManager, systemd: FakeSystemd
) -> None:
    manager.seed("web.service", service())
    async with publishing(etcd, keys, manager) as (heart, _):
        await wait_states(etcd, keys, {"web.service": ("active", "running")})
        kv = await etcd.get(keys.state(MACHINE, "web.service"))
        assert kv is not None
        assert kv.lease == (await heart.wait_lease()).id
        record = decode_state(kv.key, kv.value)
        assert (record.load_state, record.since) == ("loaded", 1000.0)
        assert record.hash == (await manager.list_unit_files())["web.service"]

        systemd.crash("web.service")
        await wait_states(etcd, keys, {"web.service": ("failed", "failed")})

        await manager.write_unit_file("db.service", service())  # written, not yet linked
        await wait_states(
            etcd, keys, {"web.service": ("failed", "failed"), "db.service": ("inactive", "dead")}
        )
        await manager.remove_unit_file("web.service")
        await wait_states(etcd, keys, {"db.service": ("inactive", "dead")})
        await etcd.lease_revoke((await heart.wait_lease()).id)


async def test_a_refused_unit_is_published_with_systemds_reason(
    etcd: EtcdClient, keys: Keys, manager: FakeUnitManager
) -> None:
    manager.seed(
        "noexec.service", "[Unit]\nDescription=no ExecStart\n", active="inactive", sub="dead"
    )
    async with publishing(etcd, keys, manager) as (heart, _):
        await wait_states(etcd, keys, {"noexec.service": ("inactive", "dead")})
        kv = await etcd.get(keys.state(MACHINE, "noexec.service"))
        assert kv is not None
        record = decode_state(kv.key, kv.value)
        assert record.load_state == "bad-setting"
        assert record.load_error.startswith("Unit noexec.service has a bad unit file setting.")
        await etcd.lease_revoke((await heart.wait_lease()).id)


async def test_a_burst_of_changes_to_a_unit_is_one_write(
    etcd: EtcdClient, keys: Keys, manager: FakeUnitManager, systemd: FakeSystemd
) -> None:
    manager.seed("web.service", service())
    async with publishing(etcd, keys, manager) as (heart, publisher):
        await wait_states(etcd, keys, {"web.service": ("active", "running")})
        writes = publisher.writes
        systemd.stop("web.service")  # deactivating, inactive
        systemd.start("web.service")  # activating, active
        for _ in range(20):
            systemd.touch("web.service")
        systemd.crash("web.service")  # failed
        await wait_states(etcd, keys, {"web.service": ("failed", "failed")})
        passes = publisher.loop.passes
        systemd.touch("web.service")  # a signal without a change: read, not written

        async def another_pass() -> bool:
            return publisher.loop.passes > passes

        await wait_until(another_pass, "the publisher to look again")
        assert publisher.writes == writes + 1
        assert manager.unit_state_calls[-1] == frozenset({"web.service"})  # only the dirty unit
        await etcd.lease_revoke((await heart.wait_lease()).id)


async def test_a_restarted_publisher_rewrites_nothing(
    etcd: EtcdClient, keys: Keys, manager: FakeUnitManager
) -> None:
    manager.seed("web.service", service())
    manager.seed("db.service", service())
    async with publishing(etcd, keys, manager):
        await wait_states(
            etcd, keys, {"web.service": ("active", "running"), "db.service": ("active", "running")}
        )
    before = await etcd.get(keys.state(MACHINE, "web.service"))
    async with publishing(etcd, keys, manager) as (heart, second):

        async def looked() -> bool:
            return second.loop.passes >= 1

        await wait_until(looked, "the restarted publisher's first pass")
        assert second.writes == 0
        assert await etcd.get(keys.state(MACHINE, "web.service")) == before
        await etcd.lease_revoke((await heart.wait_lease()).id)


async def test_a_new_lease_gets_every_state_again(
    etcd: EtcdClient, keys: Keys, manager: FakeUnitManager
) -> None:
    manager.seed("web.service", service())
    async with publishing(etcd, keys, manager, ttl=2) as (heart, _):
        await wait_states(etcd, keys, {"web.service": ("active", "running")})
        old = (await heart.wait_lease()).id
        await etcd.lease_revoke(old)  # the machine record and the state go with it

        async def republished() -> bool:
            kv = await etcd.get(keys.state(MACHINE, "web.service"))
            return kv is not None and kv.lease not in (0, old)

        await wait_until(republished, "the state to be written on the new lease")
        await etcd.lease_revoke((await heart.wait_lease()).id)


async def test_many_states_at_once_go_out_in_a_few_transactions_side_by_side(
    etcd: EtcdClient, keys: Keys, manager: FakeUnitManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = [f"u{i:03d}.service" for i in range(600)]
    for name in names:
        manager.seed(name, service())
    txn = etcd.txn
    sizes: list[int] = []
    in_flight = 0
    most = 0

    async def counting_txn(
        compares: Sequence[Compare], success: Sequence[Put | Delete], *args: Any, **kwargs: Any
    ) -> TxnResult:
        nonlocal in_flight, most
        sizes.append(len(success))
        in_flight += 1
        most = max(most, in_flight)
        try:
            return await txn(compares, success, *args, **kwargs)
        finally:
            in_flight -= 1

    monkeypatch.setattr(etcd, "txn", counting_txn)
    async with publishing(etcd, keys, manager) as (heart, _):
        await wait_states(etcd, keys, dict.fromkeys(names, ("active", "running")))
        assert sorted(sizes, reverse=True) == [128, 128, 128, 128, 88]
        assert most == TXNS_IN_FLIGHT  # side by side, and no more than that at once
        await etcd.lease_revoke((await heart.wait_lease()).id)


async def test_a_pods_address_is_published_while_its_unit_is_active(
    etcd: EtcdClient,
    keys: Keys,
    manager: FakeUnitManager,
    systemd: FakeSystemd,
    tmp_path: Path,
) -> None:
    manager.seed("pod.service", service())
    manager.seed("plain.service", service())
    heart = Heart(etcd, keys, Machine(MACHINE), ttl=10)
    publisher = StatePublisher(etcd, keys, MACHINE, manager, heart, pod_addresses=tmp_path)

    async def published(name: str) -> UnitStateRecord | None:
        kv = await etcd.get(keys.state(MACHINE, name))
        return decode_state(kv.key, kv.value) if kv is not None else None

    async def address_is(name: str, address: str) -> bool:
        record = await published(name)
        return record is not None and record.pod_address == address

    async with background(heart.run()), background(publisher.run()):
        await wait_states(
            etcd,
            keys,
            {"pod.service": ("active", "running"), "plain.service": ("active", "running")},
        )
        calls = len(manager.unit_state_calls)
        # fleet-pod hands the address over after systemd reported the unit active
        write_atomically(
            tmp_path / "pod.service", encode_pod_address(PodAddress("10.244.3.2", "u"))
        )
        await wait_until(lambda: address_is("pod.service", "10.244.3.2"), "the address published")
        assert frozenset({"pod.service"}) in manager.unit_state_calls[calls:]  # that unit only
        assert await address_is("plain.service", "")

        systemd.crash("pod.service")  # the file is still there (not yet withdrawn): not shown
        await wait_states(
            etcd,
            keys,
            {"pod.service": ("failed", "failed"), "plain.service": ("active", "running")},
        )
        assert await address_is("pod.service", "")
        systemd.start("pod.service")
        await wait_until(lambda: address_is("pod.service", "10.244.3.2"), "the address again")

        (tmp_path / "pod.service").unlink()  # fleet-pod withdrew it
        await wait_until(lambda: address_is("pod.service", ""), "the address gone")
        record = await published("pod.service")
        assert record is not None
        assert record.active_state == "active"
        await etcd.lease_revoke((await heart.wait_lease()).id)


async def test_a_pass_after_a_change_looks_at_the_changed_units_files_only(
    etcd: EtcdClient,
    keys: Keys,
    manager: FakeUnitManager,
    systemd: FakeSystemd,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    names = [f"u{i}.service" for i in range(20)]
    for name in names:
        manager.seed(name, service())
    asked: list[frozenset[str] | None] = []
    list_unit_files = manager.list_unit_files

    async def spied(wanted: Any = None) -> dict[str, str]:
        asked.append(None if wanted is None else frozenset(wanted))
        return await list_unit_files(wanted)

    monkeypatch.setattr(manager, "list_unit_files", spied)
    async with publishing(etcd, keys, manager) as (heart, _):
        await wait_states(etcd, keys, dict.fromkeys(names, ("active", "running")))
        assert asked[0] is None  # the first pass looks at everything
        asked.clear()
        systemd.crash("u3.service")
        expected = dict.fromkeys(names, ("active", "running"))
        expected["u3.service"] = ("failed", "failed")
        await wait_states(etcd, keys, expected)
        assert asked
        assert all(wanted == frozenset({"u3.service"}) for wanted in asked), asked
        await manager.remove_unit_file("u4.service")  # a removal is seen the same way
        del expected["u4.service"]
        await wait_states(etcd, keys, expected)
        assert None not in asked, asked
        await etcd.lease_revoke((await heart.wait_lease()).id)


async def test_a_unit_about_to_start_is_published_once_its_start_ran_or_ended(
    etcd: EtcdClient, keys: Keys, manager: FakeUnitManager, systemd: FakeSystemd
) -> None:
    manager.seed("other.service", service())
    async with publishing(etcd, keys, manager) as (heart, publisher):
        await wait_states(etcd, keys, {"other.service": ("active", "running")})
        publisher.hold(["held.service", "dropped.service"])
        for name in ("held.service", "dropped.service"):
            await manager.write_unit_file(name, service())
            await manager.link_unit(name)
        # a later change is published: the passes since then left the held units out
        await manager.write_unit_file("more.service", service())
        await manager.link_unit("more.service")
        await manager.start_unit("more.service")
        expected = {"other.service": ("active", "running"), "more.service": ("active", "running")}
        await wait_states(etcd, keys, expected)
        # the start is queued but has not run: `inactive` is not published either
        result: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        publisher.started("held.service", Job("held.service", "/job/7", result))
        systemd.crash("other.service")
        expected["other.service"] = ("failed", "failed")
        await wait_states(etcd, keys, expected)
        result.set_result("done")  # the job ended (here: the unit did not run)
        publisher.release(["held.service", "dropped.service"])  # the pass is over
        expected |= {"held.service": ("inactive", "dead"), "dropped.service": ("inactive", "dead")}
        await wait_states(etcd, keys, expected)
        await etcd.lease_revoke((await heart.wait_lease()).id)
