"""The `UnitManager` port: the narrow slice of systemd the agent uses, and the types it speaks.

Two implementations keep the same behaviour: `agent.systemd.dbus.DbusUnitManager` (systemd over
the system bus, with dbus-fast) and `agent.systemd.fake.FakeUnitManager` (in memory, for tests).

What every implementation guarantees:

* Unit files live in one directory (`units_directory`, `/run/fleet/units/` by default). A name
  that could not be a plain file of it (`/`, `..`, not a valid unit name) raises `UnsafeUnitName`
  before anything is written or asked of systemd.
* `list_unit_files` returns the unit files there, or those of the names given (name -> SHA-1 of
  the bytes, which is fleet's hash of the unit the agent wrote); other files (temporary files,
  the agent's own records) are not units and are not listed.
* `start_unit`/`stop_unit` return once systemd has queued the job; `Job.result()` waits for it to
  finish. Stopping a unit systemd does not have loaded is not an error: its job is already done.
* `unit_states` does not ask systemd about a unit it would have to load to answer, when the
  answer is known: a new unit file not linked yet is `not-found`/`inactive`/`dead`; a unit stopped
  with `unloading=True` (on its way out) is `loaded`/`inactive`/`dead` once its stop job is
  `done`, until its file is removed or it is written, linked or started again. Asking would make
  systemd load the unit and, after any link changed, first rebuild its map of every unit file
  (about 1,800 file system calls with 300 units linked): once per unit in a mass start or unload.
* Errors: `SystemdUnavailable` when systemd cannot be reached (transient: retry later);
  `UnitRefused` when systemd answered with an error (its D-Bus error name and message).
* Change notifications: every subscriber's `ChangeFeed` hears the name of each unit whose state
  may have changed (systemd signals, and our own file writes and removals), or "everything"
  after a reload or a reconnect. Feeds coalesce: a burst of changes is one wakeup.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

DEFAULT_UNITS_DIRECTORY = Path("/run/fleet/units")

JOB_DONE = "done"
JOB_DISCONNECTED = "disconnected"  # the bus went away before systemd said how the job ended


@dataclass(frozen=True, slots=True)
class UnitStatus:
    """systemd's three states of one unit (`not-found`/`inactive`/`dead` when it has none), and
    why systemd refused to load it (its `LoadError`, empty for a unit that loaded)."""

    name: str
    load_state: str = "not-found"
    active_state: str = "inactive"
    sub_state: str = "dead"
    load_error: str = ""


class SystemdError(Exception):
    """A systemd operation failed."""


class SystemdUnavailable(SystemdError):
    """systemd could not be reached, or did not answer in time (transient)."""


class UnitRefused(SystemdError):
    """systemd answered a call about `unit` with an error."""

    def __init__(self, method: str, unit: str, error_name: str, message: str) -> None:
        super().__init__(f"{method} {unit}: {message} ({error_name})")
        self.method = method
        self.unit = unit
        self.error_name = error_name
        self.message = message


class UnsafeUnitName(ValueError):
    """A unit name that cannot name a file of the units directory; nothing was done."""


class Job:
    """One systemd job: the unit, the job's object path, and its result once it is known."""

    def __init__(self, unit: str, path: str, result: asyncio.Future[str]) -> None:
        self.unit = unit
        self.path = path
        self._result = result

    @classmethod
    def finished(cls, unit: str, result: str, path: str = "/") -> Job:
        """A job whose result is already known (systemd had nothing to do)."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        future.set_result(result)
        return cls(unit, path, future)

    @property
    def done(self) -> bool:
        return self._result.done()

    def when_done(self, callback: Callable[[], None]) -> None:
        """Call `callback()` once the job's result is known (at once if it is already)."""
        self._result.add_done_callback(lambda _: callback())

    @property
    def succeeded(self) -> bool:
        """Whether the job has finished, and with `done`."""
        result = self._result
        return result.done() and not result.cancelled() and result.result() == JOB_DONE

    async def result(self) -> str:
        """`done`, `canceled`, `timeout`, `failed`, `dependency`, `skipped`, or `disconnected`."""
        return await asyncio.shield(self._result)


@dataclass(frozen=True, slots=True)
class Changed:
    """What changed since a feed was last read: some units by name, or possibly everything."""

    names: frozenset[str]
    everything: bool = False

    def touches(self, names: Collection[str]) -> bool:
        """Whether this change may concern any of `names`."""
        return self.everything or not self.names.isdisjoint(names)


