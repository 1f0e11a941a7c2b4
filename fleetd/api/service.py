"""What each v1 request does: reads from the `ApiView`, writes to etcd, fleet's rules in between.

`ApiService` has one method per operation. Reads are synchronous and answered from the view
(never from etcd); writes go to etcd and then wait until the view has applied them, so a client
that PUTs and then GETs sees its write.

Invariants:
* Nothing is written for a refused request: every check of fleet's PUT order (with fleet's
  known bugs fixed) runs before the write, in `plan_set_unit`, a pure function.
* A write costs one etcd round trip when the view is current: it is decided from the view and
  sent as one transaction guarded by the mod revision the view holds for the key (0: absent).
  A refusal, or a PUT that changes nothing, is confirmed the same way (a guarded transaction
  that writes nothing). Only when the guard fails (the view was behind) is the key read from
  etcd and the request decided again.
* The status tells what happened. 2xx: applied, once. 4xx: nothing written, decided from a
  state etcd confirmed. 503: nothing written (the view is not ready, or etcd could not be
  reached before anything was sent). When etcd's answer to a write is lost, the request finds
  out whether it was applied (`fleetd.registry.writes`) and answers accordingly; 504
  (`WriteOutcomeUnknown`) only if etcd stays silent for another `request_timeout` too.
* etcd's time is measured by each call's gRPC deadline (at most `request_timeout` per
  request), never by a timer on the event loop: a loop that resumes a request late cannot turn
  an answer etcd gave in time into an error. Waiting for the view is bounded too; a write that
  etcd applied is reported as done even if the view is slow to show it (logged).
* Until the view has read every prefix once, requests that need it are `Unavailable`.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Sequence
from dataclasses import replace
from enum import Enum
from typing import Final

import structlog

from fleetd.api.errors import (
    ApiError,
    BadRequest,
    DesiredStateRequired,
    OptionsRequired,
    Unavailable,
    UnitNotFound,
    UnitStateNotFound,
)
from fleetd.api.pagination import DEFAULT_TOKEN_LIMIT, Page, PageToken, page_of
from fleetd.api.schemas import MetadataOp, UnitRequest, UnitStatus
from fleetd.api.stop_grace import StopGrace
from fleetd.api.view import ApiView
from fleetd.core.model import Machine, Placement
from fleetd.core.names import go_quote, validate_unit_name
from fleetd.core.states import JobState
from fleetd.core.submission import InvalidUnit, check_unit
from fleetd.core.unitfile import UnitFile
from fleetd.registry.client import EtcdClient
from fleetd.registry.codec import UnitRecord, UnitStateRecord
from fleetd.registry.keys import Keys
from fleetd.registry.machines import metadata_write, read_metadata_at
from fleetd.registry.units import (
    checked_unit_record,
    confirm_unit_write,
    read_unit_at,
    remove_unit_write,
    store_unit_write,
)
from fleetd.registry.writes import GuardedWrite, Moved, apply_guarded, deadline_in

log = structlog.get_logger(__name__)

_GUARDED_ATTEMPTS: Final = 5
_REFUSALS: Final = (ApiError, InvalidUnit)  # what `plan_set_unit` raises
_VIEW_WAIT_FLOOR: Final = 0.5  # seconds a write waits for the view even past its deadline
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
    unit = UnitFile(request.options) if request.options else None
    if existing is None or (unit is not None and unit.hash != existing.hash):
        if unit is None:
            raise OptionsRequired()
        desired = parse_desired(request.desired_state or JobState.INACTIVE)
        outcome = SetOutcome.CREATED if existing is None else SetOutcome.REPLACED
        return checked_unit_record(name, unit, desired), outcome
    if not request.desired_state:
        raise DesiredStateRequired()
    desired = parse_desired(request.desired_state)
    check_unit(name, existing.unit_file, desired)  # refuses to activate a template
    if desired is existing.desired:
        return existing, SetOutcome.UNCHANGED
    return replace(existing, desired=desired), SetOutcome.UPDATED


def current_state(placement: Placement | None, state: UnitStateRecord | None) -> JobState:
    """A non-global unit's `currentState` (fleet's field) from its placement and the state its
    machine published. Not the agent's `local_job_state`, the job state of a unit on one host."""
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
        self.stop_grace = StopGrace()

    @property
    def ready(self) -> bool:
        return self.view.ready

    def _require_view(self) -> ApiView:
        if not self.view.ready:
            raise Unavailable()
        return self.view

    # ---- reads

    def unit_status(self, name: str, *, listing: bool, exact: bool = True) -> UnitStatus:
        """One unit as shown; a global unit's state is `inactive` in lists and absent in a GET.
        Not `exact`: a unit in its stop grace reads `launched` (`fleetd.api.stop_grace`)."""
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
        current = current_state(placed[machine], state)
        stopping = current is JobState.LOADED and record.desired is JobState.LOADED
        if stopping and not exact and self.stop_grace.holds(name):
            current = JobState.LAUNCHED
        return UnitStatus(record, current, machine, reasons)

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
        known = self._require_view().unit_at(name)
        deadline = deadline_in(self.request_timeout)
        fresh = False  # `known` is the view's (confirm it before relying on it), or etcd's
        for _attempt in range(_GUARDED_ATTEMPTS):
            try:
                record, outcome = plan_set_unit(name, request, known.record)
            except _REFUSALS as refusal:
                if fresh or await self._holds(confirm_unit_write(self.keys, name, known), deadline):
                    raise refusal from None
            else:
                if outcome is not SetOutcome.UNCHANGED:
                    write = store_unit_write(self.keys, record, known)
                elif fresh:
                    return outcome
                else:
                    write = confirm_unit_write(self.keys, name, known)
                if await self._holds(write, deadline):
                    self._note_stop(known.record, record)
                    return outcome
            known, fresh = await read_unit_at(self.client, self.keys, name, deadline=deadline), True
        raise Unavailable(f"unit {name} kept changing while it was being written")

    def _note_stop(self, before: UnitRecord | None, after: UnitRecord) -> None:
        """Start the stop grace of a unit moved from `launched` to `loaded` (`stop_grace`)."""
        if before is not None and before.desired is JobState.LAUNCHED:
            if after.desired is JobState.LOADED:
                self.stop_grace.note(after.name)
            else:
                self.stop_grace.forget(after.name)

    async def destroy_unit(self, name: str) -> None:
        """DELETE /units/{name}."""
        known = self._require_view().unit_at(name)
        deadline = deadline_in(self.request_timeout)
        fresh = False
        for _attempt in range(_GUARDED_ATTEMPTS):
            if known.record is None:
                if fresh or await self._holds(confirm_unit_write(self.keys, name, known), deadline):
                    raise UnitNotFound()
            elif await self._holds(remove_unit_write(self.keys, name, known), deadline):
                return
            known, fresh = await read_unit_at(self.client, self.keys, name, deadline=deadline), True
        raise Unavailable(f"unit {name} kept changing while it was being destroyed")

    async def patch_machines(self, ops: Sequence[MetadataOp]) -> None:
        """PATCH /machines: check every op, then set or tombstone each `metadata/<m>/<key>`, all
        in one guarded transaction, so its status is the whole request's: a request over one
        transaction's keys (etcd's --max-txn-ops) is refused, never written in part."""
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
        if len(writes) > EtcdClient.MAX_TXN_OPS:
            raise BadRequest(
                f"too many metadata keys in one request: {len(writes)}, over the limit of "
                f"{EtcdClient.MAX_TXN_OPS} (one etcd transaction)"
            )
        view = self._require_view()
        deadline = deadline_in(self.request_timeout)
        known = view.directory.metadata_at(list(writes))
        for _attempt in range(_GUARDED_ATTEMPTS):
            write = metadata_write(writes, known)
            if await self._holds(write, deadline, shown_in=self.keys.metadata):
                return
            known = await read_metadata_at(self.client, list(writes), deadline=deadline)
        raise Unavailable("machine metadata kept changing while it was being written")

    async def _holds(self, write: GuardedWrite, deadline: float, *, shown_in: str = "") -> bool:
        """Apply `write`; False when its guard failed (nothing written: the view was stale).

        A write that changed something returns once the view shows it under the prefix
        `shown_in` (read-your-writes), or once `deadline` has passed (logged): it was applied
        either way.
        """
        result = await apply_guarded(
            self.client, write, deadline=deadline, resolve_for=self.request_timeout
        )
        if isinstance(result, Moved):
            return False
        if write.changes:
            await self._wait_for_view(shown_in or self.keys.units, result.revision, deadline)
        return True

    async def _wait_for_view(self, prefix: str, revision: int, deadline: float) -> None:
        """Wait until the view shows a write, at most until `deadline` (or a moment, if past)."""
        try:
            async with asyncio.timeout(max(deadline - time.monotonic(), _VIEW_WAIT_FLOOR)):
                await self.view.wait_for({prefix: revision})
        except TimeoutError:
            log.warning("the API view is slow to show a write", prefix=prefix, revision=revision)
