"""TEST HELPER: a transport that proves requests are sent concurrently, without timing them.

`Gate(handler, width, gated)` wraps a request handler (the fake API's `handle`). A request for
which `gated(request)` is true is held until `width` gated requests are in flight together; the
batch is then let through in the reverse of the order the test gives (`rank`: the lowest rank
goes last), so the answers come back in an order unlike the arguments'. A client that sends one
request at a time never fills a batch: after `DEADLINE` seconds the held request is answered
with a 599 error saying how many were in flight, and the command fails (the test fails on its
exit code and output, never on a clock). A request that would make more than `width` gated
requests in flight is refused the same way.

`widest` is the most gated requests ever in flight at once; `batches` counts full batches;
`held` lists the gated requests in the order they arrived.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import httpx

DEADLINE = 20.0
"""How long a held request waits for its batch to fill: far longer than any concurrent client
needs, so reaching it means the requests were not concurrent."""


class Gate:
    def __init__(
        self,
        handler: Callable[[httpx.Request], httpx.Response],
        width: int,
        gated: Callable[[httpx.Request], bool],
        rank: Callable[[httpx.Request], int] = lambda request: 0,
    ) -> None:
        self.handler = handler
        self.width = width
        self.gated = gated
        self.rank = rank
        self.widest = 0
        self.batches = 0
        self.refusals: list[str] = []
        self.held: list[httpx.Request] = []
        self._in_flight = 0
        self._batch: list[httpx.Request] = []
        self._done: set[int] = set()
        self._cond = threading.Condition()

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def _refuse(self, reason: str) -> httpx.Response:
        self.refusals.append(reason)
        return httpx.Response(599, json={"error": {"code": 599, "message": reason}})

    def handle(self, request: httpx.Request) -> httpx.Response:
        if not self.gated(request):
            return self.handler(request)
        with self._cond:
            self.held.append(request)  # kept, so no other request reuses its id()
            self._in_flight += 1
            self.widest = max(self.widest, self._in_flight)
        try:
            refusal = self._hold(request)
            return refusal if refusal is not None else self.handler(request)
        finally:
            with self._cond:
                self._in_flight -= 1
                self._done.add(id(request))
                self._cond.notify_all()

    def _hold(self, request: httpx.Request) -> httpx.Response | None:
        """Wait for the batch to fill and for this request's turn; a refusal if it does not."""
        with self._cond:
            if self._in_flight > self.width:
                return self._refuse(f"{self._in_flight} requests in flight, > {self.width}")
            batch = self._batch
            batch.append(request)
            if len(batch) == self.width:
                self._batch = []
                self.batches += 1
                self._cond.notify_all()
            elif not self._cond.wait_for(lambda: len(batch) == self.width, DEADLINE):
                batch.remove(request)
                return self._refuse(
                    f"only {len(batch) + 1} of {self.width} requests in flight after "
                    f"{DEADLINE:g}s: they are sent one after another"
                )
            mine = self.rank(request)
            later = {id(other) for other in batch if self.rank(other) > mine}
            if not self._cond.wait_for(lambda: self._done.issuperset(later), DEADLINE):
                return self._refuse("the batch was not let through")
        return None


def unit_of(request: httpx.Request) -> str:
    """The unit a `/units/<name>` request is about."""
    return request.url.path.rsplit("/", 1)[-1]


def is_write(request: httpx.Request) -> bool:
    return request.method in ("PUT", "DELETE")


def by_position(names: list[str]) -> Callable[[httpx.Request], int]:
    """A `rank` that lets the requests of a batch through from the last argument to the first."""
    index = {name: position for position, name in enumerate(names)}
    return lambda request: index.get(unit_of(request), 0)


def scrambled(count: int) -> list[str]:
    """`count` instance names `s@N.service` in an order that is neither the numbers' nor the
    names' (count must not be a multiple of 7)."""
    assert count % 7, "7 and count must be coprime for this to be a permutation"
    return [f"s@{(position * 7) % count}.service" for position in range(count)]
