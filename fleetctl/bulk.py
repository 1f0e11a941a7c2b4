"""Many API calls at once: one call per item, at most `MAX_IN_FLIGHT` in flight, results in the
items' order.

Role: what lets a command on 1,000 units cost about 1,000/16 round trips instead of 1,000. The
commands and the waits hand a call and a list of items (unit names, units) to `each` or
`each_until_error`; worker threads run the calls over the run's one `FleetClient` (httpx's
client may be shared between threads; its one connection pool holds as many connections as
there are calls in flight), and the main thread gets the results back in the order of the
items, whatever order the answers came in. The commands print from the main thread only, so
the output is in the items' order.

Invariants:
* at most `MAX_IN_FLIGHT` calls run at once; a list of one item is called on the main thread;
* `each` sends every item and yields each result or `FleetctlError` in order;
* `each_until_error` is fleet's "stop at the first failure" for a list of writes: once a call
  has failed, no new call starts (calls in flight finish); the results are yielded in order up
  to the first item that failed or was not sent, and then the first failure in the items' order
  is raised. With one call in flight this is exactly the sequential loop it replaces;
* when the consumer stops early (an exception, a closed generator), no new call starts and the
  calls in flight are waited for before control returns.

`fetch_units` and `fetch_states` read what a command needs about many units in one go: one
paged list when there are more than `LIST_THRESHOLD` of them, else one GET per unit through
`each_until_error`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from fleetctl.client import MAX_IN_FLIGHT, FleetClient, FleetctlError
from fleetctl.models import Unit, UnitState

Item = TypeVar("Item")
Result = TypeVar("Result")

LIST_THRESHOLD = 16
"""Above this many units, one paged list call (`GET /units`, `GET /state`) replaces a GET per
unit: the list costs a round trip per page of the whole registry, the GETs one per unit."""


class _NotSent:
    """The result of a call that was never made, because another call had failed."""


NOT_SENT = _NotSent()


def _run(
    call: Callable[[Item], Result], items: Sequence[Item], stop_on_error: bool, in_flight: int
) -> Generator[Result | FleetctlError | _NotSent, None, None]:
    """Each item's outcome, in order: its result, its `FleetctlError`, or `NOT_SENT`."""
    if len(items) <= 1 or in_flight <= 1:
        failed = False
        for item in items:
            if failed:
                yield NOT_SENT
                continue
            try:
                yield call(item)
            except FleetctlError as exc:
                failed = stop_on_error
                yield exc
        return
    stop = threading.Event()

    def guarded(item: Item) -> Result | FleetctlError | _NotSent:
        if stop.is_set():
            return NOT_SENT
        try:
            return call(item)
        except FleetctlError as exc:
            if stop_on_error:
                stop.set()
            return exc

    workers = min(in_flight, len(items))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fleetctl") as pool:
        futures: list[Future[Result | FleetctlError | _NotSent]] = [
            pool.submit(guarded, item) for item in items
        ]
        try:
            for future in futures:
                yield future.result()
        finally:
            stop.set()  # a consumer that stopped early wants no more requests


def each(
    call: Callable[[Item], Result], items: Sequence[Item]
) -> Generator[tuple[Item, Result | FleetctlError], None, None]:
    """`(item, call(item))` for every item, in order, with a failed call's `FleetctlError` in
    place of its result; at most `MAX_IN_FLIGHT` calls at once."""
    outcomes = _run(call, items, stop_on_error=False, in_flight=MAX_IN_FLIGHT)
    try:
        for item, outcome in zip(items, outcomes, strict=True):
            assert not isinstance(outcome, _NotSent), "each sends every item"
            yield item, outcome
    finally:
        outcomes.close()


def each_until_error(
    call: Callable[[Item], Result], items: Sequence[Item], *, in_flight: int = MAX_IN_FLIGHT
) -> Generator[tuple[Item, Result], None, None]:
    """`(item, call(item))` in order until the first item that failed or was not sent; then
    the first `FleetctlError` in the items' order is raised. After a failure no new call
    starts. `in_flight=1` makes the calls one after another, in order."""
    first_error: FleetctlError | None = None
    blocked = False
    outcomes = _run(call, items, stop_on_error=True, in_flight=in_flight)
    try:
        for item, outcome in zip(items, outcomes, strict=True):
            if isinstance(outcome, FleetctlError):
                first_error = first_error or outcome
                blocked = True
            elif isinstance(outcome, _NotSent):
                blocked = True
            elif not blocked:
                yield item, outcome
    finally:
        outcomes.close()
    if first_error is not None:
        raise first_error


def fetch_units(client: FleetClient, names: Sequence[str]) -> dict[str, Unit | None]:
    """Each named unit (None: not in the registry), keyed in the order of `names`."""
    found: dict[str, Unit | None] = dict.fromkeys(names)
    if len(found) > LIST_THRESHOLD:
        found.update({unit.name: unit for unit in client.units() if unit.name in found})
        return found
    found.update(each_until_error(client.unit, list(found)))
    return found


def fetch_states(
    client: FleetClient, names: Sequence[str], machine_of: Mapping[str, str] | None = None
) -> dict[str, list[UnitState]]:
    """The states machines report for each named unit, keyed in the order of `names`; with
    `machine_of`, only the state on that unit's machine (when it names one)."""
    found: dict[str, list[UnitState]] = {name: [] for name in names}
    machine_of = machine_of or {}
    if len(found) > LIST_THRESHOLD:
        for state in client.unit_states():
            machine = machine_of.get(state.name)
            if state.name in found and (not machine or machine == state.machine_id):
                found[state.name].append(state)
        return found

    def states_of(name: str) -> list[UnitState]:
        return client.unit_states(unit_name=name, machine_id=machine_of.get(name, ""))

    found.update(each_until_error(states_of, list(found)))
    return found


class UnitCache:
    """The registry as one command reads it. The first lookup fetches all the named units at
    once (`fetch_units`'s rule: the whole list when there are more than `LIST_THRESHOLD`, and
    then every unit is known); any other unit (a template) is read on first use; every answer
    is kept. Nothing is sent before the first lookup."""

    def __init__(self, client: FleetClient, names: Sequence[str]) -> None:
        self._client = client
        self._names = list(dict.fromkeys(names))
        self._complete = len(self._names) > LIST_THRESHOLD
        self._units: dict[str, Unit | None] | None = None

    def unit(self, name: str) -> Unit | None:
        if self._units is None:
            if self._complete:
                self._units = {unit.name: unit for unit in self._client.units()}
            else:
                self._units = fetch_units(self._client, self._names)
        if name not in self._units:
            self._units[name] = None if self._complete else self._client.unit(name)
        return self._units[name]
