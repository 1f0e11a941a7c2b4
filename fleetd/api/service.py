"""What each v1 request does: reads from the `ApiView`, writes to etcd, fleet's rules in between.

`ApiService` has one method per operation. Reads are synchronous and answered from the view
(never from etcd); writes go to etcd and then wait until the view has applied them, so a client
that PUTs and then GETs sees its write.

Invariants:
* Nothing is written for a refused request: every check of fleet's PUT order (reference section
  3.5, with section 10's fixes) runs before the write, in `plan_set_unit`, a pure function.
* Writes are guarded: a unit is stored only if it is still at the revision the decision was made
  from; a lost race re-reads and decides again.
* A request's etcd work is bounded by `request_timeout`: an unreachable or slow etcd is an
  `Unavailable` (503) within that time. Waiting for the view is bounded too; a write that etcd
  applied is reported as done even if the view is slow to show it (logged).
* Until the view has read every prefix once, requests that need it are `Unavailable`.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from enum import Enum
from typing import Final

import structlog

from fleetd.api.errors import (
    BadRequest,
    DesiredStateRequired,
    OptionsRequired,
    Unavailable,
    UnitNotFound,
    UnitStateNotFound,
)
from fleetd.api.pagination import DEFAULT_TOKEN_LIMIT, Page, PageToken, page_of
from fleetd.api.schemas import MetadataOp, UnitRequest, UnitStatus
from fleetd.api.view import ApiView
from fleetd.core.model import Machine, Placement
from fleetd.core.names import go_quote, validate_unit_name
from fleetd.core.states import JobState
from fleetd.core.submission import check_unit
from fleetd.core.unitfile import UnitFile
from fleetd.registry.client import EtcdClient, Put
from fleetd.registry.codec import UnitRecord, UnitStateRecord, encode_metadata_value
from fleetd.registry.keys import Keys
from fleetd.registry.units import read_unit, remove_unit, store_unit

log = structlog.get_logger(__name__)

_GUARDED_ATTEMPTS: Final = 5
_METADATA_PATH: Final = re.compile(r"/([^/]+)/metadata/([A-Za-z0-9_.-]+)")
_METADATA_OPS: Final = frozenset({"add", "remove", "replace"})


class SetOutcome(Enum):
    """What a PUT did: created or replaced the unit (201), or changed its desired state (204)."""

    CREATED = "created"
    REPLACED = "replaced"
    UPDATED = "updated"
    UNCHANGED = "unchanged"  # an update to the state it already had: 204, nothing written


def parse_desired(text: str) -> JobState:
    try:
        return JobState(text)
    except ValueError:
        raise BadRequest(
            f"invalid desiredState {go_quote(text)}: must be inactive, loaded or launched"
        ) from None


def plan_set_unit(
    name: str, request: UnitRequest, existing: UnitRecord | None
) -> tuple[UnitRecord, SetOutcome]:
    """The record a PUT stores over `existing` (steps 6-10 of fleet's order), or the refusal."""
    options = request.options
    if existing is None or (options and UnitFile(options).hash != existing.hash):
        if not options:
            raise OptionsRequired()
        desired = parse_desired(request.desired_state or JobState.INACTIVE)
        unit = UnitFile(options)
        check_unit(name, unit, desired)
        outcome = SetOutcome.CREATED if existing is None else SetOutcome.REPLACED
        return UnitRecord(name, options, unit.hash, desired), outcome
    if not request.desired_state:
        raise DesiredStateRequired()
    desired = parse_desired(request.desired_state)
    check_unit(name, existing.unit_file, desired)  # refuses to activate a template
    if desired is existing.desired:
        return existing, SetOutcome.UNCHANGED
    return replace(existing, desired=desired), SetOutcome.UPDATED


def current_state(placement: Placement | None, state: UnitStateRecord | None) -> JobState:
    """A non-global unit's cluster state from its placement and the state its machine published."""
    if placement is None or state is None:
        return JobState.INACTIVE
    return JobState.LOADED if state.active_state == "inactive" else JobState.LAUNCHED


class ApiService:
    """The operations of the v1 API over one view and one etcd client."""

    def __init__(
        self,
        client: EtcdClient,
        keys: Keys,
        view: ApiView,
        *,
        request_timeout: float = 5.0,
        token_limit: int = DEFAULT_TOKEN_LIMIT,
    ) -> None:
        self.client = client
        self.keys = keys
        self.view = view
        self.request_timeout = request_timeout
        self.token_limit = token_limit

    @property
    def ready(self) -> bool:
        return self.view.ready

    def _require_view(self) -> ApiView:
        if not self.view.ready:
            raise Unavailable()
        return self.view

    # ---- reads

    def unit_status(self, name: str, *, listing: bool) -> UnitStatus:
        """One unit as shown; a global unit's state is `inactive` in lists and absent in a GET."""
        view = self._require_view()
        record = view.units.get(name)
        if record is None:
            raise UnitNotFound()
        reasons = view.unplaceable.get(name, ())
        if name in view.global_units:
            return UnitStatus(record, JobState.INACTIVE if listing else None, "", reasons)
        placed = view.placements.get(name)
        if not placed:
            return UnitStatus(record, JobState.INACTIVE, "", reasons)
        machine = min(placed)
        state = view.states.get(name, {}).get(machine)
        return UnitStatus(record, current_state(placed[machine], state), machine, reasons)

    def list_units(self, token: PageToken) -> Page[UnitStatus]:
        page = page_of(self._require_view().unit_names(), token)
        return Page([self.unit_status(n, listing=True) for n in page.items], page.next_token)

    def list_states(
        self, token: PageToken, *, machine_id: str | None = None, unit_name: str | None = None
    ) -> Page[tuple[str, str, UnitStateRecord]]:
        """Published states sorted by (unit, machine), filtered before paging."""
        view = self._require_view()
        if unit_name is not None:
            keys = [(unit_name, m) for m in sorted(view.states.get(unit_name, {}))]
        else:
            keys = view.state_keys()
        if machine_id is not None:
            keys = [key for key in keys if key[1] == machine_id]
        page = page_of(keys, token)
        return Page([(u, m, view.states[u][m]) for u, m in page.items], page.next_token)

    def get_state(self, name: str) -> tuple[str, UnitStateRecord]:
        """(machine, state) for a unit: its placement's machine first, else the lowest id."""
        view = self._require_view()
        states = view.states.get(name)
        if not states:
            raise UnitStateNotFound()
        placed = [m for m in sorted(view.placements.get(name, {})) if m in states]
        machine = placed[0] if placed else min(states)
        return machine, states[machine]

    def list_machines(self, token: PageToken) -> Page[Machine]:
        view = self._require_view()
        page = page_of(sorted(view.machines), token)
        return Page([view.machines[m] for m in page.items], page.next_token)

    # ---- writes

    async def set_unit(self, url_name: str, request: UnitRequest) -> SetOutcome:
        """PUT /units/{name}: create, replace, or set the desired state (fleet's order)."""
        name = request.name or url_name
        if name != url_name:
            raise BadRequest(
                f"name in URL {go_quote(url_name)} differs from unit name in request body "
                f"{go_quote(name)}"
            )
        validate_unit_name(name)
        self._require_view()
        deadline = time.monotonic() + self.request_timeout
        async with asyncio.timeout(self.request_timeout):
            for _attempt in range(_GUARDED_ATTEMPTS):
                stored = await read_unit(self.client, self.keys, name)
                existing = None if stored is None else stored.record
                record, outcome = plan_set_unit(name, request, existing)
                if outcome is SetOutcome.UNCHANGED:
                    return outcome
                expected = 0 if stored is None else stored.mod_revision
                revision = await store_unit(
                    self.client, self.keys, record, expected_revision=expected
                )
                if revision is not None:
                    break
            else:
                raise Unavailable(f"unit {name} kept changing while it was being written")
        await self._wait_for_view({self.keys.units: revision}, deadline)
        return outcome

    async def destroy_unit(self, name: str) -> None:
        """DELETE /units/{name}."""
        self._require_view()
        deadline = time.monotonic() + self.request_timeout
        async with asyncio.timeout(self.request_timeout):
            revision = await remove_unit(self.client, self.keys, name)
        if revision is None:
            raise UnitNotFound()
        await self._wait_for_view({self.keys.units: revision}, deadline)

    async def patch_machines(self, ops: Sequence[MetadataOp]) -> None:
        """PATCH /machines: check every op, then set or tombstone each `metadata/<m>/<key>`."""
        writes: dict[str, str] = {}  # key -> value; a later op on the same key wins, as in order
        for op in ops:
            if op.op not in _METADATA_OPS:
                raise BadRequest("invalid op: expect add, remove, or replace")
            match = _METADATA_PATH.fullmatch(op.path)
            if match is None:
                raise BadRequest("machine metadata path invalid")
            if op.op != "remove" and not op.value:
                raise BadRequest("invalid value: add and replace require a value")
            key = self.keys.metadata_key(match[1], match[2])
            writes.pop(key, None)
            writes[key] = "" if op.op == "remove" else op.value
        if not writes:
            return
        self._require_view()
        deadline = time.monotonic() + self.request_timeout
        puts = [Put(key, encode_metadata_value(value)) for key, value in writes.items()]
        revision = 0
        async with asyncio.timeout(self.request_timeout):
            for start in range(0, len(puts), EtcdClient.MAX_TXN_OPS):
                batch = puts[start : start + EtcdClient.MAX_TXN_OPS]
                revision = (await self.client.txn([], batch)).revision
        await self._wait_for_view({self.keys.metadata: revision}, deadline)

    async def _wait_for_view(self, revisions: Mapping[str, int], deadline: float) -> None:
        """Wait until the view shows a write, at most until `deadline` (time.monotonic)."""
        try:
            async with asyncio.timeout(max(deadline - time.monotonic(), 0)):
                await self.view.wait_for(revisions)
        except TimeoutError:
            log.warning("the API view is slow to show a write", revisions=dict(revisions))
