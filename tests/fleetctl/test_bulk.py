"""Many calls at once: bounded, answered in item order, stopped by a failure; the bulk reads.

Concurrency is shown without a clock: calls meet at a `threading.Barrier` (or the test `Gate`)
that only opens when enough of them are in flight together, with a deadline that a sequential
loop would run into.
"""

from __future__ import annotations

import threading

import httpx
import pytest

from fleetctl import bulk
from fleetctl.bulk import (
    UnitCache,
    each,
    each_until_error,
    fetch_states,
    fetch_units,
)
from fleetctl.client import MAX_IN_FLIGHT, Endpoint, FleetClient, FleetctlError
from tests.fleetctl.conftest import HELLO
from tests.fleetctl.fake_api import FakeFleet
from tests.fleetctl.gate import DEADLINE, Gate


class InFlight:
    """Counts the calls running at once."""

    def __init__(self) -> None:
        self.now = 0
        self.widest = 0
        self.calls: list[int] = []
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        with self._lock:
            self.now += 1
            self.widest = max(self.widest, self.now)

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.now -= 1


def test_calls_run_max_in_flight_at_once_and_never_more() -> None:
    barrier = threading.Barrier(MAX_IN_FLIGHT, timeout=DEADLINE)
    counter = InFlight()

    def call(item: int) -> int:
        with counter:
            barrier.wait()  # opens only when MAX_IN_FLIGHT calls are running together
        return item * 2

    items = list(range(3 * MAX_IN_FLIGHT))
    assert list(each(call, items)) == [(item, item * 2) for item in items]
    assert counter.widest == MAX_IN_FLIGHT


def test_results_come_in_item_order_whatever_order_the_calls_end_in() -> None:
    count = MAX_IN_FLIGHT
    ended: list[int] = []
    turn = threading.Condition()

    def call(item: int) -> str:
        with turn:  # the last item ends first, the first last
            assert turn.wait_for(lambda: set(ended) >= set(range(item + 1, count)), DEADLINE)
            ended.append(item)
            turn.notify_all()
        return f"r{item}"

    items = list(range(count))
    assert list(each(call, items)) == [(item, f"r{item}") for item in items]
    assert ended == list(reversed(items))


def test_each_sends_every_item_and_gives_errors_in_their_place() -> None:
    def call(item: int) -> int:
        if item % 3 == 0:
            raise FleetctlError(f"no {item}")
        return item

    outcomes = [
        (item, str(outcome) if isinstance(outcome, FleetctlError) else outcome)
        for item, outcome in each(call, list(range(7)))
    ]
    assert outcomes == [(0, "no 0"), (1, 1), (2, 2), (3, "no 3"), (4, 4), (5, 5), (6, "no 6")]


def test_one_item_is_called_on_the_callers_thread() -> None:
    threads = []

    def call(item: int) -> int:
        threads.append(threading.current_thread())
        return item

    assert list(each(call, [1])) == [(1, 1)]
    assert list(each_until_error(call, [2])) == [(2, 2)]
    assert threads == [threading.current_thread()] * 2
    assert list(each(call, [])) == []


def test_until_error_reports_the_items_before_the_first_failure_then_raises_it() -> None:
    items = list(range(6))
    everyone = threading.Barrier(len(items), timeout=DEADLINE)  # all are sent before any ends

    def call(item: int) -> int:
        everyone.wait()
        if item == 3:
            raise FleetctlError("no 3")
        return item

    seen: list[tuple[int, int]] = []
    with pytest.raises(FleetctlError, match=r"^no 3$"):
        seen.extend(each_until_error(call, items))
    assert seen == [(0, 0), (1, 1), (2, 2)]


def test_until_error_raises_the_first_failure_in_item_order_not_in_time() -> None:
    items = list(range(6))
    everyone = threading.Barrier(len(items), timeout=DEADLINE)
    five_failed = threading.Event()

    def call(item: int) -> int:
        everyone.wait()
        if item == 5:
            five_failed.set()
            raise FleetctlError("no 5")
        if item == 3:
            assert five_failed.wait(DEADLINE)
            raise FleetctlError("no 3")
        return item

    with pytest.raises(FleetctlError, match=r"^no 3$"):
        list(each_until_error(call, items))


def test_until_error_starts_no_call_after_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bulk, "MAX_IN_FLIGHT", 1)  # a failure is seen before the next call
    calls = []

    def call(item: int) -> int:
        calls.append(item)
        if item == 1:
            raise FleetctlError("no 1")
        return item

    seen: list[tuple[int, int]] = []
    with pytest.raises(FleetctlError, match=r"^no 1$"):
        seen.extend(each_until_error(call, list(range(5))))
    assert seen == [(0, 0)]
    assert calls == [0, 1]


