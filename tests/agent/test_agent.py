"""The agent on a real etcd with the fake systemd: it runs what is scheduled here, unloads what is
not, re-adopts after a restart, rides out an etcd outage, and refuses what it must."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import structlog

from agent.agent import Agent
from agent.plan import LocalUnit
from agent.systemd.fake import FakeSystemd, FakeUnitManager
from devtools.etcd_server import EtcdServer
from fleetd.core.model import Machine, Placement
from fleetd.registry.client import EtcdClient
from fleetd.registry.codec import decode_state
from fleetd.registry.keys import Keys
from tests.agent.helpers import (
    MACHINE,
    OTHER,
    background,
    schedule,
    service,
    states,
    unschedule,
)
from tests.engine.cluster import wait_until

HERE = Machine(MACHINE, {"role": "web"}, "10.0.0.5")


@contextlib.asynccontextmanager
async def running_agent(
    client: EtcdClient, keys: Keys, manager: FakeUnitManager, *, ttl: int = 10
) -> AsyncIterator[Agent]:
    agent = Agent(client, keys, manager, HERE, ttl=ttl, reconcile_interval=0.2)
    async with background(agent.run()):
        yield agent


async def wait_states(
    client: EtcdClient, keys: Keys, expected: dict[str, tuple[str, str]], what: str
) -> None:
    async def match() -> bool:
        return await states(client, keys) == expected

    await wait_until(match, what)


async def passes_go_by(agent: Agent, count: int = 3) -> None:
    """Wait until the agent has run `count` more reconcile passes."""
    target = agent.loop.passes + count

    async def done() -> bool:
        return agent.loop.passes >= target

    await wait_until(done, f"{count} more agent passes")


async def release(client: EtcdClient, agent: Agent) -> None:
    await client.lease_revoke((await agent.heart.wait_lease()).id)


async def test_runs_what_is_scheduled_and_unloads_what_is_not(
    etcd: EtcdClient, keys: Keys, manager: FakeUnitManager, systemd: FakeSystemd, units_dir: Path
) -> None:
    web = await schedule(etcd, keys, "web.service")
    await schedule(etcd, keys, "db.service", service(description="db"), desired="loaded")
    await schedule(etcd, keys, "elsewhere.service", machine=OTHER)
    async with running_agent(etcd, keys, manager) as agent:
        await wait_states(
            etcd,
            keys,
            {"web.service": ("active", "running"), "db.service": ("inactive", "dead")},
            "web running and db loaded",
        )
        kv = await etcd.get(keys.machine(MACHINE))
        assert kv is not None
        assert b'"primaryIP":"10.0.0.5"' in kv.value
        assert b'"role":"web"' in kv.value
        text = (units_dir / "web.service").read_text()
        assert text == web.unit_file.serialize()
        assert hashlib.sha1(text.encode()).hexdigest() == web.hash
        assert set(systemd.links) == {"web.service", "db.service"}
        assert systemd.starts == {"web.service": 1}
        assert not (units_dir / "elsewhere.service").exists()

        await schedule(etcd, keys, "db.service", service(description="db"))  # now launched
        await wait_states(
            etcd,
            keys,
            {"web.service": ("active", "running"), "db.service": ("active", "running")},
            "db started",
        )
        await unschedule(etcd, keys, "web.service")
        await wait_states(etcd, keys, {"db.service": ("active", "running")}, "web unloaded")
        assert systemd.stops["web.service"] == 1
        assert "web.service" not in systemd.links
        assert not (units_dir / "web.service").exists()
        await release(etcd, agent)


async def test_only_a_unit_systemd_may_remember_is_reloaded_for(
    etcd: EtcdClient, keys: Keys, manager: FakeUnitManager, systemd: FakeSystemd
) -> None:
    """The first install reloads (the agent does not know what systemd holds); then an unload
    and a new unit need none, and the unloaded unit coming back with another file does."""
    await schedule(etcd, keys, "a.service")
    async with running_agent(etcd, keys, manager) as agent:
        await wait_states(etcd, keys, {"a.service": ("active", "running")}, "a running")
        assert systemd.reloads == 1
        await unschedule(etcd, keys, "a.service")
        await schedule(etcd, keys, "b.service", service(description="b"))
        await wait_states(etcd, keys, {"b.service": ("active", "running")}, "a gone, b running")
        assert systemd.reloads == 1
        await schedule(etcd, keys, "a.service", service(description="a, again"))
        await wait_states(
            etcd,
            keys,
            {"a.service": ("active", "running"), "b.service": ("active", "running")},
            "a back",
        )
        assert systemd.reloads == 2
        await release(etcd, agent)


async def test_a_changed_unit_file_replaces_the_running_unit(
    etcd: EtcdClient, keys: Keys, manager: FakeUnitManager, systemd: FakeSystemd, units_dir: Path
) -> None:
    await schedule(etcd, keys, "web.service")
    async with running_agent(etcd, keys, manager) as agent:
        await wait_states(etcd, keys, {"web.service": ("active", "running")}, "web running")
        new = await schedule(etcd, keys, "web.service", service(description="v2"))

        async def replaced() -> bool:
            return (await manager.list_unit_files()).get("web.service") == new.hash

        await wait_until(replaced, "the new unit file")
        await wait_states(etcd, keys, {"web.service": ("active", "running")}, "web running again")
        assert (systemd.stops["web.service"], systemd.starts["web.service"]) == (1, 2)
        await release(etcd, agent)


async def test_a_restarted_agent_restarts_nothing_and_the_machine_never_leaves(
    etcd: EtcdClient, keys: Keys, units_dir: Path
) -> None:
    systemd = FakeSystemd()  # outlives both agents, as systemd outlives fleetd
    await schedule(etcd, keys, "web.service")
    await schedule(etcd, keys, "job.service", service("/bin/true") + "Type=oneshot\n")
    first = FakeUnitManager(units_dir, systemd)
    async with running_agent(etcd, keys, first) as agent:
        await wait_states(
            etcd,
            keys,
            {"web.service": ("active", "running"), "job.service": ("inactive", "dead")},
            "web running and the oneshot finished",
        )
        lease = (await agent.heart.wait_lease()).id
    first.close()
    machine = await etcd.get(keys.machine(MACHINE))
    state = await etcd.get(keys.state(MACHINE, "web.service"))
    assert machine is not None
    assert state is not None

    second = FakeUnitManager(units_dir, systemd)
    async with running_agent(etcd, keys, second) as agent:
        assert (await agent.heart.wait_lease()).id == lease  # re-attached
        await passes_go_by(agent)
        assert systemd.starts == {"web.service": 1, "job.service": 1}
        assert systemd.stops == {}
        again = await etcd.get(keys.machine(MACHINE))
        assert again is not None
        assert again.create_revision == machine.create_revision  # never deleted
        assert await etcd.get(keys.state(MACHINE, "web.service")) == state  # not even rewritten
        await release(etcd, agent)
    second.close()


async def test_an_etcd_outage_stops_nothing_and_afterwards_only_moved_units_stop(
    private_etcd: EtcdServer, key_prefix: str, units_dir: Path
) -> None:
    keys = Keys(key_prefix)
    systemd = FakeSystemd()
    manager = FakeUnitManager(units_dir, systemd)
    client = await EtcdClient.connect([private_etcd.endpoint], timeout=1.0)
    try:
        await schedule(client, keys, "web.service")
        await schedule(client, keys, "db.service")
        async with running_agent(client, keys, manager) as agent:
            await wait_states(
                client,
                keys,
                {"web.service": ("active", "running"), "db.service": ("active", "running")},
                "both running",
            )
            private_etcd.kill()
            await passes_go_by(agent, 5)  # passes from the last schedule seen, etcd away
            assert systemd.stops == {}
            assert {u.active_state for u in systemd.units.values()} == {"active"}

            private_etcd.start()
            # Meanwhile the engine moved db elsewhere (written on a fresh connection: the
            # agent's own channel reconnects on its own schedule).
            engine = await EtcdClient.connect([private_etcd.endpoint])
            try:
                await unschedule(engine, keys, "db.service")
                await schedule(engine, keys, "db.service", machine=OTHER)
            finally:
                await engine.close()

            async def db_gone() -> bool:
                return "db.service" not in await manager.list_unit_files()

            await wait_until(db_gone, "db to be unloaded here")
            assert systemd.stops == {"db.service": 1}
            assert systemd.starts == {"web.service": 1, "db.service": 1}
            assert systemd.status("web.service").active_state == "active"
            await wait_states(
                client, keys, {"web.service": ("active", "running")}, "db's state gone"
            )
            await release(client, agent)
    finally:
        manager.close()
        await client.close()


async def test_a_failing_unit_is_failed_and_not_retried(
    etcd: EtcdClient, keys: Keys, manager: FakeUnitManager, systemd: FakeSystemd
) -> None:
    await schedule(etcd, keys, "broken.service", service("/bin/false"))
    async with running_agent(etcd, keys, manager) as agent:
        await wait_states(etcd, keys, {"broken.service": ("failed", "failed")}, "broken failed")
        await passes_go_by(agent, 5)
        assert systemd.starts == {"broken.service": 1}
        await release(etcd, agent)


async def test_a_unit_name_that_would_escape_is_refused(
    etcd: EtcdClient, keys: Keys, manager: FakeUnitManager, systemd: FakeSystemd, units_dir: Path
) -> None:
    record = await schedule(etcd, keys, "web.service")
    await etcd.put(
        keys.placement(MACHINE, "../evil.service"),
        f'{{"hash":"{record.hash}","desiredState":"launched"}}'.encode(),
    )
    await etcd.put(
        keys.placement(MACHINE, "sub/dir.service"),
        f'{{"hash":"{record.hash}","desiredState":"launched"}}'.encode(),
    )
    with structlog.testing.capture_logs() as logs:
        async with running_agent(etcd, keys, manager) as agent:
            await wait_states(etcd, keys, {"web.service": ("active", "running")}, "web running")
            await passes_go_by(agent)
            await release(etcd, agent)
    refused = sorted(e["key"] for e in logs if e["event"] == "refusing a schedule entry")
    assert refused == [
        keys.placement(MACHINE, "../evil.service"),
        keys.placement(MACHINE, "sub/dir.service"),
    ]
    assert sorted(p.name for p in units_dir.parent.rglob("*.service")) == ["web.service"]
    assert {name for _, name in systemd.calls} <= {"web.service", ""}


async def test_acts_only_on_a_schedule_it_has_read(
    private_etcd: EtcdServer, key_prefix: str, units_dir: Path
) -> None:
    # Units left from before, etcd unreachable from the start: the agent must not take the
    # missing schedule for an empty one.
    systemd = FakeSystemd()
    manager = FakeUnitManager(units_dir, systemd)
    manager.seed("web.service", service())
    client = await EtcdClient.connect([private_etcd.endpoint], timeout=1.0)
    private_etcd.kill()
    try:
        agent = Agent(client, Keys(key_prefix), manager, HERE, reconcile_interval=0.05)
        async with background(agent.run()):
            await passes_go_by(agent, 5)
            assert agent.schedule is None
            assert systemd.calls == []
            assert (units_dir / "web.service").exists()
    finally:
        manager.close()
        await client.close()


async def test_a_signal_about_one_unit_makes_the_agent_read_that_unit_only(
    etcd: EtcdClient, keys: Keys, manager: FakeUnitManager, systemd: FakeSystemd
) -> None:
    names = ["a.service", "b.service", "c.service"]
    for name in names:  # already running here: the agent finds nothing to do
        record = await schedule(etcd, keys, name, service(description=name))
        manager.seed(name, record.unit_file.serialize())
    agent = Agent(etcd, keys, manager, HERE, reconcile_interval=3600)  # no safety tick here
    async with background(agent.run()):

        async def both_read_all() -> bool:  # the agent's first pass and the publisher's
            return manager.unit_state_calls.count(frozenset(names)) == 2

        await wait_until(both_read_all, "the first full reads")
        calls = len(manager.unit_state_calls)
        systemd.crash("b.service")
        await passes_go_by(agent, 1)
        assert set(manager.unit_state_calls[calls:]) == {frozenset({"b.service"})}
        assert systemd.starts["b.service"] == 0  # running before, failed now: left alone
        await release(etcd, agent)


class GrowingSchedule(Agent):
    """An agent whose first read of unit files sees more units scheduled meanwhile, as when the
    engine's burst arrives in several transactions."""

    def __init__(self, *args: Any, more: Callable[[], Awaitable[int]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.more: Callable[[], Awaitable[int]] | None = more

    async def _fetch_unit_files(
        self, desired: dict[str, Placement], current: dict[str, LocalUnit]
    ) -> int:
        more, self.more = self.more, None
        if more is not None:
            revision = await more()

            async def seen() -> bool:
                return self.schedule_revision >= revision

            await wait_until(seen, "the agent to read the schedule's new entries")
        return await super()._fetch_unit_files(desired, current)


async def test_a_schedule_that_grows_during_a_pass_is_taken_whole_in_that_pass(
    etcd: EtcdClient, keys: Keys, manager: FakeUnitManager, systemd: FakeSystemd
) -> None:
    await schedule(etcd, keys, "a.service", service(description="a"))

    async def more() -> int:
        for name in ("b.service", "c.service"):
            await schedule(etcd, keys, name, service(description=name))
        kv = await etcd.get(keys.placement(MACHINE, "c.service"))
        assert kv is not None
        return kv.mod_revision

    agent = GrowingSchedule(etcd, keys, manager, HERE, reconcile_interval=3600, more=more)
    names = ["a.service", "b.service", "c.service"]
    async with background(agent.run()):
        await wait_states(etcd, keys, dict.fromkeys(names, ("active", "running")), "all running")
        # one pass linked all three before starting any (with the one reload of an agent that
        # does not know yet what systemd holds)
        calls = [call for call in systemd.calls if call[0] in ("link", "start", "reload")]
        assert sorted(calls[:3]) == [("link", name) for name in names]
        assert calls[3] == ("reload", "")
        assert sorted(calls[4:]) == [("start", name) for name in names]
        assert systemd.starts == dict.fromkeys(names, 1)
        await release(etcd, agent)


async def test_the_unit_records_of_a_burst_are_read_128_in_one_call(
    etcd: EtcdClient,
    keys: Keys,
    manager: FakeUnitManager,
    systemd: FakeSystemd,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    names = [f"burst{i:03}.service" for i in range(300)]
    for name in names:
        await schedule(etcd, keys, name, service(description=name))
    reads: list[int] = []  # keys of units/ asked for, per call
    get, get_many = etcd.get, etcd.get_many

    async def counted_get(key: str, **kwargs: Any) -> Any:
        if key.startswith(keys.units):
            reads.append(1)
        return await get(key, **kwargs)

    async def counted_get_many(asked: list[str], **kwargs: Any) -> Any:
        reads.append(len(asked))
        return await get_many(asked, **kwargs)

    monkeypatch.setattr(etcd, "get", counted_get)
    monkeypatch.setattr(etcd, "get_many", counted_get_many)
    async with running_agent(etcd, keys, manager) as agent:
        await wait_states(etcd, keys, dict.fromkeys(names, ("active", "running")), "all running")
        assert sorted(reads, reverse=True) == [128, 128, 44]
        assert systemd.starts == dict.fromkeys(names, 1)
        await release(etcd, agent)


async def test_a_started_units_first_published_state_is_its_starts(
    etcd: EtcdClient, keys: Keys, manager: FakeUnitManager, systemd: FakeSystemd
) -> None:
    names = [f"new{i:02}.service" for i in range(40)]
    revision = 0
    for name in names:
        await schedule(etcd, keys, name, service(description=name))
        kv = await etcd.get(keys.placement(MACHINE, name))
        assert kv is not None
        revision = kv.mod_revision
    async with running_agent(etcd, keys, manager) as agent:
        await wait_states(etcd, keys, dict.fromkeys(names, ("active", "running")), "all running")
        published: list[tuple[str, str]] = []
        async with contextlib.aclosing(
            etcd.watch(keys.state(MACHINE, ""), start_revision=revision + 1)
        ) as stream:
            async for changes in stream:
                for event in changes.events:
                    state = decode_state(event.kv.key, event.kv.value)
                    published.append((state.active_state, state.sub_state))
                if len(published) >= len(names):
                    break
        # not `not-found` or `loaded`/`inactive` before: one write per unit, its running state
        assert published == [("active", "running")] * len(names)
        assert agent.publisher.writes == len(names)
        assert systemd.starts == dict.fromkeys(names, 1)
        await release(etcd, agent)
