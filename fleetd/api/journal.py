"""`GET /fleet/v1/units/{name}/journal`: a unit's journal from whichever machine runs it.

The fleetd that receives the request finds the unit's machine in its view (`locate_unit`) and
asks that machine's fleetd for the journal on the node-to-node endpoint the machine publishes in
its record (`peerAddress`, `fleetd.api.peer`), with the cluster credential; it relays the answer
to the client as it comes. No SSH, no shell on any node.

The answer is newline-delimited JSON (`application/x-ndjson`): one journal entry per line, as
`journalctl -o json` prints it (`__REALTIME_TIMESTAMP`, `MESSAGE`, `_PID`, ...). A followed
stream (`follow=true`) goes on until the client hangs up, and ends by itself, with a last line
`{"end": "<why>"}` (an object without `__CURSOR`), when the unit moves to another machine, is
stopped nowhere / destroyed, its machine leaves the cluster, or the connection to that machine's
fleetd breaks. A one-shot read returns the last `lines` entries.

Refusals, before anything is streamed, in fleet's error envelope: 404 `unit does not exist`;
400 for a global unit (its journal is on every machine) or bad `lines`; 409 `unit is not
running` when its current state is `inactive` (placed nowhere, or no state from its machine,
as fleetctl tells "does not appear to be running"); 503 when journals are not set up (this
fleetd has no cluster credential, or the unit's machine publishes no node-to-node address);
502 when the unit's machine cannot be reached or refuses the credential.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any, Final
from urllib.parse import quote

import httpx
import structlog
from fastapi import APIRouter, Query, Response
from fastapi.responses import StreamingResponse

from fleetd.api.errors import (
    BadRequest,
    PeerUnavailable,
    Unavailable,
    UnitNotFound,
    UnitNotRunning,
)
from fleetd.api.view import ApiView
from fleetd.core.model import Machine
from fleetd.core.names import validate_unit_name
from fleetd.runtime.journal import DEFAULT_LINES, MAX_LINES

log = structlog.get_logger(__name__)

PEER_PREFIX: Final = "/peer/v1"  # the node-to-node endpoint's routes (`fleetd.api.peer`)
NDJSON: Final = "application/x-ndjson"
CONNECT_TIMEOUT: Final = 5.0
READ_TIMEOUT: Final = 30.0  # a one-shot read: the peer bounds its own read at 10 s
MAX_ERROR_BYTES: Final = 4096


def locate_unit(view: ApiView, name: str) -> Machine:
    """The machine whose journal holds `name`'s lines, or the refusal (see the module docs)."""
    validate_unit_name(name)
    if not view.ready:
        raise Unavailable()
    if name not in view.units:
        raise UnitNotFound()
    if name in view.global_units:
        raise BadRequest(f"{name} is a global unit: its journal is on every machine")
    placed = view.placements.get(name)
    if not placed:
        raise UnitNotRunning("unit is not running")
    machine_id = min(placed)
    state = view.states.get(name, {}).get(machine_id)
    machine = view.machines.get(machine_id)
    if state is None or machine is None:  # fleet's current state `inactive`
        raise UnitNotRunning("unit is not running")
    if not machine.peer_address:  # not configured there: a 503, like no credential here
        raise Unavailable(
            f"machine {machine_id} publishes no node-to-node address: its fleetd needs "
            "peer_listen and cluster_secret_file"
        )
    return machine


def gone_reason(view: ApiView, name: str, machine_id: str) -> str | None:
    """Why a followed journal of `name` on `machine_id` must end now, or None to go on."""
    if name not in view.units:
        return f"unit {name} was destroyed"
    if machine_id not in view.machines:
        return f"machine {machine_id} left the cluster"
    placed = view.placements.get(name, {})
    if machine_id not in placed:
        if placed:
            return f"unit {name} moved to machine {min(placed)}"
        return f"unit {name} is no longer scheduled"
    return None


def end_line(reason: str) -> bytes:
    return json.dumps({"end": reason}).encode() + b"\n"


