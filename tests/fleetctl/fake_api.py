"""TEST FAKE: an in-memory fleet v1 HTTP API, served through `httpx.MockTransport`.

This is not pyfleet's server (that is `fleetd/api/`); it is a stand-in with the same wire
semantics so fleetctl's command tests run without etcd or systemd:
* `GET/PUT/DELETE /fleet/v1/units/{name}`, `GET /units` paged by fleet's tokens (URL-safe
  base64 of little-endian uint16 limit and page), `GET /state` with `unitName`/`machineID`
  filters, `GET /state/{name}`, `GET /machines`; the error envelope
  `{"error": {"code", "message"}}`; 201/204/404/409/415 as fleet answers them, with the fixes
  pyfleet's checklist asks for (400 for a bad desiredState, templates never activated);
* pyfleet's extension field `unplaceableReasons` on a Unit while the "engine" cannot place it;
* an optional bearer token (401 without it);
* pyfleet's `GET /units/{name}/journal` for units given entries in `journals`.
* pyfleet's event stream, `GET /events`: the events in `events` after `Last-Event-ID`, filtered
  by `unit` globs and `kind`, as one SSE body that then ends (a real stream goes on; fleetctl
  reconnects either way). `stream_limit` caps the events per response, so tests see reconnects;
  `drop_after` ends a response with a `dropped` event after that many.

A toy engine stands in for scheduling and agents: after a desired-state change it sets the
current state, the target machine (the first machine, by id) and the systemd states, `lag`
requests later (0: at once). Units named in `unplaceable` never get placed and carry the
reasons given. Every request is recorded in `requests`, so tests can assert what was (not) sent.
fleetctl sends requests from several threads at once; the fake serves one at a time (a lock).
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import json
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from fleetd.core.names import UnitNameError, split_unit_name, validate_unit_name
from fleetd.core.unitfile import UnitFile, UnitOption, parse_unit

PREFIXES = ("/fleet/v1", "/v1-alpha")
JOB_STATES = ("inactive", "loaded", "launched")
TRUTHY = ("true", "yes", "1", "on", "t")
RUNNING = ("loaded", "active", "running")
LOADED = ("loaded", "inactive", "dead")


@dataclass
class FakeUnit:
    name: str
    options: list[dict[str, str]]
    desired: str = "inactive"
    current: str = "inactive"
    machine_id: str = ""
    reasons: list[str] = field(default_factory=list)

    @property
    def unit_file(self) -> UnitFile:
        return UnitFile(
            tuple(UnitOption(o["section"], o["name"], o["value"]) for o in self.options)
        )

    @property
    def is_global(self) -> bool:
        values = self.unit_file.values("X-Fleet", "Global")
        return bool(values) and values[-1].lower() in TRUTHY

    def to_json(self, listed: bool) -> dict[str, Any]:
        current = self.current
        if self.is_global:
            current = "inactive" if listed else ""
        data: dict[str, Any] = {
            "currentState": current,
            "desiredState": self.desired,
            "machineID": "" if self.is_global else self.machine_id,
            "name": self.name,
            "options": self.options,
            "unplaceableReasons": self.reasons,
        }
        return {key: value for key, value in data.items() if value}


def options_of(text: str) -> list[dict[str, str]]:
    """Unit-file text as the API's option list."""
    return [
        {"name": o.name, "section": o.section, "value": o.value} for o in parse_unit(text).options
    ]


