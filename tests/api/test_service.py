"""The service: fleet's PUT rules as a pure plan, reads joined from the view, bounded writes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from dataclasses import replace
from typing import Any

import pytest

from devtools.etcd_server import EtcdServer
from fleetd.api import service as service_module
from fleetd.api.errors import (
    UNAVAILABLE_MESSAGE,
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
from fleetd.core.unitfile import UnitFile
from fleetd.registry import units as units_module
from fleetd.registry.client import EtcdClient
from fleetd.registry.codec import UnitRecord, UnitStateRecord, encode_unit
from fleetd.registry.keys import Keys
from fleetd.registry.units import StoredUnit
from tests.api.helpers import (
    M1,
    M2,
    options,
    place,
    publish_state,
    simple_options,
    store_machine,
    store_reasons,
    store_unit,
)

INACTIVE, LOADED, LAUNCHED = JobState.INACTIVE, JobState.LOADED, JobState.LAUNCHED
OPTS = simple_options("a")
OTHER = simple_options("b")
EXISTING = UnitRecord("a.service", OPTS, UnitFile(OPTS).hash, LOADED)


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
            UnitRequest(options=OPTS + options(("X-Fleet", "MachineMetdata", "a=b"))),
            None,
            InvalidUnit,
            'unrecognized requirement in [X-Fleet] section: "MachineMetdata"',
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


async def test_a_lost_race_is_decided_again(
    etcd: EtcdClient,
    keys: Keys,
    view: ApiView,
    service: ApiService,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await service.set_unit("a.service", UnitRequest(options=OPTS))
    real_read = units_module.read_unit
    calls = 0

    async def read_then_someone_writes(
        client: EtcdClient, keys_: Keys, name: str
    ) -> StoredUnit | None:
        nonlocal calls
        calls += 1
        stored = await real_read(client, keys_, name)
        if calls == 1:  # another client replaces the unit between our read and our write
            replaced = UnitRecord(name, OTHER, UnitFile(OTHER).hash, LOADED)
            await etcd.put(keys_.unit(name), encode_unit(replaced))
        return stored

    monkeypatch.setattr(service_module, "read_unit", read_then_someone_writes)
    outcome = await service.set_unit("a.service", UnitRequest(desired_state="launched"))
    assert (outcome, calls) == (SetOutcome.UPDATED, 2)
    assert view.units["a.service"].options == OTHER  # the other write survived
    assert view.units["a.service"].desired is LAUNCHED


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


async def _status_of(write: Coroutine[Any, Any, object]) -> tuple[int, str]:
    try:
        await write
    except Exception as exc:
        return status_and_message(exc)
    raise AssertionError("the write succeeded against a stopped etcd")


async def test_a_stopped_etcd_is_unavailable_within_the_timeout(
    private_etcd: EtcdServer, key_prefix: str
) -> None:
    client = await EtcdClient.connect([private_etcd.endpoint], timeout=0.5)
    keys = Keys(key_prefix)
    view = ApiView(client, keys)
    task = asyncio.create_task(view.run())
    try:
        await asyncio.wait_for(view.wait_ready(), 10)
        service = ApiService(client, keys, view, request_timeout=1.0)
        private_etcd.pause()
        for write in (
            service.set_unit("a.service", UnitRequest(options=OPTS)),
            service.destroy_unit("a.service"),
            service.patch_machines([MetadataOp("add", f"/{M1}/metadata/a", "1")]),
        ):
            started = time.monotonic()
            assert await _status_of(write) == (503, UNAVAILABLE_MESSAGE)
            assert time.monotonic() - started < 3.0
        assert service.list_units(PageToken(100, 1)).items == []  # reads still served
    finally:
        private_etcd.resume()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()