class JournalForwarder:
    """Asks other machines' fleetds for journals, with the cluster credential; one connection
    pool for the life of the API."""

    def __init__(
        self,
        view: ApiView,
        secret: str | None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.view = view
        self._secret = secret
        self._http = httpx.AsyncClient(transport=transport, trust_env=False)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def close_when_cancelled(self) -> None:
        """Wait until cancelled (the API stops), then close the connection pool."""
        try:
            await asyncio.Event().wait()
        finally:
            await self.aclose()

    async def open(self, name: str, lines: int, follow: bool) -> AsyncIterator[bytes]:
        """Check the request, reach the unit's machine, and return the stream of its lines.

        Raises before returning when the request is refused (nothing streamed yet)."""
        machine = locate_unit(self.view, name)
        if self._secret is None:
            raise Unavailable(
                "this fleetd has no cluster_secret_file: it cannot ask other machines for logs"
            )
        url = f"http://{machine.peer_address}{PEER_PREFIX}/journal/{quote(name, safe='@:')}"
        timeout = httpx.Timeout(None if follow else READ_TIMEOUT, connect=CONNECT_TIMEOUT)
        request = self._http.build_request(
            "GET",
            url,
            params={"lines": str(lines), "follow": "true" if follow else "false"},
            headers={"Authorization": f"Bearer {self._secret}"},
            timeout=timeout,
        )
        who = f"the fleetd of machine {machine.id} at {machine.peer_address}"
        try:
            response = await self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise PeerUnavailable(f"cannot reach {who}: {exc or type(exc).__name__}") from None
        if response.status_code != 200:
            try:
                message = await _error_message(response)
            finally:
                await response.aclose()
            if response.status_code == 401:
                raise PeerUnavailable(f"{who} refused this fleetd's cluster credential")
            if response.status_code == 400:
                raise BadRequest(message)
            raise PeerUnavailable(f"{who} answered {response.status_code}: {message}")
        return self._relay(response, name, machine.id, follow, who)

    async def _relay(
        self, response: httpx.Response, name: str, machine_id: str, follow: bool, who: str
    ) -> AsyncIterator[bytes]:
        lines = response.aiter_lines()
        try:
            while True:
                next_line = asyncio.ensure_future(anext(lines, None))
                if follow:
                    reason = await self._until_gone(next_line, name, machine_id)
                    if reason is not None:
                        yield end_line(reason)
                        return
                try:
                    line = await next_line
                except httpx.HTTPError as exc:
                    if follow:
                        yield end_line(f"lost {who}: {exc or type(exc).__name__}")
                    else:
                        log.warning("journal relay broke", unit=name, error=str(exc))
                    return
                if line is None:
                    return
                if line:
                    yield line.encode() + b"\n"
        finally:
            await response.aclose()

    async def _until_gone(
        self, next_line: asyncio.Future[str | None], name: str, machine_id: str
    ) -> str | None:
        """Wait for `next_line`, or until the unit is gone from its machine: then the reason
        (and `next_line` is cancelled)."""
        while not next_line.done():
            reason = gone_reason(self.view, name, machine_id)
            if reason is not None:
                next_line.cancel()
                await asyncio.gather(next_line, return_exceptions=True)
                return reason
            changed = asyncio.ensure_future(self.view.wait_changed())
            waiting: set[asyncio.Future[Any]] = {next_line, changed}
            try:
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            finally:
                changed.cancel()
        return None


async def _error_message(response: httpx.Response) -> str:
    body = b""
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > MAX_ERROR_BYTES:
            break
    try:
        return str(json.loads(body)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return body[:200].decode("utf-8", "replace").strip()


def journal_router(forwarder: JournalForwarder) -> APIRouter:
    """The journal route (in the OpenAPI document, beside the v1 routes it extends)."""
    router = APIRouter(prefix="/fleet/v1")

    @router.get(
        "/units/{name}/journal",
        responses={
            200: {
                "description": "journal entries, one JSON object per line",
                "content": {NDJSON: {}},
            }
        },
    )
    async def unit_journal(
        name: str,
        lines: int = Query(DEFAULT_LINES, ge=0, le=MAX_LINES, description="the last N entries"),
        follow: bool = Query(False, description="then every new entry, until the unit moves"),
    ) -> Response:
        stream = await forwarder.open(name, lines, follow)
        return StreamingResponse(stream, media_type=NDJSON)

    return router