# -- bulk reads over the API ---------------------------------------------------------------


def client_of(transport: httpx.BaseTransport) -> FleetClient:
    return FleetClient(Endpoint("unix:///x", "http://localhost", "/x"), transport=transport)


def is_unit_get(request: httpx.Request) -> bool:
    return request.method == "GET" and request.url.path.startswith("/fleet/v1/units/")


def test_a_few_units_are_read_with_concurrent_gets() -> None:
    fake = FakeFleet()
    for name in ("c.service", "a.service"):
        fake.add_unit(name, HELLO)
    names = ["c.service", "nope.service", "a.service"]
    gate = Gate(fake.handle, len(names), is_unit_get)
    found = fetch_units(client_of(gate.transport()), names)
    assert list(found) == names
    assert [unit.name if unit else None for unit in found.values()] == [
        "c.service",
        None,
        "a.service",
    ]
    assert (gate.refusals, gate.batches) == ([], 1)


def test_many_units_are_read_with_one_paged_list() -> None:
    fake = FakeFleet(page_limit=10)
    names = [f"u{i}.service" for i in range(bulk.LIST_THRESHOLD + 1)]
    for name in [*names, "other.service"]:
        fake.add_unit(name, HELLO)
    found = fetch_units(client_of(fake.transport()), [*reversed(names), "gone.service"])
    assert list(found) == [*reversed(names), "gone.service"]
    assert found["gone.service"] is None
    assert all(found[name] is not None for name in names)
    assert {r.url.path for r in fake.requests} == {"/fleet/v1/units"}
    assert len(fake.requests) == 2  # two pages


def test_states_of_a_few_units_on_their_machines() -> None:
    fake = FakeFleet()
    fake.add_machine("m1")
    fake.add_unit("a.service", HELLO, desired="launched")
    fake.add_unit("b.service", HELLO, desired="launched")
    states = fetch_states(
        client_of(fake.transport()), ["b.service", "a.service"], {"a.service": "m2"}
    )
    assert list(states) == ["b.service", "a.service"]
    assert [s.machine_id for s in states["b.service"]] == ["m1"]
    assert states["a.service"] == []  # it runs on m1, not m2
    asked = {r.url.params["unitName"]: r.url.params.get("machineID") for r in fake.requests}
    assert asked == {"a.service": "m2", "b.service": None}


def test_states_of_many_units_with_one_paged_list() -> None:
    fake = FakeFleet(page_limit=5)
    fake.add_machine("m1")
    names = [f"u{i}.service" for i in range(bulk.LIST_THRESHOLD + 1)]
    for name in [*names, "other.service"]:
        fake.add_unit(name, HELLO, desired="launched")
    states = fetch_states(client_of(fake.transport()), names, {names[0]: "m2"})
    assert states[names[0]] == []
    assert all([s.machine_id for s in states[name]] == ["m1"] for name in names[1:])
    assert "other.service" not in states
    assert {r.url.path for r in fake.requests} == {"/fleet/v1/state"}


def test_a_failed_read_raises() -> None:
    fake = FakeFleet()
    fake.break_route("GET", "/units/b.service", 500, "etcd is unreachable")
    with pytest.raises(FleetctlError, match=r"etcd is unreachable \(HTTP 500\)"):
        fetch_units(client_of(fake.transport()), ["a.service", "b.service"])


def test_the_unit_cache_reads_nothing_before_its_first_lookup() -> None:
    fake = FakeFleet()
    fake.add_unit("w@.service", HELLO)
    cache = UnitCache(client_of(fake.transport()), ["w@1.service", "w@2.service"])
    assert fake.requests == []
    assert cache.unit("w@1.service") is None
    assert cache.unit("w@2.service") is None
    template = cache.unit("w@.service")  # not among the names: read on first use, then kept
    assert template is not None
    assert cache.unit("w@.service") is template
    paths = [r.url.path for r in fake.requests]
    assert sorted(paths) == [
        "/fleet/v1/units/w@.service",
        "/fleet/v1/units/w@1.service",
        "/fleet/v1/units/w@2.service",
    ]


def test_a_listed_unit_cache_knows_every_unit() -> None:
    fake = FakeFleet()
    fake.add_unit("w@.service", HELLO)
    names = [f"w@{i}.service" for i in range(bulk.LIST_THRESHOLD + 1)]
    cache = UnitCache(client_of(fake.transport()), names)
    assert cache.unit(names[0]) is None
    assert cache.unit("w@.service") is not None
    assert cache.unit("nope.service") is None
    assert [r.url.path for r in fake.requests] == ["/fleet/v1/units"]
