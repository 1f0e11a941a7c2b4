"""The `UnitManager` port over systemd's D-Bus API on the system bus, with dbus-fast.

This module and the rest of `agent/systemd/` are the only code that imports dbus-fast
(import-linter checks it). It speaks to `org.freedesktop.systemd1` with low-level messages whose
signatures are systemd's own (`org.freedesktop.systemd1(5)`), so nothing is introspected:

    LinkUnitFiles(as files, b runtime, b force) -> a(sss)      runtime, force: true
    DisableUnitFiles(as files, b runtime) -> a(sss)             runtime: true
    Reload()                                                     answers once reloaded
    StartUnit(s name, s mode) -> o job, StopUnit(...) -> o job   mode: "replace"
    ResetFailedUnit(s name)
    ListUnitsByNames(as names) -> a(ssssssouso)                  states (and object paths) at once
    Get("org.freedesktop.systemd1.Unit", "LoadError") -> v (ss)  only for a refused unit
    Subscribe()                                                  or systemd sends no signals

Links and unlinks asked for at the same time go to systemd together, in one `LinkUnitFiles` or
`DisableUnitFiles` call of many files (`coalesce.Coalescer`): systemd scans its whole runtime
unit directory on each such call, so a thousand calls of one unit cost a thousand scans (58 ms
a call with 340 links on the rig). An unlink of a unit this adapter linked needs no call at
all: `LinkUnitFiles` answers with the symlink it made, and when that path is still a symlink to
the unit's file, removing it is all `DisableUnitFiles` would do for a runtime link without an
`[Install]` section. A unit linked before the adapter started (fleetd restarted) is unlinked
through `DisableUnitFiles`.

Signals (after `AddMatch` rules and `Subscribe`): `JobRemoved(u id, o job, s unit, s result)`
and `Reloading(b active)` on the manager, and `PropertiesChanged` on unit objects, whose paths
come from systemd's own answers (never computed here). Each becomes a change notification for
the unit it names. `UnitNew`/`UnitRemoved` are ignored: merely reading an idle unit's state
makes systemd load it and collect it again, so treating them as changes loops.

Invariants:
* At most `max_in_flight` (32) calls are in flight: below dbus-daemon's limit of 128 pending
  replies per connection, and clear of dbus-fast's EAGAIN-on-flood bug (dbus-next issue 153: a
  flooded socket's EAGAIN drops the connection).
* Every call has a deadline; an error reply raises `UnitRefused` with systemd's error name and
  message; no connection, a lost connection, no answer in time, or an error from the bus itself
  (`BUS_ERRORS`: no reply, limits exceeded, ...) raises `SystemdUnavailable`.
* At most `MAX_PENDING_JOBS` (128) of our jobs are queued in systemd at once: a start or stop
  waits for a slot, which is freed when its job ends, or after `JOB_SLOT_HOLD` (5 s) for a job
  that takes longer (a slow unit must not hold up the others). systemd keeps one match rule on
  its own bus connection per job a client has pending, dbus-daemon allows it 512, and past that
  systemd drops off the bus (seen on the rig with a thousand starts queued at once).
* The JobRemoved race: a job can finish, and its signal arrive, before the reply that names the
  job. `JobTracker` buffers such signals while a job call is in flight and pairs them with the
  reply, so no job result is lost and the buffer stays empty when no call is in flight.
* `run()` connects, subscribes, and on any failure or disconnection logs it and reconnects with
  capped backoff (reset only by a connection that held); it never gives up. After each
  (re)connection every subscriber hears "everything changed", since signals may have been missed.
  When systemd itself leaves the bus and comes back (`NameOwnerChanged`), it has forgotten our
  `Subscribe`: the adapter drops its connection and reconnects, as after any loss.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

import structlog
from dbus_fast import BusType, DBusFastError, Message, MessageType
from dbus_fast.aio import MessageBus

from agent.systemd.coalesce import Coalescer
from agent.systemd.files import UnitFileStore
from agent.systemd.journal import last_error
from agent.systemd.port import (
    DEFAULT_UNITS_DIRECTORY,
    JOB_DISCONNECTED,
    JOB_DONE,
    ChangeFeed,
    ChangeHub,
    Job,
    KnownStates,
    SystemdUnavailable,
    UnitRefused,
    UnitStatus,
)
from fleetd.runtime.backoff import Backoff

log = structlog.get_logger(__name__)

SYSTEMD: Final = "org.freedesktop.systemd1"
MANAGER_PATH: Final = "/org/freedesktop/systemd1"
MANAGER_INTERFACE: Final = "org.freedesktop.systemd1.Manager"
UNIT_PATH_NAMESPACE: Final = "/org/freedesktop/systemd1/unit"
UNIT_INTERFACE: Final = "org.freedesktop.systemd1.Unit"
REFUSED_LOAD_STATES: Final = frozenset({"bad-setting", "error"})
PROPERTIES_INTERFACE: Final = "org.freedesktop.DBus.Properties"
NO_SUCH_UNIT: Final = "org.freedesktop.systemd1.NoSuchUnit"

SYSTEM_BUS_ADDRESS: Final = "unix:path=/run/dbus/system_bus_socket"
MAX_IN_FLIGHT: Final = 32
STABLE_CONNECTION: Final = 10.0  # seconds a connection must hold to reset the backoff
LIST_CHUNK: Final = 512  # names per ListUnitsByNames call

MATCH_RULES: Final = (
    f"type='signal',sender='{SYSTEMD}',path='{MANAGER_PATH}',interface='{MANAGER_INTERFACE}',"
    "member='JobRemoved'",
    f"type='signal',sender='{SYSTEMD}',interface='{PROPERTIES_INTERFACE}',"
    f"member='PropertiesChanged',path_namespace='{UNIT_PATH_NAMESPACE}',arg0='{UNIT_INTERFACE}'",
    f"type='signal',sender='{SYSTEMD}',path='{MANAGER_PATH}',interface='{MANAGER_INTERFACE}',"
    "member='Reloading'",
)
"""The signals the adapter hears from systemd: only these, so that the thousands of others a busy
systemd sends (`UnitNew`, `JobNew`, the properties of other interfaces) cost nothing to parse."""
BUS_NAME_RULE: Final = (
    "type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',"
    f"member='NameOwnerChanged',arg0='{SYSTEMD}'"
)
"""systemd leaving the bus and coming back (it drops its connection when it cannot keep up, and
forgets who subscribed): the adapter then reconnects and subscribes again."""
BUS_ERRORS: Final = frozenset(
    f"org.freedesktop.DBus.Error.{name}"
    for name in (
        "NoReply",
        "Timeout",
        "TimedOut",
        "Disconnected",
        "LimitsExceeded",
        "NoMemory",
        "ServiceUnknown",
        "NameHasNoOwner",
    )
)
"""Errors that come from the bus, not from systemd: the call did not get to systemd, or its
answer got lost; they are transient (`SystemdUnavailable`), not a refusal."""
MAX_PENDING_JOBS: Final = 128
JOB_SLOT_HOLD: Final = 5.0


# ---------------------------------------------------------------- messages


def manager_call(member: str, signature: str = "", body: Sequence[Any] = ()) -> Message:
    """A method call on systemd's manager object."""
    return Message(
        destination=SYSTEMD,
        path=MANAGER_PATH,
        interface=MANAGER_INTERFACE,
        member=member,
        signature=signature,
        body=list(body),
    )


