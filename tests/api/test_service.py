"""The service: fleet's PUT rules as a pure plan, reads joined from the view, bounded writes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, replace
from typing import Any

import pytest

from devtools.etcd_server import EtcdServer
from fleetd.api.errors import (
    OUTCOME_UNKNOWN_MESSAGE,
    UNAVAILABLE_MESSAGE,
    ApiError,
    BadRequest,
    DesiredStateRequired,
    OptionsRequired,
    Unavailable,
    UnitNotFound,
    UnitStateNotFound,
    status_and_message,
)
from fleetd.api.pagination import PageToken
from fleetd.api.schemas import MetadataOp, UnitRequest
from fleetd.api.service import ApiService, SetOutcome, current_state, plan_set_unit
from fleetd.api.view import ApiView
from fleetd.core.model import Machine, Placement
from fleetd.core.states import JobState
from fleetd.core.submission import InvalidUnit
from fleetd.core.unitfile import UnitFile, UnitOption
from fleetd.registry.client import EtcdClient
from fleetd.registry.codec import UnitRecord, UnitStateRecord, decode_unit, encode_unit
from fleetd.registry.keys import Keys
from tests.api.helpers import (
    M1,
    M2,
    VIEW_WAIT,
    options,
    place,
    publish_state,
    simple_options,
    store_machine,
    store_reasons,
    store_unit,
)
from tests.registry.hooks import Txn, hook_txn

INACTIVE, LOADED, LAUNCHED = JobState.INACTIVE, JobState.LOADED, JobState.LAUNCHED
OPTS = simple_options("a")
OTHER = simple_options("b")
EXISTING = UnitRecord("a.service", OPTS, UnitFile(OPTS).hash, LOADED)


def count_calls(monkeypatch: pytest.MonkeyPatch, client: EtcdClient) -> Counter[str]:
    """Count the client's KV calls by method name (each is one round trip to etcd)."""
    calls: Counter[str] = Counter()
    for name in ("get", "get_prefix", "put", "delete", "txn"):
        real = getattr(client, name)

        def counted(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            calls[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(client, name, counted)
    return calls


# ---- the pure plan


@pytest.mark.parametrize(
    ("request_", "existing", "record", "outcome"),
    [
        (UnitRequest(options=OPTS), None, replace(EXISTING, desired=INACTIVE), SetOutcome.CREATED),
        (
            UnitRequest("", "launched", OPTS),
            None,
            replace(EXISTING, desired=LAUNCHED),
            SetOutcome.CREATED,
        ),
        (
            UnitRequest(options=OTHER),
            EXISTING,
            UnitRecord("a.service", OTHER, UnitFile(OTHER).hash, INACTIVE),
            SetOutcome.REPLACED,
        ),
        (
            UnitRequest(desired_state="launched"),
            EXISTING,
            replace(EXISTING, desired=LAUNCHED),
            SetOutcome.UPDATED,
        ),
        (
            UnitRequest("", "launched", OPTS),
            EXISTING,
            replace(EXISTING, desired=LAUNCHED),
            SetOutcome.UPDATED,
        ),
        (UnitRequest(desired_state="loaded"), EXISTING, EXISTING, SetOutcome.UNCHANGED),
    ],
)
def test_plan_set_unit(
    request_: UnitRequest, existing: UnitRecord | None, record: UnitRecord, outcome: SetOutcome
) -> None:
    assert plan_set_unit("a.service", request_, existing) == (record, outcome)


TEMPLATE_OPTS = simple_options("t")
TEMPLATE = UnitRecord("t@.service", TEMPLATE_OPTS, UnitFile(TEMPLATE_OPTS).hash, INACTIVE)


@pytest.mark.parametrize(
    ("name", "request_", "existing", "error", "message"),
    [
        (
            "a.service",
            UnitRequest(desired_state="launched"),
            None,
            OptionsRequired,
            "options field empty",
        ),
        (
            "a.service",
            UnitRequest("", "bogus", OPTS),
            None,
            BadRequest,
            'invalid desiredState "bogus"',
        ),
        (
            "a.service",
            UnitRequest("", "bogus", OTHER),
            EXISTING,
            BadRequest,
            'invalid desiredState "bogus"',
        ),
        (
            "a.service",
            UnitRequest(desired_state="bogus"),
            EXISTING,
            BadRequest,
            'invalid desiredState "bogus"',
        ),
        ("a.service", UnitRequest(), EXISTING, DesiredStateRequired, "must provide DesiredState"),
        ("a.service", UnitRequest(options=OPTS), EXISTING, DesiredStateRequired, "must provide"),
        (
            "t@.service",
            UnitRequest("", "launched", TEMPLATE_OPTS),
            None,
            InvalidUnit,
            'activate template "t@.service"',
        ),
        (
            "t@.service",
            UnitRequest(desired_state="loaded"),
            TEMPLATE,
            InvalidUnit,
            'activate template "t@.service"',
        ),
        (
            "a.service",
            UnitRequest(
                options=OPTS
                + options(("X-Fleet", "Global", "1"), ("X-Fleet", "MachineOf", "b.service"))
            ),
            EXISTING,  # replacing: the options are checked again (fleet did not)
            InvalidUnit,
            "Global cannot be used with Peers",
        ),
    ],
)
def test_plan_set_unit_refusals(
    name: str,
    request_: UnitRequest,
    existing: UnitRecord | None,
    error: type[Exception],
    message: str,
) -> None:
    with pytest.raises(error) as caught:
        plan_set_unit(name, request_, existing)
    assert message in str(caught.value)


STATE = UnitStateRecord("loaded", "active", "running", "h")


@pytest.mark.parametrize(
    ("placement", "state", "current"),
    [
        (None, None, INACTIVE),
        (None, STATE, INACTIVE),
        (Placement("a.service", M1, "h", LAUNCHED), None, INACTIVE),
        (
            Placement("a.service", M1, "h", LAUNCHED),
            replace(STATE, active_state="inactive"),
            LOADED,
        ),
        (Placement("a.service", M1, "h", LAUNCHED), STATE, LAUNCHED),
        (Placement("a.service", M1, "h", LOADED), replace(STATE, active_state="failed"), LAUNCHED),
        (
            Placement("a.service", M1, "h", LAUNCHED),
            replace(STATE, active_state="activating"),
            LAUNCHED,
        ),
    ],
)
def test_current_state(
    placement: Placement | None, state: UnitStateRecord | None, current: JobState
) -> None:
    assert current_state(placement, state) is current


# ---- reads from the view


async def test_unit_status_joins_the_view(
    etcd: EtcdClient, keys: Keys, view: ApiView, service: ApiService
) -> None:
    hello = await store_unit(etcd, keys, view, "hello.service")
    status = service.unit_status("hello.service", listing=False)
    assert (status.current, status.machine_id, status.reasons) == (INACTIVE, "", ())
    await store_reasons(etcd, keys, view, "hello.service", ("no machine",))
    assert service.unit_status("hello.service", listing=True).reasons == ("no machine",)
    await place(etcd, keys, view, hello, M2)
    await place(etcd, keys, view, hello, M1)  # on two machines for a moment: the lower id is shown
    status = service.unit_status("hello.service", listing=False)
    assert (status.current, status.machine_id) == (INACTIVE, M1)
    await publish_state(etcd, keys, view, "hello.service", M2)
    assert service.unit_status("hello.service", listing=False).current is INACTIVE  # not M1's state
    await publish_state(etcd, keys, view, "hello.service", M1, active="inactive")
    assert service.unit_status("hello.service", listing=False).current is LOADED
    await publish_state(etcd, keys, view, "hello.service", M1)
    assert service.unit_status("hello.service", listing=True).current is LAUNCHED
    with pytest.raises(UnitNotFound):
        service.unit_status("nope.service", listing=False)


async def test_global_units_report_no_machine(
    etcd: EtcdClient, keys: Keys, view: ApiView, service: ApiService
) -> None:
    glob = options(("Service", "ExecStart", "/x"), ("X-Fleet", "Global", "yes"))
    record = await store_unit(etcd, keys, view, "g.service", glob)
    await place(etcd, keys, view, record, M1)
    await publish_state(etcd, keys, view, "g.service", M1)
    single = service.unit_status("g.service", listing=False)
    listed = service.unit_status("g.service", listing=True)
    assert (single.current, single.machine_id) == (None, "")
    assert (listed.current, listed.machine_id) == (INACTIVE, "")


async def test_get_state_prefers_the_placed_machine(
    etcd: EtcdClient, keys: Keys, view: ApiView, service: ApiService
) -> None:
    with pytest.raises(UnitStateNotFound):
        service.get_state("hello.service")
    hello = await store_unit(etcd, keys, view, "hello.service")
    await publish_state(etcd, keys, view, "hello.service", M1)
    placed = await publish_state(etcd, keys, view, "hello.service", M2, active="inactive")
    assert service.get_state("hello.service")[0] == M1
    await place(etcd, keys, view, hello, M2)
    assert service.get_state("hello.service") == (M2, placed)


async def test_lists_page_and_filter(
    etcd: EtcdClient, keys: Keys, view: ApiView, service: ApiService
) -> None:
    for machine in (M2, M1):
        await store_machine(etcd, keys, view, Machine(machine))
        for unit in ("b.service", "a.service"):
            await publish_state(etcd, keys, view, unit, machine)
    token = PageToken(100, 1)
    assert [m.id for m in service.list_machines(token).items] == [M1, M2]
    pairs = [(u, m) for u, m, _ in service.list_states(token).items]
    assert pairs == [("a.service", M1), ("a.service", M2), ("b.service", M1), ("b.service", M2)]
    by_machine = service.list_states(token, machine_id=M2).items
    assert [(u, m) for u, m, _ in by_machine] == [("a.service", M2), ("b.service", M2)]
    both = service.list_states(token, machine_id=M2, unit_name="b.service").items
    assert [(u, m) for u, m, _ in both] == [("b.service", M2)]
    assert service.list_states(token, unit_name="c.service").items == []
    small = ApiService(etcd, keys, view, token_limit=3)
    first = small.list_states(PageToken(3, 1))
    assert (len(first.items), first.next_token) == (3, PageToken(3, 2))
    assert [u for u, _, _ in small.list_states(PageToken(3, 2)).items] == ["b.service"]


# ---- writes


async def test_a_write_returns_once_the_view_shows_it(
    etcd: EtcdClient, keys: Keys, view: ApiView, service: ApiService
) -> None:
    for attempt in range(20):  # each check is synchronous right after the write returned
        name = f"u{attempt}.service"
        assert await service.set_unit(name, UnitRequest(options=OPTS)) is SetOutcome.CREATED
        assert view.units[name].desired is INACTIVE
        assert (
            await service.set_unit(name, UnitRequest(desired_state="launched"))
            is SetOutcome.UPDATED
        )
        assert view.units[name].desired is LAUNCHED
        await service.destroy_unit(name)
        assert name not in view.units
    await service.patch_machines([MetadataOp("add", f"/{M1}/metadata/role", "web")])
    await store_machine(etcd, keys, view, Machine(M1))
    assert view.machines[M1].metadata == {"role": "web"}


async def test_a_write_costs_one_round_trip_when_the_view_is_current(
    etcd: EtcdClient, keys: Keys, service: ApiService, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = count_calls(monkeypatch, etcd)

    async def costs(write: Awaitable[object]) -> dict[str, int]:
        calls.clear()
        with contextlib.suppress(ApiError):
            await write
        return dict(calls)

    one = {"txn": 1}
    assert await costs(service.set_unit("a.service", UnitRequest(options=OPTS))) == one
    assert await costs(service.set_unit("a.service", UnitRequest(desired_state="loaded"))) == one
    assert await costs(service.set_unit("a.service", UnitRequest(desired_state="loaded"))) == one
    assert await costs(service.set_unit("a.service", UnitRequest(options=OTHER))) == one
    assert await costs(service.set_unit("a.service", UnitRequest(options=OTHER))) == one  # 409
    assert await costs(service.set_unit("b.service", UnitRequest())) == one  # 409
    assert await costs(service.destroy_unit("a.service")) == one
    assert await costs(service.destroy_unit("a.service")) == one  # 404
    metadata = [MetadataOp("add", f"/{M1}/metadata/role", "web")]
    assert await costs(service.patch_machines(metadata)) == one


async def test_a_lost_race_is_decided_again(
    etcd: EtcdClient,
    keys: Keys,
    view: ApiView,
    service: ApiService,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await service.set_unit("a.service", UnitRequest(options=OPTS))
    replaced = UnitRecord("a.service", OTHER, UnitFile(OTHER).hash, LOADED)

    async def someone_writes_first(real: Txn, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        await etcd.put(keys.unit("a.service"), encode_unit(replaced))  # another client, just now
        return await real(*args, **kwargs)

    calls = hook_txn(monkeypatch, etcd, someone_writes_first)
    outcome = await service.set_unit("a.service", UnitRequest(desired_state="launched"))
    assert (outcome, calls) == (SetOutcome.UPDATED, ["hooked", "real"])
    # the other client's options survived, with the state asked for on top
    assert view.units["a.service"] == replace(replaced, desired=LAUNCHED)


async def test_a_stale_view_neither_loses_nor_duplicates_a_write(
    etcd: EtcdClient, keys: Keys, view: ApiView
) -> None:
    """Each request decides from a view that stopped following etcd (as a slow one would be, for
    longer), while other clients wrote behind its back: the guard fails, and the request decides
    again from etcd."""
    before = {
        name: await store_unit(etcd, keys, view, name)
        for name in ("b.service", "d.service", "e.service")
    }
    frozen = ApiView(etcd, keys)
    task = asyncio.create_task(frozen.run())
    await asyncio.wait_for(frozen.wait_ready(), VIEW_WAIT)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    service = ApiService(etcd, keys, frozen, request_timeout=0.5)  # short waits for the view

    async def behind_its_back(
        name: str, opts: tuple[UnitOption, ...] | None, desired: JobState = LOADED
    ) -> None:
        key = keys.unit(name)
        if opts is None:
            await etcd.delete(key)
        else:
            await etcd.put(key, encode_unit(UnitRecord(name, opts, UnitFile(opts).hash, desired)))

    await behind_its_back("a.service", OPTS)  # created; the view says absent
    await behind_its_back("b.service", before["b.service"].options, LOADED)  # stopped
    await behind_its_back("c.service", OPTS)  # created; the view says absent
    await behind_its_back("d.service", None)  # destroyed; the view says present
    await behind_its_back("e.service", OTHER, LAUNCHED)  # replaced

    async def stored(name: str) -> tuple[UnitRecord | None, int]:
        kv = await etcd.get(keys.unit(name))
        return (None, 0) if kv is None else (decode_unit(kv.key, kv.value), kv.version)

    launch = UnitRequest(desired_state="launched")
    assert await service.set_unit("a.service", launch) is SetOutcome.UPDATED  # not a 409
    assert await stored("a.service") == (
        UnitRecord("a.service", OPTS, UnitFile(OPTS).hash, LAUNCHED),
        2,
    )
    assert await service.set_unit("b.service", launch) is SetOutcome.UPDATED  # not "unchanged"
    assert await stored("b.service") == (replace(before["b.service"], desired=LAUNCHED), 3)
    await service.destroy_unit("c.service")  # not a 404
    assert await stored("c.service") == (None, 0)
    with pytest.raises(UnitNotFound):
        await service.destroy_unit("d.service")
    mine = before["e.service"].options
    replace_back = UnitRequest("", "launched", mine)
    assert await service.set_unit("e.service", replace_back) is SetOutcome.REPLACED  # not 204
    assert await stored("e.service") == (
        UnitRecord("e.service", mine, UnitFile(mine).hash, LAUNCHED),
        3,
    )
    with pytest.raises(OptionsRequired):  # nothing behind its back: the view's answer stands
        await service.set_unit("f.service", launch)
    assert await stored("f.service") == (None, 0)


async def test_patch_checks_every_op_before_writing(
    etcd: EtcdClient, keys: Keys, service: ApiService
) -> None:
    ops = [MetadataOp("add", f"/{M1}/metadata/a", "1"), MetadataOp("add", f"/{M1}/metadata/b", "")]
    with pytest.raises(BadRequest, match="add and replace require a value"):
        await service.patch_machines(ops)
    kvs, _ = await etcd.get_prefix(keys.prefix)
    assert kvs == []


async def test_a_view_that_is_not_ready_is_unavailable(etcd: EtcdClient, keys: Keys) -> None:
    idle = ApiService(etcd, keys, ApiView(etcd, keys))
    with pytest.raises(Unavailable):
        idle.list_units(PageToken(100, 1))
    with pytest.raises(Unavailable):
        await idle.set_unit("a.service", UnitRequest(options=OPTS))
    with pytest.raises(Unavailable):
        await idle.destroy_unit("a.service")
    kvs, _ = await etcd.get_prefix(keys.prefix)
    assert kvs == []


@dataclass
class PrivateApi:
    """The service on a private etcd that the test may pause."""

    etcd_server: EtcdServer
    client: EtcdClient
    keys: Keys
    view: ApiView
    service: ApiService


@pytest.fixture
async def private_api(private_etcd: EtcdServer, key_prefix: str) -> AsyncIterator[PrivateApi]:
    client = await EtcdClient.connect([private_etcd.endpoint], timeout=0.5)
    keys = Keys(key_prefix)
    view = ApiView(client, keys)
    task = asyncio.create_task(view.run())
    try:
        await asyncio.wait_for(view.wait_ready(), VIEW_WAIT)
        service = ApiService(client, keys, view, request_timeout=0.5)
        yield PrivateApi(private_etcd, client, keys, view, service)
    finally:
        private_etcd.resume()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()


async def test_a_busy_event_loop_does_not_turn_etcds_answer_into_a_503(
    private_api: PrivateApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    """etcd answers a PUT in time while the event loop is stuck in other work for longer than
    the request timeout (fleetd's engine and many GETs share the loop): the write is applied,
    and so the answer is a success, not 503."""
    api = private_api
    loop = asyncio.get_running_loop()

    def busy() -> None:  # runs on the loop: etcd goes on and answers while the loop is stuck
        api.etcd_server.resume()
        time.sleep(2 * api.service.request_timeout)

    async def answered_while_busy(real: Txn, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        api.etcd_server.pause()  # the request waits in etcd's socket until `busy` resumes etcd
        loop.call_later(0.05, busy)
        return await real(*args, **kwargs)

    hook_txn(monkeypatch, api.client, answered_while_busy, writes_only=True)
    assert await api.service.set_unit("a.service", UnitRequest(options=OPTS)) is SetOutcome.CREATED
    assert api.view.units["a.service"].options == OPTS


@pytest.mark.parametrize("request_", ["create", "update", "replace", "destroy", "patch"])
async def test_a_write_whose_answer_etcd_lost_while_paused_gets_its_true_status(
    private_api: PrivateApi, monkeypatch: pytest.MonkeyPatch, request_: str
) -> None:
    """etcd is stopped (SIGSTOP) as the write is sent and resumed once the call has timed out;
    then it may apply the request it had received. The request finds out and answers the
    write's own success, having applied it exactly once."""
    api = private_api
    if request_ != "create":
        await api.service.set_unit("a.service", UnitRequest(options=OPTS))
    service = api.service

    async def write() -> object:
        if request_ == "create":
            return await service.set_unit("a.service", UnitRequest("", "launched", OPTS))
        if request_ == "update":
            return await service.set_unit("a.service", UnitRequest(desired_state="launched"))
        if request_ == "replace":
            return await service.set_unit("a.service", UnitRequest(options=OTHER))
        if request_ == "destroy":
            await service.destroy_unit("a.service")
        else:
            await service.patch_machines([MetadataOp("add", f"/{M1}/metadata/r", "w")])
        return None

    expected = {
        "create": (SetOutcome.CREATED, 1),
        "update": (SetOutcome.UPDATED, 2),
        "replace": (SetOutcome.REPLACED, 2),
        "destroy": (None, 0),
        "patch": (None, 1),
    }[request_]

    async def paused(real: Txn, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        api.etcd_server.pause()
        try:
            return await real(*args, **kwargs)
        finally:
            api.etcd_server.resume()

    calls = hook_txn(monkeypatch, api.client, paused, writes_only=True)
    outcome = await asyncio.wait_for(write(), VIEW_WAIT)
    key = api.keys.metadata_key(M1, "r") if request_ == "patch" else api.keys.unit("a.service")
    kv = await api.client.get(key)
    assert (outcome, 0 if kv is None else kv.version) == expected
    assert calls[0] == "hooked"


async def _status_of(write: Awaitable[object]) -> tuple[int, str]:
    try:
        await asyncio.wait_for(write, VIEW_WAIT)
    except Exception as exc:
        return status_and_message(exc)
    raise AssertionError("the write succeeded against a stopped etcd")


async def test_an_etcd_that_stays_silent_gives_503_or_504(private_api: PrivateApi) -> None:
    """503 only where nothing can have been written; 504 where the outcome stays unknown."""
    api = private_api
    await api.service.set_unit("b.service", UnitRequest(options=OPTS))
    api.etcd_server.pause()
    unknown = (504, OUTCOME_UNKNOWN_MESSAGE)
    nothing_written = (503, UNAVAILABLE_MESSAGE)
    service = api.service
    assert await _status_of(service.set_unit("a.service", UnitRequest(options=OPTS))) == unknown
    assert await _status_of(service.destroy_unit("b.service")) == unknown
    patch = [MetadataOp("add", f"/{M1}/metadata/a", "1")]
    assert await _status_of(service.patch_machines(patch)) == unknown
    # confirming a refusal or a no-op writes nothing: etcd's silence is a plain 503
    assert await _status_of(service.destroy_unit("a.service")) == nothing_written
    assert await _status_of(service.set_unit("c.service", UnitRequest())) == nothing_written
    assert [u.record.name for u in service.list_units(PageToken(100, 1)).items] == ["b.service"]
