"""`GET /metrics`: this fleetd's metrics in Prometheus' text format, and what the API adds to them.

* `metrics_router` serves `Metrics.exposition()` at `/metrics`, as fleet did. It sits behind the
  same bearer token as every other route on TCP (`fleetd.api.app.BearerToken`); on the unix
  socket the file mode is the access control.
* `RequestMetrics`, an ASGI middleware, counts every HTTP request by method, route template and
  status code, and times it. The label is the template of the route that answered
  (`/fleet/v1/units/{name}`), never the raw path, so a client cannot grow the number of series.
  A request that reached no route is counted as `unrouted`: no route matched its path (404), or
  it was refused before routing (401 without the token, 413 by its Content-Length). A method
  other than the usual ones is counted as `OTHER`.
* `ClusterCollector` computes, when scraped, the cluster gauges from the API's watch-fed view:
  units by desired state and by current state, unit states by systemd's active state, machines,
  and units the engine could not place. A scrape costs one pass over the view (milliseconds for
  100,000 units); nothing is counted on each change.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Iterator, Sequence
from typing import Final

from fastapi import APIRouter, Response
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fleetd.api.service import current_state
from fleetd.api.view import ApiView
from fleetd.core.states import JobState
from fleetd.runtime.metrics import CONTENT_TYPE, NAMESPACE, Metrics

METRICS_PATH: Final = "/metrics"
UNROUTED: Final = "unrouted"
METHODS: Final = frozenset({"GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS"})


def metrics_router(metrics: Metrics) -> APIRouter:
    """The `/metrics` route over `metrics` (not in the OpenAPI document: it is not JSON)."""
    router = APIRouter(include_in_schema=False)

    @router.get(METRICS_PATH)
    async def scrape() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    return router


class RequestMetrics:
    """Count and time every HTTP request by method, route template and status code."""

    def __init__(self, app: ASGIApp, metrics: Metrics, prefixes: Sequence[str] = ()) -> None:
        self.app = app
        self._requests = metrics.api_requests
        self._seconds = metrics.api_request_seconds
        self._prefixes = tuple(prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server answers if the app raises before it responds

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            method = scope["method"] if scope["method"] in METHODS else "OTHER"
            route = self.route_of(scope, self._prefixes)
            self._requests.labels(method, route, str(status)).inc()
            self._seconds.labels(method, route).observe(time.perf_counter() - started)

    @staticmethod
    def route_of(scope: Scope, prefixes: Sequence[str] = ()) -> str:
        """The template of the route that answered, else `unrouted`. A route of a router
        included under one of `prefixes` may carry its path without it: the prefix the request
        came by is put back."""
        route = scope.get("route")
        path = getattr(route, "path_format", None) or getattr(route, "path", None)
        if not isinstance(path, str):
            return UNROUTED
        requested = scope.get("path", "")
        for prefix in prefixes:
            if requested.startswith(prefix + "/") and not path.startswith(prefix + "/"):
                return prefix + path
        return path


class ClusterCollector(Collector):
    """The cluster's gauges, computed from the API's view when scraped."""

    def __init__(self, view: ApiView) -> None:
        self._view = view

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(self._families())

    def collect(self) -> Iterator[GaugeMetricFamily]:
        return iter(self._families())

    def _families(self) -> list[GaugeMetricFamily]:
        view = self._view
        desired = GaugeMetricFamily(
            f"{NAMESPACE}_units",
            "Units in the registry, by desired state.",
            labels=["desired_state"],
        )
        current = GaugeMetricFamily(
            f"{NAMESPACE}_units_current",
            "Non-global units by current state (as fleetctl list-unit-files shows it).",
            labels=["current_state"],
        )
        systemd = GaugeMetricFamily(
            f"{NAMESPACE}_unit_states",
            "Unit states published by the agents, by systemd's active state.",
            labels=["active_state"],
        )
        machines = GaugeMetricFamily(f"{NAMESPACE}_machines", "Machines present in the cluster.")
        unplaceable = GaugeMetricFamily(
            f"{NAMESPACE}_units_unplaceable", "Units the engine stored reasons for not placing."
        )
        if not view.ready:  # nothing read yet: say nothing rather than zeros
            return [desired, current, systemd, machines, unplaceable]
        by_desired = Tally(record.desired for record in view.units.values())
        by_current: Tally[JobState] = Tally()
        for name in view.units:
            if name in view.global_units:
                continue
            placed = view.placements.get(name)
            if not placed:
                by_current[JobState.INACTIVE] += 1
                continue
            machine = min(placed)
            state = view.states.get(name, {}).get(machine)
            by_current[current_state(placed[machine], state)] += 1
        by_active = Tally(
            state.active_state for on in view.states.values() for state in on.values()
        )
        for job_state in JobState:
            desired.add_metric([job_state.value], by_desired.get(job_state, 0))
            current.add_metric([job_state.value], by_current.get(job_state, 0))
        for active, count in sorted(by_active.items()):
            systemd.add_metric([active], count)
        machines.add_metric([], len(view.machines))
        unplaceable.add_metric([], len(view.unplaceable))
        return [desired, current, systemd, machines, unplaceable]