def add_match_message(rule: str) -> Message:
    return Message(
        destination="org.freedesktop.DBus",
        path="/org/freedesktop/DBus",
        interface="org.freedesktop.DBus",
        member="AddMatch",
        signature="s",
        body=[rule],
    )


def link_message(*paths: Path) -> Message:
    return manager_call("LinkUnitFiles", "asbb", [[str(path) for path in paths], True, True])


def disable_message(*names: str) -> Message:
    return manager_call("DisableUnitFiles", "asb", [list(names), True])


def start_message(name: str) -> Message:
    return manager_call("StartUnit", "ss", [name, "replace"])


def stop_message(name: str) -> Message:
    return manager_call("StopUnit", "ss", [name, "replace"])


def reset_failed_message(name: str) -> Message:
    return manager_call("ResetFailedUnit", "s", [name])


def list_units_message(names: Sequence[str]) -> Message:
    return manager_call("ListUnitsByNames", "as", [list(names)])


def load_error_message(path: str) -> Message:
    """`Get(Unit, "LoadError")` on a unit object: `(ss)`, the error's name and message."""
    return Message(
        destination=SYSTEMD,
        path=path,
        interface=PROPERTIES_INTERFACE,
        member="Get",
        signature="ss",
        body=[UNIT_INTERFACE, "LoadError"],
    )


