"""A fake systemd and a `UnitManager` over it, with the behaviour the agent relies on.

`FakeSystemd` models the part of systemd's unit lifecycle the agent uses, in memory: runtime
links, `daemon-reload`, load states, start, stop, reset-failed, and state-change notifications.
It reads the linked unit files from disk, like systemd, and decides what a start does from them:

* a `.service` without `ExecStart=` is `bad-setting`: starting it is refused, as systemd does;
* `ExecStart=` running `false` (`/bin/false`, `/usr/bin/false`) fails: the unit ends `failed`;
* `Type=oneshot` finishes (`inactive`/`dead`), or stays `active`/`exited` with `RemainAfterExit`;
* anything else runs: `active`/`running`.

Starting an active unit does nothing (no restart), stopping a unit that is not loaded is refused
with `NoSuchUnit` (the D-Bus adapter turns that into a finished job), a failed unit stays failed
after a stop until `reset_failed`. Jobs finish at once. Counters (`starts`, `stops`) and `calls`
let tests assert what happened.

`FakeUnitManager` is the `UnitManager` port over a `FakeSystemd` and a real units directory. The
same `FakeSystemd` can outlive a manager (a restarted agent finds its units still running) and
backs the mock systemd D-Bus service of the adapter's tests.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

from agent.systemd.files import UnitFileStore
from agent.systemd.port import (
    JOB_DONE,
    ChangeFeed,
    ChangeHub,
    Job,
    KnownStates,
    SystemdUnavailable,
    UnitRefused,
    UnitStatus,
)
from fleetd.core.unitfile import UnitFileError, parse_unit

NO_SUCH_UNIT = "org.freedesktop.systemd1.NoSuchUnit"
BAD_UNIT_SETTING = "org.freedesktop.systemd1.BadUnitSetting"
FILE_NOT_FOUND = "org.freedesktop.DBus.Error.FileNotFound"

_FAILING_COMMANDS = frozenset({"false", "/bin/false", "/usr/bin/false"})


@dataclass(slots=True)
class FakeUnit:
    """One unit systemd has in memory."""

    name: str
    load_state: str = "not-found"
    active_state: str = "inactive"
    sub_state: str = "dead"
    text: str = ""

    @property
    def load_error(self) -> tuple[str, str]:
        """systemd's `LoadError` (error name, message): set only for a refused file."""
        if self.load_state == "bad-setting":
            return BAD_UNIT_SETTING, f"Unit {self.name} has a bad unit file setting."
        return "", ""

    def status(self) -> UnitStatus:
        _, message = self.load_error
        return UnitStatus(self.name, self.load_state, self.active_state, self.sub_state, message)


def _service_values(text: str, name: str) -> list[str]:
    try:
        unit = parse_unit(text)
    except UnitFileError:
        return []
    return unit.values("Service", name)


def _load_state(name: str, text: str) -> str:
    if name.endswith(".service") and not _service_values(text, "ExecStart"):
        return "bad-setting"
    return "loaded"


def _start_outcome(text: str) -> tuple[str, str, str]:
    """(active state, sub state, job result) after starting a unit with this file."""
    commands = _service_values(text, "ExecStart")
    argv = commands[-1].lstrip("-@:+!").split() if commands else []
    if argv and argv[0] in _FAILING_COMMANDS:
        return "failed", "failed", "failed"
    if "oneshot" in _service_values(text, "Type"):
        remain = _service_values(text, "RemainAfterExit")
        if remain and remain[-1].lower() in ("yes", "true", "1", "on"):
            return "active", "exited", JOB_DONE
        return "inactive", "dead", JOB_DONE
    return "active", "running", JOB_DONE


