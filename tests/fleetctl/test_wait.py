"""Blocking: attempt windows counted exactly on a fake clock, stuck and fatal observations."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from fleetctl import bulk
from fleetctl.client import Endpoint, FleetClient
from fleetctl.models import Unit, UnitState
from fleetctl.wait import (
    NOT_YET,
    Observation,
    observe_systemd,
    observe_unit,
    wait_for,
    wait_for_destroyed,
    wait_for_systemd_active,
    wait_for_unit_states,
    windows_for,
)
from tests.fleetctl.conftest import HELLO, FakeClock
from tests.fleetctl.fake_api import FakeFleet

POLLS_PER_WINDOW = 12  # the first window polls at 0, 0.03, 0.09, 0.21, then 0.25, 0.5, ..., 2.0 s;
# later ones 8 times


class Script:
    """An observer that answers from a list of per-poll observations, per name."""

    def __init__(self, answers: Mapping[str, list[Observation]]) -> None:
        self.answers = {name: list(obs) for name, obs in answers.items()}
        self.polls: dict[str, int] = dict.fromkeys(answers, 0)

    def __call__(self, pending: list[str]) -> dict[str, Observation]:
        seen = {}
        for name in pending:
            self.polls[name] += 1
            queue = self.answers[name]
            seen[name] = queue.pop(0) if len(queue) > 1 else queue[0]
        return seen


def run(script: Script, windows: int | None) -> tuple[dict[str, str], list[str]]:
    done: list[str] = []
    failures = wait_for(
        list(script.answers),
        script,
        windows=windows,
        timeout_message=lambda name: f"timed out: {name}",
        on_done=done.append,
    )
    return failures, done


def test_block_attempts_become_windows() -> None:
    assert [windows_for(n) for n in (-1, 0, 1, 20)] == [None, None, 1, 20]


def test_done_on_the_first_poll_never_sleeps(wait_clock: FakeClock) -> None:
    failures, done = run(Script({"a": [Observation(done=True)]}), windows=None)
    assert (failures, done, wait_clock.sleeps) == ({}, ["a"], 0)


@pytest.mark.parametrize(
    ("polls", "seen_at"), [(2, 0.03), (3, 0.09), (4, 0.21), (5, 0.25), (6, 0.5)]
)
def test_the_first_polls_come_sooner_then_every_quarter_second(
    polls: int, seen_at: float, wait_clock: FakeClock
) -> None:
    script = Script({"a": [NOT_YET] * (polls - 1) + [Observation(done=True)]})
    assert run(script, windows=None) == ({}, ["a"])
    assert wait_clock.now == pytest.approx(seen_at)


@pytest.mark.parametrize("windows", [1, 3])
def test_n_windows_then_the_timeout_message(windows: int, wait_clock: FakeClock) -> None:
    script = Script({"a": [NOT_YET]})
    failures, done = run(script, windows=windows)
    assert (failures, done) == ({"a": "timed out: a"}, [])
    assert script.polls["a"] == POLLS_PER_WINDOW + 8 * (windows - 1)
    assert wait_clock.now == 2.0 * windows


def test_reached_late_in_the_last_window(wait_clock: FakeClock) -> None:
    script = Script({"a": [NOT_YET] * (POLLS_PER_WINDOW + 7) + [Observation(done=True)]})
    assert run(script, windows=2) == ({}, ["a"])


def test_stuck_fails_a_forever_wait_after_one_window() -> None:
    script = Script({"a": [Observation(stuck="cannot be placed")]})
    failures, _ = run(script, windows=None)
    assert failures == {"a": "cannot be placed"}
    assert script.polls["a"] == POLLS_PER_WINDOW


def test_stuck_waits_out_n_windows_and_replaces_the_timeout_message() -> None:
    script = Script({"a": [Observation(stuck="cannot be placed")]})
    failures, _ = run(script, windows=3)
    assert failures == {"a": "cannot be placed"}
    assert script.polls["a"] == POLLS_PER_WINDOW + 2 * 8


def test_stuck_only_counts_at_the_end_of_a_window() -> None:
    early = [Observation(stuck="transient")] * 3 + [NOT_YET] * 20 + [Observation(done=True)]
    assert run(Script({"a": early}), windows=None) == ({}, ["a"])


def test_fatal_fails_at_once() -> None:
    script = Script({"a": [NOT_YET, Observation(fatal="failed")], "b": [Observation(done=True)]})
    failures, done = run(script, windows=None)
    assert (failures, done, script.polls["a"]) == ({"a": "failed"}, ["b"], 2)


def test_units_are_waited_for_together_and_failures_keep_the_given_order() -> None:
    script = Script(
        {
            "c": [NOT_YET] * 5 + [Observation(stuck="c is stuck")],
            "a": [NOT_YET, NOT_YET, Observation(done=True)],
            "b": [Observation(stuck="b is stuck")],
        }
    )
    failures, done = run(script, windows=None)
    assert done == ["a"]
    assert failures == {"c": "c is stuck", "b": "b is stuck"}
    assert list(failures) == ["c", "b"]
    assert script.polls == {"c": POLLS_PER_WINDOW, "a": 3, "b": POLLS_PER_WINDOW}


# -- observations --------------------------------------------------------------------------


def unit(**fields: object) -> Unit:
    return Unit(name="db.service", **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("found", "wanted", "expected"),
    [
        (unit(current_state="launched"), "launched", Observation(done=True)),
        (unit(current_state="loaded"), "launched", NOT_YET),
        (None, "launched", Observation(stuck="unit db.service does not exist")),
        (
            unit(
                current_state="inactive", unplaceable_reasons=("no machine has metadata role=db",)
            ),
            "launched",
            Observation(stuck="unit db.service cannot be placed: no machine has metadata role=db"),
        ),
        (
            unit(unplaceable_reasons=("a", "b")),
            "loaded",
            Observation(stuck="unit db.service cannot be placed: a; b"),
        ),
        (unit(current_state="launched", unplaceable_reasons=("old",)), "inactive", NOT_YET),
    ],
)
def test_observe_unit(found: Unit | None, wanted: str, expected: Observation) -> None:
    assert observe_unit("db.service", found, wanted) == expected


def state(load: str, active: str, sub: str) -> UnitState:
    return UnitState("a.service", "m1", "h", load, active, sub)


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        ([state("loaded", "active", "running")], Observation(done=True)),
        ([state("loaded", "activating", "start")], NOT_YET),
        (
            [state("loaded", "failed", "failed")],
            Observation(fatal="Unit a.service failed: systemd reports loaded/failed/failed"),
        ),
        (
            [state("loaded", "inactive", "dead")],
            Observation(
                stuck="Failed to find an active unit a.service within 2s "
                "(systemd reports loaded/inactive/dead)"
            ),
        ),
        (
            [],
            Observation(
                stuck="Failed to find an active unit a.service within 2s (no state reported)"
            ),
        ),
    ],
)
def test_observe_systemd(states: list[UnitState], expected: Observation) -> None:
    assert observe_systemd("a.service", states, 2.0) == expected


# -- the waiters against the fake API ----------------------------------------------------------


@pytest.fixture
def fake() -> FakeFleet:
    fleet = FakeFleet()
    fleet.add_machine("m1", "10.0.0.1")
    return fleet


def client_of(fake: FakeFleet) -> FleetClient:
    return FleetClient(Endpoint("unix:///x", "http://localhost", "/x"), transport=fake.transport())


def test_wait_for_unit_states_reports_each_unit_once(fake: FakeFleet) -> None:
    fake.lag = 5
    for name in ("a.service", "b.service"):
        fake.add_unit(name, HELLO)
    client = client_of(fake)
    for name in ("a.service", "b.service"):
        client.set_unit_target_state(name, "launched")
    reached: list[Unit] = []
    failures = wait_for_unit_states(
        client, ["a.service", "b.service"], "launched", 0, reached.append
    )
    assert failures == {}
    assert [(u.name, u.current_state, u.machine_id) for u in reached] == [
        ("a.service", "launched", "m1"),
        ("b.service", "launched", "m1"),
    ]


def test_many_units_are_polled_with_list_calls(
    fake: FakeFleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bulk, "LIST_THRESHOLD", 2)
    names = [f"u{i}.service" for i in range(3)]
    for name in names:
        fake.add_unit(name, HELLO, desired="loaded")
    reached: list[Unit] = []
    assert wait_for_unit_states(client_of(fake), names, "loaded", 1, reached.append) == {}
    assert [r.url.path for r in fake.requests] == ["/fleet/v1/units"]
    assert len(reached) == 3


def test_api_errors_while_polling_are_retried(fake: FakeFleet) -> None:
    fake.add_unit("a.service", HELLO, desired="loaded")
    fake.break_route("GET", "/units/a.service", 500, "etcd hiccup")
    failures = wait_for_unit_states(client_of(fake), ["a.service"], "loaded", 1, lambda u: None)
    assert failures == {"a.service": "timed out waiting for unit a.service to report state loaded"}
    assert len(fake.requests) == POLLS_PER_WINDOW


def test_wait_for_systemd_active_uses_the_units_machine(fake: FakeFleet) -> None:
    fake.add_unit("a.service", HELLO, desired="launched")
    client = client_of(fake)
    launched = client.unit("a.service")
    assert launched is not None
    assert wait_for_systemd_active(client, [launched], 0) == {}
    assert fake.requests[-1].url.params["machineID"] == "m1"


def test_wait_for_systemd_active_times_out_after_n_windows(fake: FakeFleet) -> None:
    fake.systemd["a.service"] = ("loaded", "inactive", "dead")
    fake.add_unit("a.service", HELLO, desired="launched")
    client = client_of(fake)
    launched = client.unit("a.service")
    assert launched is not None
    failures = wait_for_systemd_active(client, [launched], 3)
    assert failures == {
        "a.service": "Failed to find an active unit a.service within 6s "
        "(systemd reports loaded/inactive/dead)"
    }


def test_wait_for_destroyed_waits_for_the_states_to_go(fake: FakeFleet) -> None:
    fake.add_unit("a.service", HELLO, desired="launched")
    fake.lag = 4
    client = client_of(fake)
    assert client.destroy_unit("a.service")
    gone: list[str] = []
    assert wait_for_destroyed(client, ["a.service"], 0, gone.append) == {}
    assert gone == ["a.service"]
    assert fake.states == {}
    assert len(fake.requests) > 3  # it polled until the states were dropped