def load_error_text(reply: Message, detail: str = "") -> str:
    """systemd's reason from a `LoadError` reply, as `systemctl status` shows it after
    "Reason:", followed by the journal's `detail` line when there is one:
    `Unit x.service has a bad unit file setting: x.service:2: Neither a valid ...`."""
    name, message = reply.body[0].value
    reason = str(message or name)
    if detail:
        return f"{reason.rstrip('.')}: {detail}" if reason else detail
    return reason


# -------------------------------------------------------------------- jobs


class JobTracker:
    """Pairs the jobs systemd queued for us with their `JobRemoved`, whichever arrives first.

    Call `call_started()` before sending StartUnit/StopUnit, then `queued(unit, path)` with the
    reply (or `call_failed()`). A JobRemoved for an unknown job is kept only while a job call is
    in flight (it may be the reply's job); the buffer is emptied as soon as none is, and never
    holds more than `max_early` entries.
    """

    def __init__(self, max_early: int = 4096) -> None:
        self._max_early = max_early
        self._in_flight = 0
        self._early: dict[str, str] = {}  # job path -> result, signal before reply
        self._waiting: dict[str, tuple[str, asyncio.Future[str]]] = {}  # job path -> unit, result

    @property
    def buffered(self) -> int:
        return len(self._early)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def call_started(self) -> None:
        self._in_flight += 1

    def call_failed(self) -> None:
        self._call_ended()

    def queued(self, unit: str, path: str) -> Job:
        """The reply named job `path`: its result is known already, or will be."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        early = self._early.pop(path, None)
        if early is not None:
            future.set_result(early)
        else:
            self._waiting[path] = (unit, future)
        self._call_ended()
        return Job(unit, path, future)

    def _call_ended(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self._early.clear()

    def removed(self, path: str, result: str) -> str | None:
        """A JobRemoved signal; returns the unit if the job was one of ours."""
        entry = self._waiting.pop(path, None)
        if entry is not None:
            unit, future = entry
            if not future.done():
                future.set_result(result)
            return unit
        if self._in_flight > 0:
            if len(self._early) >= self._max_early:
                self._early.pop(next(iter(self._early)))
            self._early[path] = result
        return None

    def disconnected(self) -> None:
        """The bus is gone: no JobRemoved will come for the jobs still waiting."""
        for _, future in self._waiting.values():
            if not future.done():
                future.set_result(JOB_DISCONNECTED)
        self._waiting.clear()
        self._early.clear()


# ----------------------------------------------------------------- adapter


async def _disconnection(bus: MessageBus) -> None:
    """Return when `bus` has disconnected (raises the error that disconnected it, if any)."""
    await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]


async def _close(bus: MessageBus, grace: float = 1.0) -> None:
    """Disconnect `bus` and give dbus-fast a moment to close its socket."""
    bus.disconnect()
    waiter = asyncio.ensure_future(_disconnection(bus))
    done, _ = await asyncio.wait([waiter], timeout=grace)
    if not done:
        waiter.cancel()
    elif not waiter.cancelled():
        waiter.exception()  # retrieved: a disconnection error is expected here


def _error_text(reply: Message) -> str:
    body = reply.body
    return body[0] if body and isinstance(body[0], str) else ""


class DbusUnitManager:
    """systemd over the system bus; run `run()` to keep the connection, then use the port.

    The bus is `bus_address`, else `$DBUS_SYSTEM_BUS_ADDRESS`, else the system bus's socket.
    `journal(unit)` gives the journal's line on a unit systemd refused (`journal.last_error`).
    Container units get their drop-in under `dropins` (see `files.UnitFileStore`).
    """

    def __init__(
        self,
        units_directory: Path = DEFAULT_UNITS_DIRECTORY,
        *,
        bus_address: str | None = None,
        max_in_flight: int = MAX_IN_FLIGHT,
        max_pending_jobs: int = MAX_PENDING_JOBS,
        job_slot_hold: float = JOB_SLOT_HOLD,
        call_timeout: float = 60.0,
        reload_timeout: float = 300.0,
        backoff: Backoff | None = None,
        journal: Callable[[str], Awaitable[str]] = last_error,
        dropins: Path | None = None,
        container_program: str = "fleet-pod",
    ) -> None:
        self._files = UnitFileStore(
            units_directory, dropins=dropins, container_program=container_program
        )
        self._journal = journal
        self.address = (
            bus_address or os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") or SYSTEM_BUS_ADDRESS
        )
        self._call_timeout = call_timeout
        self._reload_timeout = reload_timeout
        self._backoff = backoff if backoff is not None else Backoff(initial=0.2, maximum=10.0)
        self._semaphore = asyncio.Semaphore(max_in_flight)
        self._job_slots = asyncio.Semaphore(max_pending_jobs)
        self._job_slot_hold = job_slot_hold
        self._bus: MessageBus | None = None
        self._connected = asyncio.Event()
        self._jobs = JobTracker()
        self._paths: dict[str, str] = {}  # unit object path -> unit name
        self._hub = ChangeHub()
        self._links = Coalescer(self._link_files)
        self._unlinks = Coalescer(self._disable_files)
        self._symlinks: dict[str, tuple[str, str]] = {}  # unit -> (symlink, its target) made
        self._known = KnownStates()
        self.connections = 0  # successful connections so far

    @property
    def jobs(self) -> JobTracker:
        return self._jobs

    @property
    def connected(self) -> bool:
        return self._bus is not None and self._bus.connected

    async def wait_connected(self) -> None:
        await self._connected.wait()

    # ---- connection

    async def run(self) -> None:
        """Keep a subscribed connection to systemd until cancelled; see the module docstring."""
        address = self.address
        while True:
            try:
                bus = await self._connect()
            except (OSError, EOFError, DBusFastError, SystemdUnavailable, UnitRefused) as exc:
                delay = self._backoff.next_delay()
                log.warning(
                    "systemd D-Bus unreachable, retrying",
                    address=address,
                    error=str(exc) or type(exc).__name__,
                    retry_in=round(delay, 2),
                )
                await asyncio.sleep(delay)
                continue
            self.connections += 1
            self._bus = bus
            self._connected.set()
            connected_at = time.monotonic()
            log.info("connected to systemd", address=address)
            self._hub.notify_all()
            error = ""
            try:
                await _disconnection(bus)
            except Exception as exc:
                error = str(exc) or type(exc).__name__
            finally:
                self._connected.clear()
                self._bus = None
                self._paths.clear()
                self._jobs.disconnected()
                await _close(bus)
            if time.monotonic() - connected_at >= STABLE_CONNECTION:
                self._backoff.reset()  # a connection that held: start over quickly
            delay = self._backoff.next_delay()
            log.warning(
                "systemd D-Bus connection lost, reconnecting",
                address=address,
                error=error,
                retry_in=round(delay, 2),
            )
            await asyncio.sleep(delay)

    async def _connect(self) -> MessageBus:
        bus = MessageBus(bus_address=self.address, bus_type=BusType.SYSTEM)
        try:
            async with asyncio.timeout(self._call_timeout):
                await bus.connect()  # cleans up after itself when it fails
        except TimeoutError:
            raise SystemdUnavailable("no answer from the bus in time") from None
        try:
            async with asyncio.timeout(self._call_timeout):
                bus.add_message_handler(self._on_message)
                for rule in (*MATCH_RULES, BUS_NAME_RULE):
                    await self._send(bus, add_match_message(rule))
                await self._send(bus, manager_call("Subscribe"))
        except BaseException as exc:
            await _close(bus)
            if isinstance(exc, TimeoutError):
                raise SystemdUnavailable("no answer from systemd in time") from None
            raise
        return bus

    # ---- calls

    async def _send(self, bus: MessageBus, message: Message, unit: str = "") -> Message:
        """Send one call on `bus` and return its reply; errors translated (see the docstring)."""
        member = message.member or "?"
        try:
            reply = await bus.call(message)
        except (OSError, EOFError, DBusFastError) as exc:
            raise SystemdUnavailable(f"{member}: {exc or type(exc).__name__}") from None
        if reply is None:
            raise SystemdUnavailable(f"{member}: the connection to systemd closed")
        if reply.message_type is MessageType.ERROR:
            if reply.error_name in BUS_ERRORS:
                raise SystemdUnavailable(f"{member}: {_error_text(reply)} ({reply.error_name})")
            raise UnitRefused(member, unit, reply.error_name or "", _error_text(reply))
        return reply

    async def _call(
        self, message: Message, unit: str = "", *, within: float | None = None
    ) -> Message:
        bus = self._bus
        if bus is None or not bus.connected:
            raise SystemdUnavailable(f"{message.member}: not connected to systemd")
        deadline = within if within is not None else self._call_timeout
        async with self._semaphore:
            try:
                async with asyncio.timeout(deadline):
                    return await self._send(bus, message, unit)
            except TimeoutError:
                raise SystemdUnavailable(
                    f"{message.member}: no answer from systemd within {deadline}s"
                ) from None

    async def _job_call(self, message: Message, unit: str) -> Job:
        await self._job_slots.acquire()
        self._jobs.call_started()
        try:
            reply = await self._call(message, unit)
            path = reply.body[0]
        except BaseException:
            self._jobs.call_failed()
            self._job_slots.release()
            raise
        job = self._jobs.queued(unit, path)
        self._hold_slot(job)
        return job

    def _hold_slot(self, job: Job) -> None:
        """Free the job's slot when it ends, or after `JOB_SLOT_HOLD`, whichever comes first."""
        loop = asyncio.get_running_loop()
        freed = False

        def free(*_: object) -> None:
            nonlocal freed
            if not freed:
                freed = True
                timer.cancel()
                self._job_slots.release()

        timer = loop.call_later(self._job_slot_hold, free)
        job.when_done(free)

    # ---- the port

    @property
    def units_directory(self) -> Path:
        return self._files.directory

    async def list_unit_files(self, names: Collection[str] | None = None) -> dict[str, str]:
        return self._files.list(names)

    async def write_unit_file(self, name: str, text: str) -> None:
        new = not self._files.path_for(name).exists()
        self._files.write(name, text)
        self._known.written(name, new=new)
        self._hub.notify(name)

    async def remove_unit_file(self, name: str) -> None:
        self._files.remove(name)
        self._known.forget(name)
        for path in [p for p, n in self._paths.items() if n == name]:
            del self._paths[path]
        self._hub.notify(name)

    async def link_unit(self, name: str) -> None:
        self._known.forget(name)
        await self._links.submit(self._files.path_for(name))

    async def unlink_unit(self, name: str) -> None:
        self._files.path_for(name)
        await self._unlinks.submit(name)

    async def _link_files(self, paths: list[Path]) -> None:
        reply = await self._call(link_message(*paths), ", ".join(path.name for path in paths))
        targets = {str(path) for path in paths}
        for kind, symlink, target in reply.body[0]:
            if kind == "symlink" and target in targets:
                self._symlinks[Path(symlink).name] = (symlink, target)

    async def _disable_files(self, names: list[str]) -> None:
        others = [name for name in names if not self._remove_own_symlink(name)]
        if others:
            await self._call(disable_message(*others), ", ".join(others))

    def _remove_own_symlink(self, name: str) -> bool:
        """Remove the symlink `LinkUnitFiles` made for `name`, if it is still there and still
        points to the unit's file; False when it cannot be done that way."""
        made = self._symlinks.pop(name, None)
        if made is None:
            return False
        symlink, target = made
        try:
            if os.readlink(symlink) != target:
                return False
            os.unlink(symlink)
        except OSError:
            return False
        return True

    async def reload(self) -> None:
        await self._call(manager_call("Reload"), within=self._reload_timeout)

    async def start_unit(self, name: str) -> Job:
        self._files.path_for(name)
        self._known.forget(name)
        return await self._job_call(start_message(name), name)

    async def stop_unit(self, name: str, *, unloading: bool = False) -> Job:
        self._files.path_for(name)
        try:
            job = await self._job_call(stop_message(name), name)
        except UnitRefused as exc:
            if exc.error_name != NO_SUCH_UNIT:
                raise
            job = Job.finished(name, JOB_DONE)  # not loaded: nothing to stop
        if unloading:
            self._known.departing(job)
        return job

    async def reset_failed(self, name: str) -> None:
        self._files.path_for(name)
        try:
            await self._call(reset_failed_message(name), name)
        except UnitRefused as exc:
            if exc.error_name != NO_SUCH_UNIT:
                raise

    async def unit_states(self, names: Collection[str]) -> dict[str, UnitStatus]:
        wanted, known = self._known.answer(list(dict.fromkeys(names)))
        if not wanted:
            return known
        chunks = [wanted[i : i + LIST_CHUNK] for i in range(0, len(wanted), LIST_CHUNK)]
        replies = await asyncio.gather(*(self._call(list_units_message(c)) for c in chunks))
        states: dict[str, UnitStatus] = {}
        asked = set(wanted)
        refused: dict[str, str] = {}
        for reply in replies:
            for name, _desc, load, active, sub, _following, path, *_job in reply.body[0]:
                if name in asked:
                    states[name] = UnitStatus(name, load, active, sub)
                    self._paths[path] = name
                    if load in REFUSED_LOAD_STATES:
                        refused[name] = path
        errors = await asyncio.gather(*map(self._load_error, refused, refused.values()))
        for name, error in zip(refused, errors, strict=True):
            states[name] = replace(states[name], load_error=error)
        return {name: states.get(name, UnitStatus(name)) for name in wanted} | known

    async def _load_error(self, name: str, path: str) -> str:
        """systemd's reason for refusing to load `name` (rare: only asked for refused units)."""
        try:
            reply = await self._call(load_error_message(path), name)
        except UnitRefused as exc:  # the unit went away meanwhile
            return exc.message
        return load_error_text(reply, await self._journal(name))

    def subscribe(self) -> ChangeFeed:
        return self._hub.subscribe()

    # ---- signals

    def _on_message(self, message: Message) -> None:
        """Turn systemd's signals into job results and change notifications; never raises."""
        if message.message_type is not MessageType.SIGNAL:
            return
        try:
            self._on_signal(message)
        except (ValueError, TypeError, IndexError) as exc:
            log.debug("ignoring a malformed signal", member=message.member, error=str(exc))

    def _on_signal(self, message: Message) -> None:
        member = message.member
        if member == "NameOwnerChanged" and message.sender == "org.freedesktop.DBus":
            name, _old, new = message.body
            if name == SYSTEMD and new and self._bus is not None:
                log.warning("systemd reconnected to the bus, subscribing again", owner=new)
                self._bus.disconnect()  # `run()` reconnects and subscribes
        elif message.interface == MANAGER_INTERFACE and message.path == MANAGER_PATH:
            if member == "JobRemoved":
                _id, job, unit, result = message.body
                if self._jobs.removed(job, result) is not None and result != JOB_DONE:
                    log.warning("systemd job did not succeed", unit=unit, job=job, result=result)
                self._hub.notify(unit)
            # UnitNew/UnitRemoved are deliberately not changes: reading an idle unit's state
            # loads it (UnitNew) and systemd's GC drops it again (UnitRemoved); reacting to them
            # made every read trigger the next, a busy loop on any unit at rest
            elif member == "Reloading" and not message.body[0]:
                self._hub.notify_all()
        elif message.interface == PROPERTIES_INTERFACE and member == "PropertiesChanged":
            name = self._paths.get(message.path or "")
            if name is not None:
                self._hub.notify(name)
