"""The stop grace: what lets fleet's own Go `fleetctl restart` finish against pyfleet.

fleet's `restart` (fleetctl/restart.go) sets a launched unit to `loaded` and then, by a slip in
`setUnitStateAndWait`, waits for `launched`, polling `GET /units/<name>` every 250 ms; only then
does it set `launched`. Against fleet that worked because fleet's agent took seconds to stop a
unit, so the first poll still read `launched`. pyfleet stops it well within those 250 ms, so the
first poll reads `loaded`, and fleet's client waits forever with the unit stopped.

So, for `GRACE` seconds after this API server has moved a unit from `launched` to `loaded`,
`GET /units/<name>` keeps reporting `currentState: launched` while the unit stops, unless the
client asks for the exact state with `EXACT_STATE_HEADER` (pyfleet's fleetctl always does).
fleet's client then sets `launched` again, and the unit runs anew: stopped and started by
systemd, a new main process.

Invariants:
* Only the single-unit GET of a client without the header is affected, only in the grace after
  a launched-to-loaded change made through this server, and only while the unit is stopped or
  stopping (`loaded`); lists, `/state`, the engine and the agent never see it. The cost to
  fleet's Go `stop`, which waits for `loaded` the same way, is at most `GRACE` more.
* At most `MAX_TRACKED` units are remembered; expired entries are dropped as new ones come.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

GRACE: Final = 1.0
"""Seconds: fleet's client polls first after 250 ms; the rest is room for a remote client."""
MAX_TRACKED: Final = 10_000
EXACT_STATE_HEADER: Final = "X-Pyfleet-Exact-State"


class StopGrace:
    """When each unit was last moved from `launched` to `loaded` through this server."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._since: dict[str, float] = {}

    def note(self, name: str) -> None:
        now = self._clock()
        if len(self._since) >= MAX_TRACKED:
            self._since = {n: t for n, t in self._since.items() if now - t < GRACE}
            if len(self._since) >= MAX_TRACKED:
                self._since.pop(next(iter(self._since)))
        self._since.pop(name, None)
        self._since[name] = now

    def forget(self, name: str) -> None:
        self._since.pop(name, None)

    def holds(self, name: str) -> bool:
        since = self._since.get(name)
        if since is None:
            return False
        if self._clock() - since < GRACE:
            return True
        del self._since[name]
        return False
