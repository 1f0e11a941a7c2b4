"""The API's view starts with the first request, not with fleetd.

Role: every fleetd serves the API on its own socket, but on most machines nobody asks it
anything, and an `ApiView` mirrors the whole registry: every unit, placement and reported
state, decoded again for each change (on the rig, a third of an agent machine's CPU while
units start). `ViewActivation` runs the view only once a request has come: the first request
(and those that arrive with it) wait, up to `first_wait` seconds, for the view's first read,
then are answered as usual; from then on the view stays fed like before.

Invariants:
* nothing is mirrored before the first HTTP request (lifespan events do not count);
* a request never waits once the view has been read once, and never longer than
  `first_wait`: a view that cannot be read (etcd away) answers 503, as an unready view did;
* the view, once started, runs until fleetd stops.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from starlette.types import ASGIApp, Receive, Scope, Send

from fleetd.api.view import ApiView

log = structlog.get_logger(__name__)


class ViewActivation:
    """Starts `view` when the first request asks for it; `run` is the component's task."""

    def __init__(self, view: ApiView, first_wait: float) -> None:
        self._view = view
        self._first_wait = first_wait
        self._wanted = asyncio.Event()
        self._was_ready = False

    @property
    def started(self) -> bool:
        return self._wanted.is_set()

    async def run(self) -> None:
        """Wait for the first request, then feed the view until cancelled."""
        await self._wanted.wait()
        log.info("API view starting: the first request came")
        await self._view.run()

    async def ensure(self) -> None:
        """Start the view if it is not, and wait (bounded) for its first read."""
        if self._was_ready or self._view.ready:
            self._was_ready = True
            return
        self._wanted.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._view.wait_ready(), self._first_wait)
        self._was_ready = self._view.ready

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """`app` behind this activation: each HTTP request first calls `ensure`."""

        async def activated(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                await self.ensure()
            await app(scope, receive, send)

        return activated
