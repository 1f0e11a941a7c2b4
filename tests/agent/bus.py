"""A private D-Bus daemon and a mock `org.freedesktop.systemd1` on it, for the adapter's tests.

`BusDaemon` runs `dbus-daemon --session` on a socket in a temporary directory (started and
stopped by the test, restartable on the same address). `MockSystemd` serves, on that bus, the
manager methods and signals the adapter uses, with systemd's signatures, over the fake
`FakeSystemd` model, so the mock and the fake behave alike. Like systemd it sends signals only
to a connection that called `Subscribe`, and it can answer `StartUnit` after the job's
`JobRemoved` (the race the adapter must handle) and hold `ListUnitsByNames` calls at a gate (to
count the calls in flight).

A missing dbus-daemon is an error, not a skip.
"""

import asyncio
import contextlib
import select
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Annotated, Any

from dbus_fast import DBusError
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusBool, DBusObjectPath, DBusSignature, DBusStr
from dbus_fast.constants import PropertyAccess
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property, dbus_signal

from agent.systemd.fake import FakeSystemd
from agent.systemd.port import UnitRefused

DBUS_DAEMON = shutil.which("dbus-daemon") or "/usr/bin/dbus-daemon"
MANAGER_PATH = "/org/freedesktop/systemd1"
UNIT_PREFIX = "/org/freedesktop/systemd1/unit/"

Strings = Annotated[list[str], DBusSignature("as")]
Changes = Annotated[list[list[str]], DBusSignature("a(sss)")]
UnitInfos = Annotated[list[list[Any]], DBusSignature("a(ssssssouso)")]
JobRemovedArgs = Annotated[tuple[int, str, str, str], DBusSignature("uoss")]
UnitArgs = Annotated[tuple[str, str], DBusSignature("so")]
LoadErrorValue = Annotated[list[str], DBusSignature("(ss)")]


def unit_path(name: str) -> str:
    """systemd's object path for a unit (`bus_label_escape`)."""
    out = []
    for index, byte in enumerate(name.encode()):
        char = chr(byte)
        if (char.isascii() and char.isalpha()) or (char.isdigit() and index > 0):
            out.append(char)
        else:
            out.append(f"_{byte:02x}")
    return UNIT_PREFIX + "".join(out)