def envelope(status: int, message: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": status, "message": message}})


class ApiError(Exception):
    def __init__(self, status: int, message: str = "") -> None:
        self.status = status
        self.message = message


class FakeFleet:
    """The fake cluster: seed it, then hand `transport()` to fleetctl."""

    def __init__(self, page_limit: int = 100, token: str | None = None) -> None:
        self.page_limit = page_limit
        self.token = token
        self.units: dict[str, FakeUnit] = {}
        self.machines: dict[str, dict[str, Any]] = {}
        self.states: dict[tuple[str, str], dict[str, str]] = {}
        self.unplaceable: dict[str, list[str]] = {}
        self.systemd: dict[str, tuple[str, str, str]] = {}
        self.broken: dict[tuple[str, str], tuple[int, str]] = {}
        self.journals: dict[str, list[dict[str, Any]]] = {}  # pyfleet's journal route
        self.journal_end: dict[str, str] = {}  # a followed journal ends with {"end": this}
        self.lag = 0
        self.requests: list[httpx.Request] = []
        self._pending: list[tuple[int, Callable[[], None]]] = []
        self.events: list[tuple[str, str, dict[str, Any]]] = []  # (id, kind, data)
        self.stream_limit = 0
        self.drop_after = 0
        self._lock = threading.Lock()

    # -- seeding ---------------------------------------------------------------------------

    def add_machine(self, machine_id: str, ip: str = "", **metadata: str) -> None:
        self.machines[machine_id] = {"id": machine_id, "primaryIP": ip, "metadata": metadata}

    def add_unit(self, name: str, text: str, desired: str = "inactive") -> FakeUnit:
        """A unit as if submitted earlier, already converged on `desired`."""
        unit = self.units[name] = FakeUnit(name, options_of(text), desired=desired)
        self._converge(name)
        return unit

    def break_route(self, method: str, path: str, status: int, message: str = "") -> None:
        """Make `method path` (path after the prefix, query ignored) answer an error."""
        self.broken[(method, path)] = (status, message)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def writes(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.method in ("PUT", "DELETE", "PATCH")]

    # -- the toy engine --------------------------------------------------------------------

    def _later(self, action: Callable[[], None]) -> None:
        if self.lag:
            self._pending.append((len(self.requests) + self.lag, action))
        else:
            action()

    def _run_due(self) -> None:
        due = [action for at, action in self._pending if at <= len(self.requests)]
        self._pending = [(at, action) for at, action in self._pending if at > len(self.requests)]
        for action in due:
            action()

    def _set_state(self, name: str, machine: str, systemd: tuple[str, str, str]) -> None:
        unit = self.units[name]
        load, active, sub = systemd
        self.states[(name, machine)] = {
            "hash": unit.unit_file.hash,
            "machineID": machine,
            "name": name,
            "systemdActiveState": active,
            "systemdLoadState": load,
            "systemdSubState": sub,
        }

    def _drop_states(self, name: str) -> None:
        for key in [key for key in self.states if key[0] == name]:
            del self.states[key]

    def _converge(self, name: str) -> None:
        unit = self.units.get(name)
        if unit is None:
            self._drop_states(name)
            return
        unit.reasons = []
        if unit.desired == "inactive":
            unit.current, unit.machine_id = "inactive", ""
            self._drop_states(name)
            return
        if name in self.unplaceable or not self.machines:
            unit.reasons = self.unplaceable.get(name) or ["no machines are available"]
            unit.current, unit.machine_id = "inactive", ""
            return
        systemd = self.systemd.get(name, RUNNING) if unit.desired == "launched" else LOADED
        targets = (
            sorted(self.machines) if unit.is_global else [unit.machine_id or min(self.machines)]
        )
        for machine in targets:
            self._set_state(name, machine, systemd)
        unit.current = unit.desired
        unit.machine_id = "" if unit.is_global else targets[0]

    # -- HTTP ------------------------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            return self._handle(request)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self._run_due()
        if (
            self.token is not None
            and request.headers.get("authorization") != f"Bearer {self.token}"
        ):
            return envelope(401, "a valid bearer token is required")
        path = request.url.path
        for prefix in PREFIXES:
            if path.startswith(prefix + "/"):
                path = path[len(prefix) :]
                break
        else:
            return envelope(404, "")
        if (request.method, path) in self.broken:
            return envelope(*self.broken[(request.method, path)])
        try:
            return self._route(request, path)
        except ApiError as exc:
            return envelope(exc.status, exc.message)

    def _route(self, request: httpx.Request, path: str) -> httpx.Response:
        method = request.method
        parts = path.strip("/").split("/")
        if path == "/units":
            if method != "GET":
                raise ApiError(405, "only GET supported against this resource")
            units = [self.units[name].to_json(listed=True) for name in sorted(self.units)]
            return self._page(request, "units", units)
        if len(parts) == 2 and parts[0] == "units" and parts[1]:
            name = parts[1]
            if method == "GET":
                if name not in self.units:
                    raise ApiError(404, "unit does not exist")
                return httpx.Response(200, json=self.units[name].to_json(listed=False))
            if method == "PUT":
                return self._put(request, name)
            if method == "DELETE":
                if name not in self.units:
                    raise ApiError(404, "unit does not exist")
                del self.units[name]
                self._later(lambda: self._drop_states(name))
                return httpx.Response(204)
            raise ApiError(405, "only GET, PUT and DELETE supported against this resource")
        if len(parts) == 3 and parts[0] == "units" and parts[2] == "journal":
            return self._journal(request, parts[1])
        if path == "/state":
            return self._states(request)
        if len(parts) == 2 and parts[0] == "state":
            found = [s for (unit, _), s in sorted(self.states.items()) if unit == parts[1]]
            if not found:
                raise ApiError(404, "unit state does not exist")
            return httpx.Response(200, json=found[0])
        if path == "/events":
            return self._events(request)
        if path == "/machines":
            if method != "GET":
                raise ApiError(405, "only GET and PATCH supported against this resource")
            machines = [
                {k: v for k, v in self.machines[m].items() if v} for m in sorted(self.machines)
            ]
            return self._page(request, "machines", machines)
        raise ApiError(404, "")

    def _journal(self, request: httpx.Request, name: str) -> httpx.Response:
        """pyfleet's `GET /units/{name}/journal`: 404 (as fleet, which has no such route) for a
        unit without a seeded journal; else the last `lines` entries as NDJSON, and with
        `follow`, the seeded end line."""
        if name not in self.journals:
            raise ApiError(404, "")
        unit = self.units.get(name)
        if unit is None or unit.current == "inactive":
            raise ApiError(409, "unit is not running")
        lines = int(request.url.params.get("lines", "10"))
        entries = self.journals[name][-lines:] if lines else []
        body = "".join(json.dumps(entry) + "\n" for entry in entries)
        if request.url.params.get("follow") == "true" and name in self.journal_end:
            body += json.dumps({"end": self.journal_end[name]}) + "\n"
        return httpx.Response(200, content=body.encode(), headers={"content-type": "x/nd"})

    def _events(self, request: httpx.Request) -> httpx.Response:
        after = request.headers.get("last-event-id")
        ids = [event_id for event_id, _, _ in self.events]
        if after is not None and after not in ids and after != "0":
            raise ApiError(400, f"bad event id {after!r}")
        start = ids.index(after) + 1 if after in ids else 0
        units = request.url.params.get_list("unit")
        kinds = {k for v in request.url.params.get_list("kind") for k in v.split(",")}
        chosen = [
            (i, k, d)
            for i, k, d in self.events[start:]
            if (not units or any(fnmatch.fnmatchcase(d.get("unit") or "", u) for u in units))
            and (not kinds or k in kinds)
        ]
        if self.stream_limit:
            chosen = chosen[: self.stream_limit]
        body = "retry: 2000\n: live\n\n"
        for index, (event_id, kind, data) in enumerate(chosen):
            if self.drop_after and index == self.drop_after:
                body += 'event: dropped\ndata: {"reason": "too slow"}\n\n'
                break
            body += f"id: {event_id}\nevent: {kind}\ndata: {json.dumps(data)}\n\n"
        return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})

    def _states(self, request: httpx.Request) -> httpx.Response:
        if request.method != "GET":
            raise ApiError(405, "only GET supported against this resource")
        unit_name = request.url.params.get("unitName")
        machine_id = request.url.params.get("machineID")
        states = [
            state
            for (unit, machine), state in sorted(self.states.items())
            if (unit_name is None or unit == unit_name)
            and (machine_id is None or machine == machine_id)
        ]
        return self._page(request, "states", states)

    def _page(self, request: httpx.Request, key: str, items: list[Any]) -> httpx.Response:
        tokens = request.url.params.get_list("nextPageToken")
        if len(tokens) > 1:
            raise ApiError(400, "too many values for page token")
        page = self._decode_token(tokens[0]) if tokens else 1
        limit = self.page_limit
        body: dict[str, Any] = {}
        if chunk := items[(page - 1) * limit : page * limit]:
            body[key] = chunk
        if page * limit <= len(items):
            body["nextPageToken"] = encode_token(limit, page + 1)
        return httpx.Response(200, json=body)

    def _decode_token(self, token: str) -> int:
        try:
            raw = base64.urlsafe_b64decode(token.encode())
            limit, page = struct.unpack("<HH", raw)
        except (binascii.Error, struct.error, ValueError) as exc:
            raise ApiError(400, str(exc)) from None
        if limit != self.page_limit:
            raise ApiError(400, f"token limit must be {self.page_limit}")
        if page == 0:
            raise ApiError(400, "token page must be greater than zero")
        return int(page)

    def _put(self, request: httpx.Request, name: str) -> httpx.Response:
        content_types = request.headers.get_list("content-type")
        if len(content_types) != 1:
            raise ApiError(415, f"expected 1 Content-Type, got {len(content_types)}")
        if content_types[0].split(";")[0].strip() != "application/json":
            raise ApiError(415, "only acceptable Content-Type is application/json")
        try:
            body = json.loads(request.content)
        except ValueError as exc:
            raise ApiError(400, f"unable to decode body: {exc}") from None
        if not isinstance(body, dict):
            raise ApiError(400, "unable to decode body: not an object")
        if body.get("name", name) != name:
            raise ApiError(
                400, f'name in URL "{name}" differs from unit name in request body "{body["name"]}"'
            )
        try:
            validate_unit_name(name)
        except UnitNameError as exc:
            raise ApiError(400, str(exc)) from None
        desired = body.get("desiredState") or ""
        if desired and desired not in JOB_STATES:
            raise ApiError(400, f"invalid desiredState: {desired!r}")
        info = split_unit_name(name)
        if info is not None and info.is_template and desired not in ("", "inactive"):
            raise ApiError(400, f'cannot activate template "{name}"')
        options = body.get("options") or []
        existing = self.units.get(name)
        if existing is None and not options:
            raise ApiError(409, "unit does not exist and options field empty")
        replacing = existing is not None and (
            FakeUnit(name, options).unit_file.hash != existing.unit_file.hash
        )
        if options and (existing is None or replacing):
            self.units[name] = FakeUnit(name, options, desired=desired or "inactive")
            if existing is not None:
                self.units[name].current = existing.current
                self.units[name].machine_id = existing.machine_id
            self._later(lambda: self._converge(name))
            return httpx.Response(201)
        if not desired:
            raise ApiError(409, "must provide DesiredState to update existing unit")
        assert existing is not None
        existing.desired = desired
        self._later(lambda: self._converge(name))
        return httpx.Response(204)


def encode_token(limit: int, page: int) -> str:
    return base64.urlsafe_b64encode(struct.pack("<HH", limit, page)).decode()