class FakeSystemd:
    """systemd's unit lifecycle in memory; see the module docstring."""

    def __init__(self) -> None:
        self.links: dict[str, Path] = {}
        self.dropins: Path | None = None  # read `<name>.d/*.conf` here, as systemd would
        self.units: dict[str, FakeUnit] = {}
        self.starts: Counter[str] = Counter()
        self.stops: Counter[str] = Counter()
        self.reloads = 0
        self.calls: list[tuple[str, str]] = []
        self._listeners: list[Callable[[str | None], None]] = []

    def add_listener(self, listener: Callable[[str | None], None]) -> None:
        """Call `listener(name)` on every state change, `listener(None)` after a reload."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[str | None], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _changed(self, name: str | None) -> None:
        for listener in list(self._listeners):
            listener(name)

    def _set(self, unit: FakeUnit, active: str, sub: str) -> None:
        unit.active_state, unit.sub_state = active, sub
        self._changed(unit.name)

    def _read(self, unit: FakeUnit) -> None:
        path = self.links.get(unit.name)
        if path is not None and path.is_file():
            unit.text = path.read_text()
            if self.dropins is not None:
                for dropin in sorted((self.dropins / f"{unit.name}.d").glob("*.conf")):
                    unit.text += "\n" + dropin.read_text()
            unit.load_state = _load_state(unit.name, unit.text)
        else:
            unit.text = ""
            unit.load_state = "not-found"

    def _load(self, name: str) -> FakeUnit:
        unit = self.units.get(name)
        if unit is None:
            unit = FakeUnit(name)
            self._read(unit)
            self.units[name] = unit
        return unit

    def _collect(self, unit: FakeUnit) -> None:
        """Forget a unit that has no file and is not running (systemd's garbage collection)."""
        if unit.load_state == "not-found" and unit.active_state == "inactive":
            self.units.pop(unit.name, None)

    # ---- the D-Bus API, as methods

    def link(self, path: Path) -> None:
        self.calls.append(("link", path.name))
        if not path.is_file():
            raise UnitRefused("LinkUnitFiles", path.name, FILE_NOT_FOUND, f"No such file: {path}")
        self.links[path.name] = path

    def unlink(self, name: str) -> None:
        self.calls.append(("unlink", name))
        self.links.pop(name, None)

    def reload(self) -> None:
        self.calls.append(("reload", ""))
        self.reloads += 1
        for unit in list(self.units.values()):
            self._read(unit)
            self._collect(unit)
        self._changed(None)

    def start(self, name: str) -> str:
        """Start `name`; returns the job's result."""
        self.calls.append(("start", name))
        unit = self._load(name)
        if unit.load_state == "not-found":
            self._collect(unit)
            raise UnitRefused("StartUnit", name, NO_SUCH_UNIT, f"Unit {name} not found.")
        if unit.load_state == "bad-setting":
            message = f"Unit {name} has a bad unit file setting."
            raise UnitRefused("StartUnit", name, BAD_UNIT_SETTING, message)
        if unit.active_state in ("active", "activating", "reloading"):
            return JOB_DONE
        self.starts[name] += 1
        self._set(unit, "activating", "start")
        active, sub, result = _start_outcome(unit.text)
        self._set(unit, active, sub)
        return result

    def stop(self, name: str) -> str:
        """Stop `name`; returns the job's result."""
        self.calls.append(("stop", name))
        unit = self.units.get(name)
        if unit is None or (unit.load_state != "loaded" and unit.active_state == "inactive"):
            raise UnitRefused("StopUnit", name, NO_SUCH_UNIT, f"Unit {name} not loaded.")
        if unit.active_state not in ("inactive", "failed"):
            self.stops[name] += 1
            self._set(unit, "deactivating", "stop-sigterm")
            self._set(unit, "inactive", "dead")
        return JOB_DONE

    def reset_failed(self, name: str) -> None:
        self.calls.append(("reset-failed", name))
        unit = self.units.get(name)
        if unit is None:
            raise UnitRefused("ResetFailedUnit", name, NO_SUCH_UNIT, f"Unit {name} not loaded.")
        if unit.active_state == "failed":
            self._set(unit, "inactive", "dead")
        self._collect(unit)

    def status(self, name: str) -> UnitStatus:
        """A unit's states; like systemd's `ListUnitsByNames`, it loads a linked unit."""
        unit = self.units.get(name)
        if unit is None and name in self.links:
            unit = self._load(name)
        return unit.status() if unit is not None else UnitStatus(name)

    # ---- what happens to units on their own, for tests

    def crash(self, name: str) -> None:
        """The unit's main process dies: the unit is `failed`."""
        self._set(self.units[name], "failed", "failed")

    def touch(self, name: str) -> None:
        """A signal about `name` without a change of state (systemd sends plenty)."""
        self._changed(name)


class FakeUnitManager:
    """The `UnitManager` port over a `FakeSystemd` and a real units directory."""

    def __init__(
        self,
        units_directory: Path,
        systemd: FakeSystemd | None = None,
        *,
        dropins: Path | None = None,
        container_program: str = "fleet-pod",
    ) -> None:
        self._files = UnitFileStore(
            units_directory, dropins=dropins, container_program=container_program
        )
        self.systemd = systemd if systemd is not None else FakeSystemd()
        self.systemd.dropins = dropins
        self.unavailable = False  # True: every call raises SystemdUnavailable
        self.refuse: dict[tuple[str, str], UnitRefused] = {}  # (method, unit) -> error to raise
        self.unit_state_calls: list[frozenset[str]] = []
        self._hub = ChangeHub()
        self._known = KnownStates()
        self.systemd.add_listener(self._on_change)

    def close(self) -> None:
        """Stop listening to the fake systemd (a manager of a stopped agent)."""
        self.systemd.remove_listener(self._on_change)

    def _on_change(self, name: str | None) -> None:
        if name is None:
            self._hub.notify_all()
        else:
            self._hub.notify(name)

    async def _enter(self, method: str, name: str = "") -> None:
        await asyncio.sleep(0)  # a real call yields to the event loop
        if self.unavailable:
            raise SystemdUnavailable(f"{method}: systemd is unavailable (fake)")
        refused = self.refuse.get((method, name))
        if refused is not None:
            raise refused

    @property
    def units_directory(self) -> Path:
        return self._files.directory

    async def list_unit_files(self, names: Collection[str] | None = None) -> dict[str, str]:
        return self._files.list(names)

    async def write_unit_file(self, name: str, text: str) -> None:
        self._files.path_for(name)  # refuse a bad name before anything else
        await self._enter("write", name)
        new = not self._files.path_for(name).exists()
        self._files.write(name, text)
        self._known.written(name, new=new)
        self._hub.notify(name)

    async def remove_unit_file(self, name: str) -> None:
        self._files.path_for(name)
        await self._enter("remove", name)
        self._files.remove(name)
        self._known.forget(name)
        self._hub.notify(name)

    async def link_unit(self, name: str) -> None:
        path = self._files.path_for(name)
        self._known.forget(name)
        await self._enter("link", name)
        self.systemd.link(path)

    async def unlink_unit(self, name: str) -> None:
        self._files.path_for(name)
        await self._enter("unlink", name)
        self.systemd.unlink(name)

    async def reload(self) -> None:
        await self._enter("reload")
        self.systemd.reload()

    async def start_unit(self, name: str) -> Job:
        self._files.path_for(name)
        self._known.forget(name)
        await self._enter("start", name)
        return Job.finished(name, self.systemd.start(name))

    async def stop_unit(self, name: str, *, unloading: bool = False) -> Job:
        self._files.path_for(name)
        await self._enter("stop", name)
        try:
            job = Job.finished(name, self.systemd.stop(name))
        except UnitRefused as exc:
            if exc.error_name != NO_SUCH_UNIT:
                raise
            job = Job.finished(name, JOB_DONE)
        if unloading:
            self._known.departing(job)
        return job

    async def reset_failed(self, name: str) -> None:
        self._files.path_for(name)
        await self._enter("reset-failed", name)
        try:
            self.systemd.reset_failed(name)
        except UnitRefused as exc:
            if exc.error_name != NO_SUCH_UNIT:
                raise

    async def unit_states(self, names: Collection[str]) -> dict[str, UnitStatus]:
        await self._enter("unit_states")
        asked, known = self._known.answer(list(names))
        if asked:
            self.unit_state_calls.append(frozenset(asked))
        return {name: self.systemd.status(name) for name in asked} | known

    def subscribe(self) -> ChangeFeed:
        return self._hub.subscribe()

    # ---- test helpers

    def seed(self, name: str, text: str, *, active: str = "active", sub: str = "running") -> None:
        """A unit the agent wrote, linked and started before (without counting a start)."""
        path = self._files.write(name, text)
        self.systemd.links[name] = path
        unit = self.systemd._load(name)
        unit.active_state, unit.sub_state = active, sub
