"""Extension routes for watching the cluster: `GET /fleet/v1/events` and `GET /fleet/v1/snapshot`.

`/events` is a Server-Sent Events stream (`fleetd.api.event_model` says what it carries, and
`fleetd.api.event_hub` how it is fed). A client resumes with the `Last-Event-ID` header (or the
`lastEventId` query parameter, for clients that cannot set headers); filters: `unit` (a glob,
repeatable), `machineID` (an id or its prefix, repeatable), `kind` (repeatable or
comma-separated). The stream opens with `retry:` and a comment naming the revision it is live
from, sends a keep-alive comment after `heartbeat` idle seconds, and never ends by itself unless
the client is too slow (a `dropped` event, then the end: reconnect with the last id).

`/snapshot` is everything the dashboard shows, in one response, with the `revision` to resume
the stream from: every event after it applies on top (events carry whole values, so one that
the snapshot already reflects changes nothing when applied again).

The stream is not held to the request deadlines of `fleetd.api.connections`: those cover a
request until it is in, and a GET is in at once. Each stream holds one connection of its
listener's limit. A dropped client that still reads gets its `dropped` event and a proper end;
one that reads nothing at all (its socket full) is cut after `DROP_GRACE` seconds, by returning
with the response unfinished: uvicorn then closes the connection (and logs one line saying so).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Final

from fastapi import APIRouter, Query, Request, Response
from starlette.types import Receive, Scope, Send

from fleetd.api import schemas
from fleetd.api.errors import BadRequest, Unavailable
from fleetd.api.event_hub import EventHub, Subscription, frames
from fleetd.api.event_model import KINDS, BadPosition, EventFilter, Position
from fleetd.api.service import ApiService, current_state

HEARTBEAT: Final = 15.0
"""Seconds of silence after which a stream sends a keep-alive comment."""
DROP_GRACE: Final = 5.0
"""Seconds a dropped client's last write may wait for it before its connection is closed."""
RETRY_MS: Final = 2000

_UNIT_FILTER = Query([], description="unit name glob (web@*.service); repeatable")
_MACHINE_FILTER = Query([], alias="machineID", description="machine id or prefix; repeatable")
_KIND_FILTER = Query([], description=f"event kinds ({', '.join(KINDS)}); repeatable")
_LAST_EVENT_ID = Query(
    None, alias="lastEventId", description="resume after this id (as the Last-Event-ID header)"
)

_STREAM_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Server-Sent Events: `id` is the etcd revision (see docs/api.md)",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    },
    400: {"model": schemas.Error},
    401: {"model": schemas.Error},
}


_STRINGS: Final = {"type": "object", "additionalProperties": {"type": "string"}}
_SNAPSHOT_SCHEMA: Final = {
    "type": "object",
    "required": ["revision", "machines", "units", "placements", "states"],
    "properties": {
        "revision": {"type": "integer", "description": "read /events after this id"},
        "machines": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "primaryIP": {"type": "string"},
                    "metadata": _STRINGS,
                },
            },
        },
        "units": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "desiredState": {"type": "string"},
                    "currentState": {"type": "string"},
                    "machineID": {"type": "string"},
                    "hash": {"type": "string"},
                    "global": {"type": "boolean"},
                    "reasons": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
        "placements": {"type": "array", "items": _STRINGS},
        "states": {"type": "array", "items": {"type": "object"}},
    },
}
_SNAPSHOT_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the cluster at one revision (see docs/api.md)",
        "content": {"application/json": {"schema": _SNAPSHOT_SCHEMA}},
    },
    401: {"model": schemas.Error},
    503: {"model": schemas.Error},
}