class BusDaemon:
    """A private dbus-daemon listening on `address`; `start()`/`stop()` as often as needed."""

    def __init__(self) -> None:
        if not Path(DBUS_DAEMON).exists():
            raise RuntimeError(f"dbus-daemon not found at {DBUS_DAEMON}: the adapter tests need it")
        self.directory = Path(tempfile.mkdtemp(prefix="pyfleet-dbus-"))
        self.socket = self.directory / "bus"
        self.address = f"unix:path={self.socket}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        self.process = subprocess.Popen(
            [
                DBUS_DAEMON,
                "--session",
                "--nofork",
                "--nopidfile",
                "--print-address",
                f"--address={self.address}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready or not self.process.stdout.readline():  # it prints once it listens
            self.stop()
            raise RuntimeError(f"dbus-daemon did not start within {timeout}s")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
        self.socket.unlink(missing_ok=True)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


def _as_dbus_error(exc: UnitRefused) -> DBusError:
    return DBusError(exc.error_name, exc.message)


class MockUnit(ServiceInterface):
    """`org.freedesktop.systemd1.Unit` of one unit: its three states, with change signals."""

    def __init__(self, model: FakeSystemd, name: str) -> None:
        super().__init__("org.freedesktop.systemd1.Unit")
        self._model = model
        self.unit = name

    @dbus_property(access=PropertyAccess.READ)
    def ActiveState(self) -> DBusStr:
        return self._model.status(self.unit).active_state

    @dbus_property(access=PropertyAccess.READ)
    def SubState(self) -> DBusStr:
        return self._model.status(self.unit).sub_state

    @dbus_property(access=PropertyAccess.READ)
    def LoadState(self) -> DBusStr:
        return self._model.status(self.unit).load_state

    @dbus_property(access=PropertyAccess.READ)
    def LoadError(self) -> LoadErrorValue:
        unit = self._model.units.get(self.unit)
        return list(unit.load_error) if unit is not None else ["", ""]


class MockManager(ServiceInterface):
    """`org.freedesktop.systemd1.Manager`, the methods and signals the adapter uses."""

    def __init__(self, model: FakeSystemd, bus: MessageBus) -> None:
        super().__init__("org.freedesktop.systemd1.Manager")
        self.model = model
        self.bus = bus
        self.subscribed = 0
        self.job_removed_first = True  # send JobRemoved before the StartUnit/StopUnit reply
        self.held_jobs: list[tuple[int, str, str, str]] | None = None  # JobRemoved kept back
        self.gate: asyncio.Event | None = None  # when set, ListUnitsByNames waits for it
        self.listing = 0  # ListUnitsByNames calls in progress
        self.most_listing = 0
        self.calls: list[tuple[str, Any]] = []
        # where LinkUnitFiles makes real symlinks, as systemd does in /run/systemd/system (None:
        # it only reports them there)
        self.runtime_dir: Path | None = None
        self._jobs = 0
        self._units: dict[str, MockUnit] = {}
        model.add_listener(self._changed)

    # ---- signals

    @dbus_signal()
    def JobRemoved(self, job_id: int, job: str, unit: str, result: str) -> JobRemovedArgs:
        return job_id, job, unit, result

    @dbus_signal()
    def Reloading(self, active: bool) -> DBusBool:
        return active

    @dbus_signal()
    def UnitNew(self, unit: str, path: str) -> UnitArgs:
        return unit, path

    def _unit(self, name: str) -> MockUnit:
        if name not in self._units:
            self._units[name] = MockUnit(self.model, name)
            self.bus.export(unit_path(name), self._units[name])
        return self._units[name]

    def _changed(self, name: str | None) -> None:
        if not self.subscribed or name is None:
            return
        status = self.model.status(name)
        self._unit(name).emit_properties_changed(
            {"ActiveState": status.active_state, "SubState": status.sub_state}
        )

    # ---- methods

    @dbus_method()
    def Subscribe(self) -> None:
        self.calls.append(("Subscribe", None))
        self.subscribed += 1

    @dbus_method()
    def LinkUnitFiles(self, files: Strings, runtime: DBusBool, force: DBusBool) -> Changes:
        self.calls.append(("LinkUnitFiles", (files, runtime, force)))
        changes = []
        for file in files:
            try:
                self.model.link(Path(file))
            except UnitRefused as exc:
                raise _as_dbus_error(exc) from None
            if self.runtime_dir is None:
                changes.append(["symlink", f"/run/systemd/system/{Path(file).name}", file])
                continue
            symlink = self.runtime_dir / Path(file).name
            symlink.unlink(missing_ok=True)
            symlink.symlink_to(file)
            changes.append(["symlink", str(symlink), file])
        return changes

    @dbus_method()
    def DisableUnitFiles(self, files: Strings, runtime: DBusBool) -> Changes:
        self.calls.append(("DisableUnitFiles", (files, runtime)))
        for name in files:
            self.model.unlink(name)
        return [["unlink", f"/run/systemd/system/{name}", ""] for name in files]

    @dbus_method()
    def Reload(self) -> None:
        self.calls.append(("Reload", None))
        if self.subscribed:
            self.Reloading(True)
        self.model.reload()
        if self.subscribed:
            self.Reloading(False)

    def _job(self, method: str, name: str, mode: str) -> str:
        self.calls.append((method, (name, mode)))
        try:
            result = self.model.start(name) if method == "StartUnit" else self.model.stop(name)
        except UnitRefused as exc:
            raise _as_dbus_error(exc) from None
        self._jobs += 1
        job = f"{MANAGER_PATH}/job/{self._jobs}"
        if self.held_jobs is not None:
            self.held_jobs.append((self._jobs, job, name, result))
        elif self.subscribed and self.job_removed_first:
            self.JobRemoved(self._jobs, job, name, result)
        elif self.subscribed:
            asyncio.get_running_loop().call_soon(self.JobRemoved, self._jobs, job, name, result)
        return job

    def hold_jobs(self) -> None:
        """From now on, keep jobs pending (no `JobRemoved`) until `finish_jobs()`."""
        self.held_jobs = []

    def finish_jobs(self) -> None:
        """Send the `JobRemoved` of every job kept back, and stop keeping them."""
        held, self.held_jobs = self.held_jobs or [], None
        for job in held:
            self.JobRemoved(*job)

    @dbus_method()
    def StartUnit(self, name: DBusStr, mode: DBusStr) -> DBusObjectPath:
        return self._job("StartUnit", name, mode)

    @dbus_method()
    def StopUnit(self, name: DBusStr, mode: DBusStr) -> DBusObjectPath:
        return self._job("StopUnit", name, mode)

    @dbus_method()
    def ResetFailedUnit(self, name: DBusStr) -> None:
        self.calls.append(("ResetFailedUnit", name))
        try:
            self.model.reset_failed(name)
        except UnitRefused as exc:
            raise _as_dbus_error(exc) from None

    @dbus_method()
    async def ListUnitsByNames(self, names: Strings) -> UnitInfos:
        self.calls.append(("ListUnitsByNames", names))
        self.listing += 1
        self.most_listing = max(self.most_listing, self.listing)
        try:
            if self.gate is not None:
                await self.gate.wait()
        finally:
            self.listing -= 1
        infos = []
        for name in names:
            status = self.model.status(name)
            path = unit_path(name)
            if status.load_state != "not-found":
                self._unit(name)
            states = [status.load_state, status.active_state, status.sub_state]
            infos.append([name, "", *states, "", path, 0, "", "/"])
        return infos


class MockSystemd:
    """The mock service on its own connection to a `BusDaemon`."""

    def __init__(self, model: FakeSystemd | None = None) -> None:
        self.model = model if model is not None else FakeSystemd()
        self.bus: MessageBus | None = None
        self.manager: MockManager | None = None

    async def start(self, address: str) -> MockManager:
        bus = await MessageBus(bus_address=address).connect()
        self.bus = bus
        self.manager = MockManager(self.model, bus)
        bus.export(MANAGER_PATH, self.manager)
        await bus.request_name("org.freedesktop.systemd1")
        return self.manager

    async def stop(self) -> None:
        bus, self.bus = self.bus, None
        if self.manager is not None:
            self.model.remove_listener(self.manager._changed)
        if bus is not None:
            bus.disconnect()
            with contextlib.suppress(EOFError, OSError):  # the daemon may have gone first
                await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]