class ChangeFeed:
    """One subscriber's view of the change notifications; read it with `next()`."""

    def __init__(self, hub: ChangeHub) -> None:
        self._hub = hub
        self._names: set[str] = set()
        self._everything = False
        self._ready = asyncio.Event()

    def _add(self, name: str | None) -> None:
        if name is None:
            self._everything = True
        else:
            self._names.add(name)
        self._ready.set()

    async def next(self) -> Changed:
        """Wait for at least one change, then return every change since the last call."""
        await self._ready.wait()
        self._ready.clear()
        changed = Changed(frozenset(self._names), self._everything)
        self._names = set()
        self._everything = False
        return changed

    def close(self) -> None:
        self._hub.unsubscribe(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class ChangeHub:
    """Fans change notifications out to every open feed."""

    def __init__(self) -> None:
        self._feeds: list[ChangeFeed] = []

    def subscribe(self) -> ChangeFeed:
        feed = ChangeFeed(self)
        self._feeds.append(feed)
        return feed

    def unsubscribe(self, feed: ChangeFeed) -> None:
        if feed in self._feeds:
            self._feeds.remove(feed)

    def notify(self, name: str) -> None:
        """The state of unit `name` may have changed."""
        for feed in self._feeds:
            feed._add(name)

    def notify_all(self) -> None:
        """Any unit may have changed (systemd reloaded, or the connection was re-established)."""
        for feed in self._feeds:
            feed._add(None)


class KnownStates:
    """The units whose states an adapter tells without asking systemd, since asking would make
    systemd load them (see the module docstring): a new unit file not linked yet, and a unit
    stopped with `unloading=True` whose stop is done."""

    def __init__(self) -> None:
        self._known: dict[str, UnitStatus] = {}

    def written(self, name: str, *, new: bool) -> None:
        """The unit's file was written; `new`: there was none before."""
        if new:
            self._known[name] = UnitStatus(name)
        else:
            self._known.pop(name, None)

    def departing(self, job: Job) -> None:
        """`job` stops its unit for an unload: once it is done with `done`, the unit is
        `loaded`/`inactive`/`dead` until it is forgotten."""

        def settled() -> None:
            if job.succeeded:
                self._known[job.unit] = UnitStatus(job.unit, "loaded", "inactive", "dead")

        if job.done:
            settled()
        else:
            job.when_done(settled)

    def forget(self, name: str) -> None:
        """`name` was linked, started or removed: ask systemd about it again."""
        self._known.pop(name, None)

    def answer(self, names: Collection[str]) -> tuple[list[str], dict[str, UnitStatus]]:
        """`names` split into those to ask systemd about and the states of the known ones."""
        known = {name: self._known[name] for name in names if name in self._known}
        return [name for name in names if name not in known], known


class UnitManager(Protocol):
    """systemd as the agent sees it; see the module docstring for the shared behaviour."""

    @property
    def units_directory(self) -> Path: ...

    async def list_unit_files(self, names: Collection[str] | None = None) -> dict[str, str]:
        """Unit files in the units directory: name -> SHA-1 hex of the file's bytes; given
        `names`, only those of them that are unit files there."""
        ...

    async def write_unit_file(self, name: str, text: str) -> None:
        """Write the unit file (mode 0644), replacing any previous one atomically."""
        ...

    async def remove_unit_file(self, name: str) -> None:
        """Remove the unit file; no error when it is already gone."""
        ...

    async def link_unit(self, name: str) -> None:
        """`LinkUnitFiles([path], runtime=true, force=true)` for the unit's file."""
        ...

    async def unlink_unit(self, name: str) -> None:
        """`DisableUnitFiles([name], runtime=true)`: remove the runtime link."""
        ...

    async def reload(self) -> None:
        """`daemon-reload`; returns once systemd has reloaded."""
        ...

    async def start_unit(self, name: str) -> Job:
        """`StartUnit(name, "replace")`; returns once the job is queued."""
        ...

    async def stop_unit(self, name: str, *, unloading: bool = False) -> Job:
        """`StopUnit(name, "replace")`; returns once the job is queued. `unloading`: the caller
        unlinks and removes the unit next (see the module docstring)."""
        ...

    async def reset_failed(self, name: str) -> None:
        """`ResetFailedUnit(name)`; no error when systemd does not have the unit loaded."""
        ...

    async def unit_states(self, names: Collection[str]) -> dict[str, UnitStatus]:
        """systemd's states of `names`, read together (one call, not one per unit); a unit
        systemd refused to load (`bad-setting`, `error`) also carries systemd's reason."""
        ...

    def subscribe(self) -> ChangeFeed:
        """A new feed of change notifications; close it when done."""
        ...
