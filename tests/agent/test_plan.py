"""The agent planner: fleet's rules as a table, and the invariants as properties.

The properties apply each plan to the fake systemd through the real executor, then plan again.
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.executor import apply_agent_tasks, read_local_units
from agent.intents import LaunchIntents
from agent.plan import (
    AgentTask,
    LinkUnit,
    LocalUnit,
    ReloadSystemd,
    StartUnit,
    StopUnit,
    UnloadUnit,
    WriteUnit,
    local_job_state,
    plan_agent,
    task_name,
)
from agent.systemd.fake import FakeUnitManager
from fleetd.core.model import Placement
from fleetd.core.names import unit_file_name_problem
from fleetd.core.states import JobState

TEXTS = {
    "run": "[Service]\nExecStart=/bin/sleep infinity\n",
    "run2": "[Unit]\nDescription=second version\n\n[Service]\nExecStart=/bin/sleep infinity\n",
    "fail": "[Service]\nExecStart=/bin/false\n",
    "oneshot": "[Service]\nType=oneshot\nExecStart=/bin/true\n",
    "bad": "[Unit]\nDescription=no ExecStart\n",
}
HASHES = {variant: hashlib.sha1(text.encode()).hexdigest() for variant, text in TEXTS.items()}
FILES = {HASHES[variant]: text for variant, text in TEXTS.items()}
H1, H2 = HASHES["run"], HASHES["run2"]
L, U, IN = JobState.LOADED, JobState.LAUNCHED, JobState.INACTIVE


def want(name: str, desired: JobState = U, hash_: str = H1) -> Placement:
    return Placement(name, "m1", hash_, desired)


def have(
    name: str,
    hash_: str = H1,
    active: str = "active",
    sub: str = "running",
    *,
    load: str = "loaded",
    launched: bool | None = True,
) -> LocalUnit:
    return LocalUnit(name, hash_, load, active, sub, launched)


def kinds(tasks: list[AgentTask]) -> list[tuple[str, str]]:
    return [(task_name(t), getattr(t, "unit", "")) for t in tasks]


# ---- the rules, one row each


@pytest.mark.parametrize(
    ("desired", "current", "expected"),
    [
        pytest.param(
            [want("a.service")],
            [],
            [("write", "a.service"), ("link", "a.service"), ("start", "a.service")],
            id="new launched unit: write, link, start (systemd loads it on the start, no reload)",
        ),
        pytest.param(
            [want("a.service", L)],
            [],
            [("write", "a.service"), ("link", "a.service")],
            id="new loaded unit: no start, no reload",
        ),
        pytest.param(
            [want("a.service")],
            [have("a.service")],
            [],
            id="re-adoption: running with the same hash is left alone",
        ),
        pytest.param(
            [want("a.service")],
            [have("a.service", launched=None)],
            [],
            id="re-adoption without an intent record: running means launched",
        ),
        pytest.param(
            [want("a.service")],
            [have("a.service", active="failed", sub="failed")],
            [],
            id="a launched unit that failed is not started again",
        ),
        pytest.param(
            [want("a.service")],
            [have("a.service", active="inactive", sub="dead")],
            [],
            id="a launched oneshot that finished is not started again",
        ),
        pytest.param(
            [want("a.service")],
            [have("a.service", active="inactive", sub="dead", launched=False)],
            [("start", "a.service")],
            id="loaded -> launched: start, no reload",
        ),
        pytest.param(
            [want("a.service", L)],
            [have("a.service")],
            [("stop", "a.service")],
            id="launched -> loaded: stop, no reload",
        ),
        pytest.param(
            [want("a.service", L)],
            [have("a.service", active="active", launched=False)],
            [],
            id="loaded but started by hand: left as the operator made it",
        ),
        pytest.param(
            [want("a.service")],
            [have("a.service", load="not-found", active="inactive", sub="dead", launched=False)],
            [("link", "a.service"), ("reload", ""), ("start", "a.service")],
            id="file in place but not linked: link again, reload, start",
        ),
        pytest.param(
            [want("a.service")],
            [have("a.service", load="not-found", launched=None)],
            [("link", "a.service"), ("reload", "")],
            id="running but its link was removed: link again, no restart",
        ),
        pytest.param(
            [want("a.service", L)],
            [have("a.service", load="not-found", launched=None)],
            [("link", "a.service"), ("reload", ""), ("stop", "a.service")],
            id="running, link removed, desired loaded: link again and stop",
        ),
        pytest.param(
            [want("a.service", hash_=H2)],
            [have("a.service")],
            [
                ("unload", "a.service"),
                ("write", "a.service"),
                ("link", "a.service"),
                ("reload", ""),
                ("start", "a.service"),
            ],
            id="hash changed: replace",
        ),
        pytest.param(
            [],
            [have("a.service")],
            [("unload", "a.service")],
            id="no longer scheduled: unload (systemd forgets it, no reload)",
        ),
        pytest.param(
            [want("a.service", IN)],
            [have("a.service", active="inactive", sub="dead", launched=False)],
            [("unload", "a.service")],
            id="desired inactive: unload",
        ),
        pytest.param(
            [want("a.service", IN)],
            [],
            [],
            id="desired inactive and absent: nothing",
        ),
        pytest.param(
            [want("../evil.service"), want("x/y.service"), want(".hidden.service")],
            [],
            [],
            id="names that could escape the units directory are never planned",
        ),
    ],
)
def test_rules(
    desired: list[Placement], current: list[LocalUnit], expected: list[tuple[str, str]]
) -> None:
    tasks = plan_agent({p.unit: p for p in desired}, {u.name: u for u in current}, FILES, ())
    assert kinds(tasks) == expected
    assert all(task.reason for task in tasks)


@pytest.mark.parametrize(
    ("unloaded", "reloads"),
    [
        pytest.param((), False, id="systemd holds nothing of it: no reload"),
        pytest.param(("a.service",), True, id="unloaded since the last reload: reload"),
        pytest.param(None, True, id="not known (the agent just started): reload"),
    ],
)
def test_a_new_unit_is_reloaded_for_only_when_systemd_may_hold_an_old_definition(
    unloaded: tuple[str, ...] | None, reloads: bool
) -> None:
    tasks = plan_agent({"a.service": want("a.service")}, {}, FILES, unloaded)
    assert (("reload", "") in kinds(tasks)) is reloads
    assert kinds(tasks)[-1] == ("start", "a.service")


def test_fleet_order_across_units_and_one_reload() -> None:
    desired = {
        "b.service": want("b.service"),  # new
        "c.service": want("c.service", L),  # launched -> loaded
        "d.service": want("d.service", hash_=H2),  # replaced
        "e.service": want("e.service"),  # loaded -> launched
    }
    current = {
        "a.service": have("a.service"),  # gone from the schedule
        "c.service": have("c.service"),
        "d.service": have("d.service"),
        "e.service": have("e.service", active="inactive", sub="dead", launched=False),
    }
    tasks = plan_agent(desired, current, FILES, ())
    assert kinds(tasks) == [
        ("unload", "a.service"),
        ("unload", "d.service"),
        ("write", "b.service"),
        ("link", "b.service"),
        ("write", "d.service"),
        ("link", "d.service"),
        ("reload", ""),
        ("stop", "c.service"),
        ("start", "b.service"),
        ("start", "d.service"),
        ("start", "e.service"),
    ]
    assert [t for t in tasks if isinstance(t, ReloadSystemd)] == [
        ReloadSystemd("1 unit changed or linked again")  # d; b is new, a only unloaded
    ]


def test_tasks_carry_what_the_executor_needs() -> None:
    tasks = plan_agent(
        {"a.service": want("a.service", hash_=H2)}, {"a.service": have("a.service")}, FILES
    )
    assert tasks[0] == UnloadUnit("a.service", f"unit file changed ({H1[:7]} -> {H2[:7]})")
    write = tasks[1]
    assert isinstance(write, WriteUnit)
    assert (write.hash, write.text) == (H2, TEXTS["run2"])
    assert isinstance(tasks[2], LinkUnit)
    start = tasks[-1]
    assert isinstance(start, StartUnit)
    assert start.hash == H2


def test_a_unit_whose_file_is_not_at_hand_waits() -> None:
    # New, or replaced: without the text nothing is written, and the old version keeps running.
    desired = {"a.service": want("a.service"), "b.service": want("b.service", hash_=H2)}
    assert plan_agent(desired, {"b.service": have("b.service")}, {}) == []


def test_planning_does_not_change_its_inputs() -> None:
    desired = {"a.service": want("a.service")}
    current = {"b.service": have("b.service")}
    plan_agent(desired, current, FILES)
    assert desired == {"a.service": want("a.service")}
    assert current == {"b.service": have("b.service")}


@pytest.mark.parametrize(
    ("unit", "state"),
    [
        (have("a.service", load="not-found", active="inactive", launched=False), IN),
        (have("a.service", load="stub", active="inactive", launched=None), IN),
        (have("a.service", load="not-found", active="active", launched=None), U),
        (have("a.service", load="bad-setting", active="inactive", launched=None), L),
        (have("a.service", active="activating", launched=None), U),
        (have("a.service", active="failed", launched=None), U),
        (have("a.service", active="inactive", launched=None), L),
        (have("a.service", active="inactive", launched=True), U),
        (have("a.service", active="active", launched=False), L),
    ],
)
def test_local_job_state(unit: LocalUnit, state: JobState) -> None:
    assert local_job_state(unit) is state


# ---- properties: apply to the fake, then plan again

NAMES = [f"u{i}.service" for i in range(5)]
STATES = [("active", "running"), ("failed", "failed"), ("inactive", "dead"), ("active", "exited")]


@dataclass(frozen=True)
class Present:
    variant: str
    linked: bool
    state: tuple[str, str]
    intent: bool | None


@dataclass(frozen=True)
class Scenario:
    desired: dict[str, Placement]
    present: dict[str, Present]


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    desired: dict[str, Placement] = {}
    present: dict[str, Present] = {}
    for name in NAMES:
        if draw(st.booleans()):
            variant = draw(st.sampled_from(sorted(TEXTS)))
            state = draw(st.sampled_from([L, U, U, IN]))
            desired[name] = Placement(name, "m1", HASHES[variant], state)
        if draw(st.booleans()):
            present[name] = Present(
                draw(st.sampled_from(sorted(TEXTS))),
                draw(st.booleans()),
                draw(st.sampled_from(STATES)),
                draw(st.sampled_from([None, True, False])),
            )
    if draw(st.booleans()):
        desired["../evil.service"] = Placement("../evil.service", "m1", H1, U)
    return Scenario(desired, present)


def _seed(manager: FakeUnitManager, intents: LaunchIntents, scenario: Scenario) -> None:
    for name, unit in scenario.present.items():
        manager.seed(name, TEXTS[unit.variant], active=unit.state[0], sub=unit.state[1])
        if not unit.linked:
            del manager.systemd.links[name]
            manager.systemd.units[name].load_state = "not-found"
        if unit.intent is not None:
            intents.record(name, HASHES[unit.variant], unit.intent)


async def _apply_and_replan(directory: Path, scenario: Scenario) -> None:
    manager = FakeUnitManager(directory / "units")
    intents = LaunchIntents(None)
    _seed(manager, intents, scenario)
    before = await read_local_units(manager, intents)
    tasks = plan_agent(scenario.desired, before, FILES)
    await apply_agent_tasks(manager, tasks, intents)
    after = await read_local_units(manager, intents)

    assert plan_agent(scenario.desired, after, FILES) == []
    wanted = {
        name: p
        for name, p in scenario.desired.items()
        if p.desired is not IN and unit_file_name_problem(name) is None
    }
    assert set(after) == set(wanted)
    assert not (directory / "evil.service").exists()
    for name, placement in wanted.items():
        unit = after[name]
        assert unit.hash == placement.hash
        assert local_job_state(unit) is placement.desired
        assert name in manager.systemd.links
        was = before.get(name)
        if was is not None and was.hash == placement.hash and local_job_state(was) is U:
            assert manager.systemd.starts[name] == 0, f"{name} was restarted"
    for name in set(scenario.present) - set(wanted):
        assert name not in manager.systemd.links
        assert manager.systemd.status(name).active_state not in ("active", "activating")


@settings(deadline=None)
@given(scenarios())
def test_applying_the_plan_reaches_the_schedule_and_planning_again_gives_nothing(
    scenario: Scenario,
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        asyncio.run(_apply_and_replan(Path(directory), scenario))


@settings(deadline=None)
@given(scenarios())
def test_stops_and_unloads_only_what_is_not_scheduled_at_that_hash(scenario: Scenario) -> None:
    before = {
        name: have(name, HASHES[p.variant], *p.state, launched=p.intent)
        for name, p in scenario.present.items()
    }
    tasks = plan_agent(scenario.desired, before, FILES)
    for task in tasks:
        if isinstance(task, UnloadUnit):
            placed = scenario.desired.get(task.unit)
            assert placed is None or placed.desired is IN or placed.hash != before[task.unit].hash
        if isinstance(task, StopUnit):
            assert scenario.desired[task.unit].desired is L
    assert sum(isinstance(t, ReloadSystemd) for t in tasks) <= 1