class EventStream(Response):
    """The SSE response of one subscription; it ends when the client leaves or is dropped."""

    def __init__(self, subscription: Subscription, heartbeat: float) -> None:
        super().__init__(media_type="text/event-stream")
        self._subscription = subscription
        self._heartbeat = heartbeat

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        subscription = self._subscription
        headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
        ]
        opening = f"retry: {RETRY_MS}\n: live after revision {subscription.subscribed_at}\n\n"

        async def write() -> None:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": opening.encode(), "more_body": True})
            async for taken in frames(subscription, self._heartbeat):
                body = b"".join(taken)
                await send({"type": "http.response.body", "body": body, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        async def until_gone() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        writer = asyncio.create_task(write(), name="events-write")
        listener = asyncio.create_task(until_gone(), name="events-listen")
        dropped = asyncio.create_task(subscription.gone.wait(), name="events-dropped")
        try:
            await asyncio.wait({writer, listener, dropped}, return_when=asyncio.FIRST_COMPLETED)
            if not writer.done() and not listener.done() and subscription.dropped:
                # the writer sends the `dropped` event and ends, unless the client reads nothing
                await asyncio.wait(
                    {writer, listener}, timeout=DROP_GRACE, return_when=asyncio.FIRST_COMPLETED
                )
        finally:
            subscription.close()
            for task in (writer, listener, dropped):
                task.cancel()
            await asyncio.gather(writer, listener, dropped, return_exceptions=True)
        error = writer.exception() if writer.done() and not writer.cancelled() else None
        if error is not None and not isinstance(error, OSError):
            raise error


def events_router(
    service: ApiService, hub: EventHub, *, heartbeat: float | None = None
) -> APIRouter:
    """The `/fleet/v1/events` and `/fleet/v1/snapshot` routes (heartbeat: `HEARTBEAT`)."""
    heartbeat = HEARTBEAT if heartbeat is None else heartbeat
    router = APIRouter(prefix="/fleet/v1")

    @router.get("/events", responses=_STREAM_DOC, response_class=Response)
    async def events(
        request: Request,
        unit: list[str] = _UNIT_FILTER,
        machine_id: list[str] = _MACHINE_FILTER,
        kind: list[str] = _KIND_FILTER,
        last_event_id: str | None = _LAST_EVENT_ID,
    ) -> Response:
        try:
            wanted = EventFilter.build(unit, machine_id, kind)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        given = request.headers.get("last-event-id") or last_event_id
        try:
            after = Position.parse(given) if given else None
        except BadPosition as exc:
            raise BadRequest(str(exc)) from None
        return EventStream(await hub.subscribe(wanted, after), heartbeat)

    cache: dict[int, bytes] = {}  # the view's generation -> its snapshot, encoded

    @router.get("/snapshot", responses=_SNAPSHOT_DOC, response_class=Response)
    async def snapshot() -> Response:
        generation = service.view.generation
        body = cache.get(generation)
        if body is None:
            body = _encode(cluster_snapshot(service))
            cache.clear()
            cache[generation] = body  # built without an await: the view did not change meanwhile
        return Response(body, media_type="application/json")

    return router


def _encode(document: dict[str, Any]) -> bytes:
    """Compact JSON, ASCII only and HTML-safe as Go writes it; faster than `schemas.go_json` on
    megabytes (no per-character translation): the snapshot of 10,000 units is about 4 MB."""
    text = json.dumps(document, separators=(",", ":"), ensure_ascii=True).encode()
    return text.replace(b"<", b"\\u003c").replace(b">", b"\\u003e").replace(b"&", b"\\u0026")


def cluster_snapshot(service: ApiService) -> dict[str, Any]:
    """Machines, units, placements, states and reasons, and the revision events resume from."""
    if not service.ready:
        raise Unavailable()
    view, keys = service.view, service.keys
    sections = (keys.units, keys.machines, keys.metadata, keys.schedule, keys.states)
    revision = min(view.revision(prefix) for prefix in (*sections, keys.unplaceable))
    units = []
    for name in view.unit_names():
        record = view.units[name]
        placed = view.placements.get(name, {})
        machine = min(placed) if placed else ""
        state = view.states.get(name, {}).get(machine) if machine else None
        unit: dict[str, Any] = {
            "name": name,
            "desiredState": str(record.desired),
            "currentState": str(current_state(placed.get(machine), state)),
            "machineID": machine,
            "hash": record.hash,
        }
        if name in view.global_units:
            unit["global"] = True
        reasons = view.unplaceable.get(name)
        if reasons:
            unit["reasons"] = list(reasons)
        units.append(unit)
    placements = [
        {"unit": u, "machineID": m, "desiredState": str(p.desired)}
        for u, on in view.placements.items()
        for m, p in on.items()
    ]
    states = [
        {
            "unit": u,
            "machineID": m,
            "loadState": s.load_state,
            "activeState": s.active_state,
            "subState": s.sub_state,
            "since": s.since,
            **({"podAddress": s.pod_address} if s.pod_address else {}),
        }
        for u, m in view.state_keys()
        for s in (view.states[u][m],)
    ]
    machines = [
        {"id": m.id, "primaryIP": m.primary_ip, "metadata": dict(m.metadata)}
        for m in (view.machines[i] for i in sorted(view.machines))
    ]
    return {
        "revision": revision,
        "machines": machines,
        "units": units,
        "placements": placements,
        "states": states,
    }
