"""The executor: tasks in order, each logged with its reason, the first failure stops the rest;
refused starts are recorded, failed units are not retried, unloads wait for the stop."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest
import structlog

import agent.intents
from agent.executor import UnitDidNotStop, apply_agent_tasks, read_local_units
from agent.intents import INTENTS_FILE, LaunchIntents
from agent.plan import (
    AgentTask,
    LinkUnit,
    LocalUnit,
    ReloadSystemd,
    StartUnit,
    StopUnit,
    UnloadUnit,
    WriteUnit,
    plan_agent,
)
from agent.systemd.fake import FakeSystemd, FakeUnitManager
from agent.systemd.port import Job, SystemdUnavailable, UnitRefused
from fleetd.core.model import Placement
from fleetd.core.states import JobState
from fleetd.runtime.files import write_atomically
from fleetd.runtime.metrics import Metrics
from tests.engine.cluster import wait_until

RUNS = "[Service]\nExecStart=/bin/sleep infinity\n"
FAILS = "[Service]\nExecStart=/bin/false\n"
BAD = "[Unit]\nDescription=no ExecStart\n"


def sha(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def install(name: str, text: str, reason: str = "test") -> list[WriteUnit | LinkUnit]:
    return [WriteUnit(name, sha(text), text, reason), LinkUnit(name, reason)]


async def test_tasks_run_in_order_and_each_is_logged_with_its_reason(
    manager: FakeUnitManager, systemd: FakeSystemd, units_dir: Path
) -> None:
    intents = LaunchIntents(None)
    tasks = [
        *install("a.service", RUNS, "scheduled on this machine"),
        ReloadSystemd("1 unit loaded or unloaded"),
        StartUnit("a.service", sha(RUNS), "desired launched"),
    ]
    with structlog.testing.capture_logs() as logs:
        await apply_agent_tasks(manager, tasks, intents)
    assert [(e["task"], e["unit"], e["reason"]) for e in logs if e["event"] == "agent task"] == [
        ("load", "a.service", "scheduled on this machine"),
        ("reload", None, "1 unit loaded or unloaded"),
        ("start", "a.service", "desired launched"),
    ]
    assert systemd.calls == [("link", "a.service"), ("reload", ""), ("start", "a.service")]
    assert intents.launched("a.service", sha(RUNS)) is True
    assert await read_local_units(manager, intents) == {
        "a.service": LocalUnit("a.service", sha(RUNS), "loaded", "active", "running", True)
    }


async def test_the_first_failure_stops_the_rest(
    manager: FakeUnitManager, systemd: FakeSystemd
) -> None:
    manager.refuse[("link", "b.service")] = UnitRefused("LinkUnitFiles", "b.service", "x.Y", "no")
    tasks = [
        *install("a.service", RUNS),
        *install("b.service", RUNS),
        *install("c.service", RUNS),
        ReloadSystemd("3 units"),
        StartUnit("a.service", sha(RUNS), "go"),
    ]
    metrics = Metrics()
    with structlog.testing.capture_logs() as logs, pytest.raises(UnitRefused):
        # One unit at a time, so the plan's order alone decides what ran before the failure.
        await apply_agent_tasks(manager, tasks, LaunchIntents(None), in_flight=1, metrics=metrics)
    assert systemd.calls == [("link", "a.service")]
    operations = metrics.agent_unit_operations
    failures = metrics.agent_unit_operation_failures
    assert operations.labels("write")._value.get() == 2
    assert operations.labels("link")._value.get() == 2
    assert failures.labels("link")._value.get() == 1
    assert failures.labels("write")._value.get() == 0
    assert set(await manager.list_unit_files()) == {"a.service", "b.service"}  # c not written
    failed = [e for e in logs if e["event"].startswith("agent task failed")]
    assert [(e["task"], e["unit"]) for e in failed] == [("link", "b.service")]
    manager.unavailable = True
    with pytest.raises(SystemdUnavailable):
        await apply_agent_tasks(manager, [ReloadSystemd("again")], LaunchIntents(None))


async def test_a_refused_start_is_recorded_and_does_not_block_the_others(
    manager: FakeUnitManager, systemd: FakeSystemd
) -> None:
    intents = LaunchIntents(None)
    tasks = [
        *install("a.service", BAD),
        *install("b.service", RUNS),
        ReloadSystemd("2 units"),
        StartUnit("a.service", sha(BAD), "go"),
        StartUnit("b.service", sha(RUNS), "go"),
    ]
    metrics = Metrics()
    with structlog.testing.capture_logs() as logs:
        await apply_agent_tasks(manager, tasks, intents, metrics=metrics)
    assert metrics.agent_unit_operations.labels("start")._value.get() == 2
    assert metrics.agent_unit_operation_failures.labels("start")._value.get() == 1  # the refusal
    refused = next(e for e in logs if e["event"].startswith("systemd refused to start"))
    assert refused["unit"] == "a.service"
    assert refused["error_name"] == "org.freedesktop.systemd1.BadUnitSetting"
    assert systemd.status("b.service").active_state == "active"
    current = await read_local_units(manager, intents)
    assert current["a.service"].load_state == "bad-setting"
    desired = {
        "a.service": Placement("a.service", "m", sha(BAD), JobState.LAUNCHED),
        "b.service": Placement("b.service", "m", sha(RUNS), JobState.LAUNCHED),
    }
    assert plan_agent(desired, current, {}) == []  # not retried until the file changes


async def test_a_failing_execstart_ends_failed_and_is_not_started_again(
    manager: FakeUnitManager, systemd: FakeSystemd
) -> None:
    intents = LaunchIntents(None)
    desired = {"f.service": Placement("f.service", "m", sha(FAILS), JobState.LAUNCHED)}
    files = {sha(FAILS): FAILS}
    for _ in range(3):
        tasks = plan_agent(desired, await read_local_units(manager, intents), files)
        await apply_agent_tasks(manager, tasks, intents)
    assert systemd.status("f.service").active_state == "failed"
    assert systemd.starts["f.service"] == 1


async def test_stop_keeps_the_unit_loaded(manager: FakeUnitManager, systemd: FakeSystemd) -> None:
    intents = LaunchIntents(None)
    manager.seed("a.service", RUNS)
    intents.record("a.service", sha(RUNS), launched=True)
    await apply_agent_tasks(manager, [StopUnit("a.service", sha(RUNS), "desired loaded")], intents)
    assert systemd.status("a.service").active_state == "inactive"
    assert "a.service" in systemd.links
    assert intents.launched("a.service", sha(RUNS)) is False


async def test_unload_stops_resets_unlinks_and_removes_without_asking_systemd(
    manager: FakeUnitManager, systemd: FakeSystemd, units_dir: Path
) -> None:
    intents = LaunchIntents(None)
    manager.seed("a.service", RUNS, active="failed", sub="failed")
    manager.seed("b.service", RUNS)
    tasks: list[AgentTask] = [
        UnloadUnit("a.service", "gone"),
        UnloadUnit("b.service", "gone"),
        ReloadSystemd("x"),
    ]
    await apply_agent_tasks(manager, tasks, intents)
    # the two unloads overlap; each keeps its order
    for unit in ("a.service", "b.service"):
        calls = [call for call, name in systemd.calls if name == unit]
        assert calls == ["stop", "reset-failed", "unlink"]
    # once stopped, nothing asked systemd about them (that would load them again)
    assert manager.unit_state_calls == []
    assert systemd.calls[-1] == ("reload", "")
    assert await manager.list_unit_files() == {}
    assert systemd.units == {}


class StubbornManager(FakeUnitManager):
    """A systemd whose stop jobs do not stop the unit (canceled), or never finish."""

    def __init__(self, units_dir: Path, *, never: bool) -> None:
        super().__init__(units_dir)
        self.never = never

    async def stop_unit(self, name: str, *, unloading: bool = False) -> Job:
        if self.never:
            return Job(name, "/job/1", asyncio.get_running_loop().create_future())
        return Job.finished(name, "canceled")


@pytest.mark.parametrize("never", [False, True])
async def test_unload_keeps_the_file_of_a_unit_that_did_not_stop(
    units_dir: Path, never: bool
) -> None:
    manager = StubbornManager(units_dir, never=never)
    manager.seed("a.service", RUNS)
    with pytest.raises(UnitDidNotStop):
        await apply_agent_tasks(
            manager, [UnloadUnit("a.service", "gone")], LaunchIntents(None), stop_timeout=0.05
        )
    assert set(await manager.list_unit_files()) == {"a.service"}
    assert "a.service" in manager.systemd.links
    manager.close()


class SlowStops(FakeUnitManager):
    """A systemd whose stop jobs for the units in `slow` finish only when the test says so."""

    def __init__(self, units_dir: Path, slow: set[str]) -> None:
        super().__init__(units_dir)
        self.slow = slow
        self.jobs: dict[str, asyncio.Future[str]] = {}

    async def stop_unit(self, name: str, *, unloading: bool = False) -> Job:
        job = await super().stop_unit(name, unloading=unloading)
        if name not in self.slow:
            return job
        self.jobs[name] = asyncio.get_running_loop().create_future()
        return Job(name, f"/job/{name}", self.jobs[name])


async def test_unloads_wait_for_their_stop_jobs_side_by_side(units_dir: Path) -> None:
    manager = SlowStops(units_dir, slow={"a.service"})
    for name in ("a.service", "b.service", "c.service"):
        manager.seed(name, RUNS)
    tasks: list[AgentTask] = [
        UnloadUnit(n, "gone") for n in ("a.service", "b.service", "c.service")
    ]
    applying = asyncio.create_task(apply_agent_tasks(manager, tasks, LaunchIntents(None)))

    async def others_unloaded() -> bool:
        return set(await manager.list_unit_files()) == {"a.service"}

    await wait_until(others_unloaded, "b and c unloaded while a's stop job runs")
    assert not applying.done()  # the stage waits for a
    manager.jobs["a.service"].set_result("done")
    await applying
    assert await manager.list_unit_files() == {}
    manager.close()


class GatedStarts(FakeUnitManager):
    """A systemd whose StartUnit calls wait at a gate; counts the calls in progress."""

    def __init__(self, units_dir: Path) -> None:
        super().__init__(units_dir)
        self.gate = asyncio.Event()
        self.starting = 0
        self.most = 0

    async def start_unit(self, name: str) -> Job:
        self.starting += 1
        self.most = max(self.most, self.starting)
        try:
            await self.gate.wait()
            return await super().start_unit(name)
        finally:
            self.starting -= 1


async def test_starts_overlap_up_to_in_flight(units_dir: Path) -> None:
    manager = GatedStarts(units_dir)
    intents = LaunchIntents(None)
    names = [f"u{i}.service" for i in range(10)]
    for name in names:
        manager.seed(name, RUNS, active="inactive", sub="dead")
    tasks = [StartUnit(name, sha(RUNS), "go") for name in names]
    applying = asyncio.create_task(apply_agent_tasks(manager, tasks, intents, in_flight=4))

    async def four_waiting() -> bool:
        return manager.starting == 4

    await wait_until(four_waiting, "four starts in progress at once")
    for _ in range(20):  # let anything that could start a fifth one run
        await asyncio.sleep(0)
    assert manager.most == 4
    manager.gate.set()
    await applying
    assert all(manager.systemd.status(n).active_state == "active" for n in names)
    assert all(intents.launched(n, sha(RUNS)) is True for n in names)
    manager.close()


async def test_a_failure_in_a_stage_of_overlapping_tasks_ends_the_pass(
    manager: FakeUnitManager, systemd: FakeSystemd
) -> None:
    names = [f"u{i}.service" for i in range(6)]
    for name in names:
        manager.seed(name, RUNS)
    manager.seed("later.service", RUNS, active="inactive", sub="dead")
    manager.refuse[("stop", "u1.service")] = UnitRefused("StopUnit", "u1.service", "x.Y", "no")
    tasks: list[AgentTask] = [
        *(StopUnit(name, sha(RUNS), "desired loaded") for name in names),
        StartUnit("later.service", sha(RUNS), "desired launched"),
    ]
    with pytest.raises(UnitRefused):
        await apply_agent_tasks(manager, tasks, LaunchIntents(None), in_flight=2)
    stopped = {name for call, name in systemd.calls if call == "stop"}
    assert "u5.service" not in stopped  # nothing more was started after the failure
    assert ("start", "later.service") not in systemd.calls  # nor any later stage


async def test_intents_are_saved_in_batches_within_a_stage(
    manager: FakeUnitManager, units_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = units_dir / INTENTS_FILE
    intents = LaunchIntents(path)
    names = [f"u{i:03d}.service" for i in range(200)]
    tasks: list[AgentTask] = [t for name in names for t in install(name, RUNS)]
    tasks += [ReloadSystemd("200 units"), *(StartUnit(n, sha(RUNS), "go") for n in names)]
    saves: list[Path] = []

    def counting_write(target: Path, data: bytes, *, mode: int = 0o644) -> Path:
        saves.append(target)
        return write_atomically(target, data, mode=mode)

    monkeypatch.setattr(agent.intents, "write_atomically", counting_write)
    await apply_agent_tasks(manager, tasks, intents)
    assert len(saves) <= 2 * (200 // 64 + 1)  # 400 changes: every 64, and at each stage's end
    assert all(LaunchIntents(path).launched(name, sha(RUNS)) is True for name in names)


class GatedLinks(FakeUnitManager):
    """A systemd whose LinkUnitFiles calls wait at a gate; counts the calls in progress."""

    def __init__(self, units_dir: Path) -> None:
        super().__init__(units_dir)
        self.gate = asyncio.Event()
        self.linking = 0
        self.most = 0

    async def link_unit(self, name: str) -> None:
        self.linking += 1
        self.most = max(self.most, self.linking)
        try:
            await self.gate.wait()
            await super().link_unit(name)
        finally:
            self.linking -= 1


async def test_units_are_written_and_linked_side_by_side(units_dir: Path) -> None:
    manager = GatedLinks(units_dir)
    names = [f"u{i}.service" for i in range(10)]
    tasks: list[AgentTask] = [t for name in names for t in install(name, RUNS)]
    tasks.append(ReloadSystemd("10 units"))
    applying = asyncio.create_task(
        apply_agent_tasks(manager, tasks, LaunchIntents(None), in_flight=4)
    )

    async def four_linking() -> bool:
        return manager.linking == 4

    await wait_until(four_linking, "four links in progress at once")
    assert len(await manager.list_unit_files()) == 4  # each unit's file before its link
    assert manager.systemd.reloads == 0
    manager.gate.set()
    await applying
    assert manager.most == 4
    assert set(manager.systemd.links) == set(names)
    assert manager.systemd.reloads == 1
    manager.close()


async def test_a_failed_link_among_many_ends_the_pass(
    manager: FakeUnitManager, systemd: FakeSystemd
) -> None:
    names = [f"u{i}.service" for i in range(10)]
    manager.refuse[("link", "u1.service")] = UnitRefused("LinkUnitFiles", "u1.service", "x.Y", "no")
    tasks: list[AgentTask] = [t for name in names for t in install(name, RUNS)]
    tasks += [ReloadSystemd("10 units"), *(StartUnit(n, sha(RUNS), "go") for n in names)]
    with pytest.raises(UnitRefused):
        await apply_agent_tasks(manager, tasks, LaunchIntents(None), in_flight=2)
    assert "u9.service" not in await manager.list_unit_files()  # not started after the failure
    assert systemd.reloads == 0
    assert not any(call == "start" for call, _ in systemd.calls)
