"""Pod directories and their lifecycle: rkt's states = directory x lock.

Role: the pod store. A pod is `<pods_dir>/<state dir>/<uuid>/`; it changes state only by
`os.rename` between state directories (atomic; a loser of a race sees ENOENT, which is normal)
or by its exclusive flock being taken or released. `plan_gc`/`plan_remove` decide what to do
(pure, `now` passed in); `PodStore.apply` does it.

Invariants:
* `TRANSITIONS` is the whole state machine; every rename goes through `_rename`, which refuses
  a pair that is not a rename row of the table.
* `STATE_OF` maps (directory, lock held) to the reported state: `prepare/` locked is
  `preparing`, unlocked `aborted-prepare`; `run/` locked is `running`, unlocked `exited` (unless
  the recorded pid is still the same live process, in case stage1 dropped the lock fd); a locked
  `exited-garbage/` or `garbage/` pod is being deleted.
* Nothing is deleted or moved to garbage while someone holds its lock; a pod whose rootfs is
  still a mount point after a lazy unmount is skipped, never recursed into.
* A pod that gc marks or sweeps withdraws the address it handed to fleetd for its unit
  (`fleetpod.unit_address`), unless a newer pod of the unit replaced it.
* Sweeping is best effort per pod: a busy or faulty pod is reported and the others go on
  (rkt issue 3181), unlike the stop-at-first-failure executors elsewhere.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import uuid as uuidlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from fleetd.runtime.files import write_atomically
from fleetpod.errors import PodError, PodStateError
from fleetpod.ipam import AddressBook, PortBook
from fleetpod.render import force_rmtree
from fleetpod.unit_address import withdraw_unit_address


class PodState(StrEnum):
    EMBRYO = "embryo"
    PREPARING = "preparing"
    ABORTED_PREPARE = "aborted-prepare"
    PREPARED = "prepared"
    RUNNING = "running"
    EXITED = "exited"
    EXITED_GARBAGE = "exited-garbage"
    DELETING = "deleting"
    GARBAGE = "garbage"


S = PodState
STATE_DIRS = ("embryo", "prepare", "prepared", "run", "exited-garbage", "garbage")
STATE_OF: Mapping[tuple[str, bool], PodState] = {
    ("embryo", False): S.EMBRYO,
    ("embryo", True): S.EMBRYO,
    ("prepare", True): S.PREPARING,
    ("prepare", False): S.ABORTED_PREPARE,
    ("prepared", False): S.PREPARED,
    ("prepared", True): S.PREPARED,
    ("run", True): S.RUNNING,
    ("run", False): S.EXITED,
    ("exited-garbage", False): S.EXITED_GARBAGE,
    ("exited-garbage", True): S.DELETING,
    ("garbage", False): S.GARBAGE,
    ("garbage", True): S.DELETING,
}
DIR_OF: Mapping[PodState, str] = {
    state: directory for (directory, _), state in STATE_OF.items() if state is not S.DELETING
}


class Change(StrEnum):
    MKDIR = "mkdir"
    RENAME = "rename"
    LOCK = "lock taken"
    UNLOCK = "lock released"
    DELETE = "delete"


@dataclass(frozen=True)
class Transition:
    source: PodState | None
    target: PodState | None
    change: Change
    by: str


TRANSITIONS: tuple[Transition, ...] = (
    Transition(None, S.EMBRYO, Change.MKDIR, "create"),
    Transition(S.EMBRYO, S.PREPARING, Change.RENAME, "create (locked first)"),
    Transition(S.PREPARING, S.PREPARED, Change.RENAME, "mark_prepared (then unlocks)"),
    Transition(S.PREPARING, S.RUNNING, Change.RENAME, "start_running (run: keeps the lock)"),
    Transition(S.PREPARED, S.RUNNING, Change.RENAME, "lock_prepared + start_running"),
    Transition(S.PREPARING, S.ABORTED_PREPARE, Change.UNLOCK, "the preparing process died"),
    Transition(S.RUNNING, S.EXITED, Change.UNLOCK, "the container exited"),
    Transition(S.EMBRYO, S.GARBAGE, Change.RENAME, "gc: embryo older than expire-prepared"),
    Transition(S.ABORTED_PREPARE, S.GARBAGE, Change.RENAME, "gc / rm"),
    Transition(S.PREPARED, S.GARBAGE, Change.RENAME, "gc: expired / rm"),
    Transition(S.EXITED, S.EXITED_GARBAGE, Change.RENAME, "gc mark / rm"),
    Transition(S.EXITED_GARBAGE, S.DELETING, Change.LOCK, "sweep"),
    Transition(S.GARBAGE, S.DELETING, Change.LOCK, "sweep"),
    Transition(S.DELETING, None, Change.DELETE, "sweep"),
)
_RENAMES = frozenset((t.source, t.target) for t in TRANSITIONS if t.change is Change.RENAME)


@dataclass(frozen=True)
class PodInfo:
    """One pod as seen at one instant (instantly stale: pods progress on their own)."""

    uuid: str
    state: PodState
    app_name: str | None
    image_id: str | None
    image_name: str | None
    created: datetime
    started: datetime | None
    pid: int | None
    exit_status: int | None
    unit: str | None
    stage1: str | None
    path: Path
    marked: datetime | None = None
    address: str | None = None  # on the cluster network (`fleetpod.network`), with its length


@dataclass
class Pod:
    """A pod this process works on, with its exclusive lock fd while it holds one."""

    uuid: str
    path: Path
    lock_fd: int | None

    def write(self, name: str, text: str) -> None:
        """Replace `<pod>/<name>` atomically."""
        write_atomically(self.path / name, text.encode())

    def read(self, name: str) -> str | None:
        return _read(self.path / name)

    def release(self) -> None:
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (FileNotFoundError, NotADirectoryError):
        return None


def _open_dir(path: Path) -> int:
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def _try_lock(fd: int, operation: int) -> bool:
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[int | None]:
    """The pod dir's exclusive lock for the block (None: someone holds it)."""
    fd = _open_dir(path)
    try:
        yield fd if _try_lock(fd, fcntl.LOCK_EX) else None
    finally:
        os.close(fd)


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        return None


def _int(text: str | None) -> int | None:
    try:
        return int(text.strip()) if text else None
    except ValueError:
        return None


def process_start_time(proc: Path, pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks), None if no such process."""
    text = _read(proc / str(pid) / "stat")
    if text is None:
        return None
    fields = text.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


class GcAction(StrEnum):
    DISCARD_EMBRYO = "discard-embryo"
    DISCARD_ABORTED = "discard-aborted-prepare"
    EXPIRE_PREPARED = "expire-prepared"
    MARK_EXITED = "mark-exited"
    SWEEP = "sweep"


_GC_MOVES: Mapping[GcAction, tuple[PodState, PodState]] = {
    GcAction.DISCARD_EMBRYO: (S.EMBRYO, S.GARBAGE),
    GcAction.DISCARD_ABORTED: (S.ABORTED_PREPARE, S.GARBAGE),
    GcAction.EXPIRE_PREPARED: (S.PREPARED, S.GARBAGE),
    GcAction.MARK_EXITED: (S.EXITED, S.EXITED_GARBAGE),
}


@dataclass(frozen=True)
class GcTask:
    """One step of gc or rm: a move to a garbage directory, or the deletion of a garbage pod."""

    action: GcAction
    uuid: str
    state: PodState  # where the pod is when the task runs
    reason: str


@dataclass(frozen=True)
class GcReport:
    done: tuple[GcTask, ...]
    skipped: tuple[tuple[GcTask, str], ...]


def _age(delta: timedelta) -> str:
    return str(timedelta(seconds=int(delta.total_seconds())))


def _move_then_sweep(pod: PodInfo, action: GcAction, reason: str) -> list[GcTask]:
    garbage = _GC_MOVES[action][1]
    return [
        GcTask(action, pod.uuid, pod.state, reason),
        GcTask(GcAction.SWEEP, pod.uuid, garbage, f"{reason}; nothing to keep"),
    ]


def plan_gc(
    pods: Sequence[PodInfo], *, now: datetime, grace: timedelta, expire_prepared: timedelta
) -> list[GcTask]:
    """rkt's mark and sweep for one snapshot of the pods; `grace` <= 0 sweeps at once."""
    tasks: list[GcTask] = []
    for pod in pods:
        age = now - pod.created
        if pod.state is S.EMBRYO and age >= expire_prepared:
            tasks += _move_then_sweep(pod, GcAction.DISCARD_EMBRYO, f"embryo for {_age(age)}")
        elif pod.state is S.ABORTED_PREPARE:
            tasks += _move_then_sweep(pod, GcAction.DISCARD_ABORTED, "prepare was aborted")
        elif pod.state is S.PREPARED and age >= expire_prepared:
            reason = f"prepared {_age(age)} ago (expire after {_age(expire_prepared)})"
            tasks += _move_then_sweep(pod, GcAction.EXPIRE_PREPARED, reason)
        elif pod.state is S.EXITED:
            tasks.append(GcTask(GcAction.MARK_EXITED, pod.uuid, pod.state, "exited"))
            if grace <= timedelta(0):
                tasks.append(GcTask(GcAction.SWEEP, pod.uuid, S.EXITED_GARBAGE, "no grace period"))
        elif pod.state is S.EXITED_GARBAGE:
            waited = now - (pod.marked or pod.created)
            if waited >= grace:
                reason = f"marked {_age(waited)} ago (grace period {_age(grace)})"
                tasks.append(GcTask(GcAction.SWEEP, pod.uuid, pod.state, reason))
        elif pod.state is S.GARBAGE:
            tasks.append(GcTask(GcAction.SWEEP, pod.uuid, pod.state, "garbage"))
    return tasks


def plan_remove(pod: PodInfo) -> list[GcTask]:
    """`rm`: delete now a pod that is not running, preparing, new or being deleted."""
    reason = "removed by rm"
    if pod.state is S.EXITED:
        return _move_then_sweep(pod, GcAction.MARK_EXITED, reason)
    if pod.state is S.ABORTED_PREPARE:
        return _move_then_sweep(pod, GcAction.DISCARD_ABORTED, reason)
    if pod.state is S.PREPARED:
        return _move_then_sweep(pod, GcAction.EXPIRE_PREPARED, reason)
    if pod.state in (S.EXITED_GARBAGE, S.GARBAGE):
        return [GcTask(GcAction.SWEEP, pod.uuid, pod.state, reason)]
    raise PodStateError(f"pod {pod.uuid} is {pod.state}; only a pod that is not running is removed")


class PodStore:
    """The pods directory: create, start, inspect, collect."""

    def __init__(self, pods_dir: Path, *, proc: Path = Path("/proc")) -> None:
        self.pods_dir = pods_dir
        self.proc = proc

    def _dir(self, state: PodState, uuid: str) -> Path:
        return self.pods_dir / DIR_OF[state] / uuid

    def _rename(self, uuid: str, source: PodState, target: PodState) -> Path:
        if (source, target) not in _RENAMES:
            raise PodStateError(f"pod {uuid}: no transition from {source} to {target}")
        destination = self._dir(target, uuid)
        try:
            os.rename(self._dir(source, uuid), destination)
        except FileNotFoundError:
            raise PodStateError(f"pod {uuid} is no longer {source}") from None
        return destination

    def create(
        self,
        manifest: Mapping[str, Any],
        image_id: str,
        app_name: str,
        stage1: str,
        *,
        uuid: str | None = None,
    ) -> Pod:
        """A new pod in `prepare/`, exclusively locked by the returned handle (`preparing`)."""
        for directory in STATE_DIRS:
            (self.pods_dir / directory).mkdir(mode=0o750, parents=True, exist_ok=True)
        pod_uuid = uuid or str(uuidlib.uuid4())
        path = self._dir(S.EMBRYO, pod_uuid)
        path.mkdir(mode=0o750)
        (path / "pod-created").touch()
        pod = Pod(pod_uuid, path, _open_dir(path))
        try:
            assert pod.lock_fd is not None
            fcntl.flock(pod.lock_fd, fcntl.LOCK_EX)
            pod.write("pod", json.dumps(manifest, indent=2) + "\n")
            pod.write("image", image_id)
            pod.write("app", app_name)
            pod.write("stage1", stage1)
            (path / "rootfs").mkdir()
            pod.path = self._rename(pod_uuid, S.EMBRYO, S.PREPARING)
        except BaseException:
            pod.release()
            raise
        return pod

    def mark_prepared(self, pod: Pod) -> None:
        """`prepare` is done: `prepared/`, lock released."""
        pod.path = self._rename(pod.uuid, S.PREPARING, S.PREPARED)
        pod.release()

    def lock_prepared(self, uuid_or_prefix: str) -> Pod:
        """Take a prepared pod for `run-prepared` (refused if another process has it)."""
        info = self.get(uuid_or_prefix)
        if info.state is not S.PREPARED:
            raise PodStateError(f"pod {info.uuid} is {info.state}, not prepared")
        try:
            fd = _open_dir(info.path)
        except FileNotFoundError:
            raise PodStateError(f"pod {info.uuid} is no longer prepared") from None
        if not _try_lock(fd, fcntl.LOCK_EX):
            os.close(fd)
            raise PodStateError(f"pod {info.uuid} is being started by another process")
        return Pod(info.uuid, info.path, fd)

    def start_running(self, pod: Pod) -> int:
        """Into `run/` keeping the lock; the lock fd is made inheritable and returned."""
        if pod.lock_fd is None:
            raise PodStateError(f"pod {pod.uuid} is not locked by this process")
        source = S.PREPARED if pod.path.parent.name == DIR_OF[S.PREPARED] else S.PREPARING
        pod.path = self._rename(pod.uuid, source, S.RUNNING)
        os.set_inheritable(pod.lock_fd, True)
        return pod.lock_fd

    def _locked(self, path: Path) -> bool:
        fd = _open_dir(path)
        try:
            if _try_lock(fd, fcntl.LOCK_SH):
                fcntl.flock(fd, fcntl.LOCK_UN)
                return False
            return True
        finally:
            os.close(fd)

    def _alive(self, path: Path) -> bool:
        """The recorded pid is still the process that wrote it (same start time)."""
        pid = _int(_read(path / "pid"))
        recorded = _read(path / "pid-starttime")
        if pid is None or not recorded:
            return False
        return process_start_time(self.proc, pid) == recorded.strip()

    def _info(self, directory: str, uuid: str) -> PodInfo | None:
        path = self.pods_dir / directory / uuid
        try:
            state = STATE_OF[(directory, self._locked(path))]
            created = datetime.fromtimestamp((path / "pod-created").stat().st_mtime, UTC)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if state is S.EXITED and self._alive(path):
            state = S.RUNNING
        manifest: dict[str, Any] = {}
        with contextlib.suppress(json.JSONDecodeError, TypeError):
            manifest = json.loads(_read(path / "pod") or "{}")
        apps = manifest.get("apps") or [{}]
        return PodInfo(
            uuid=uuid,
            state=state,
            app_name=_read(path / "app"),
            image_id=_read(path / "image"),
            image_name=apps[0].get("image", {}).get("name"),
            created=created,
            started=_time(_read(path / "started")),
            pid=_int(_read(path / "pid")),
            exit_status=_int(_read(path / "exit")),
            unit=_read(path / "unit"),
            stage1=_read(path / "stage1"),
            path=path,
            marked=_time(_read(path / "marked")),
            address=(_read(path / "net-address") or "").strip() or None,
        )

    def list(self) -> list[PodInfo]:
        """Every pod, oldest first (a pod moving while listed appears once or not at all)."""
        found: dict[str, PodInfo] = {}
        for directory in STATE_DIRS:
            with contextlib.suppress(FileNotFoundError):
                for uuid in sorted(os.listdir(self.pods_dir / directory)):
                    info = self._info(directory, uuid)
                    if info is not None:
                        found[uuid] = info
        return sorted(found.values(), key=lambda info: (info.created, info.uuid))

    def get(self, uuid_or_prefix: str) -> PodInfo:
        """The pod whose UUID is or starts with the argument (dashes optional)."""
        wanted = uuid_or_prefix.replace("-", "").lower()
        if not wanted:
            raise PodError("no pod UUID given")
        matches = [p for p in self.list() if p.uuid.replace("-", "").startswith(wanted)]
        if not matches:
            raise PodStateError(f"no pod matches {uuid_or_prefix!r}")
        if len(matches) > 1:
            raise PodError(f"pod UUID prefix {uuid_or_prefix!r} is ambiguous")
        return matches[0]

    def record_exit(self, unit: str, status: int) -> PodInfo | None:
        """Record `status` on the last exited pod started by `unit` that has none yet."""
        candidates = [
            pod
            for pod in self.list()
            if pod.unit == unit
            and pod.exit_status is None
            and pod.state in (S.EXITED, S.EXITED_GARBAGE)
        ]
        if not candidates:
            return None
        latest = max(candidates, key=lambda p: p.started or p.created)
        Pod(latest.uuid, latest.path, None).write("exit", f"{status}\n")
        return latest

    def gc(
        self,
        *,
        grace: timedelta,
        expire_prepared: timedelta,
        now: datetime,
        unmount: Callable[[Path], None],
    ) -> GcReport:
        tasks = plan_gc(self.list(), now=now, grace=grace, expire_prepared=expire_prepared)
        return self.apply(tasks, now=now, unmount=unmount)

    def remove(
        self, uuid_or_prefix: str, *, now: datetime, unmount: Callable[[Path], None]
    ) -> PodInfo:
        """`rm`: delete one pod now; `PodStateError` when it is running or cannot be deleted."""
        pod = self.get(uuid_or_prefix)
        report = self.apply(plan_remove(pod), now=now, unmount=unmount)
        if report.skipped:
            _, why = report.skipped[0]
            raise PodStateError(f"pod {pod.uuid} not removed: {why}")
        return pod

    def apply(
        self, tasks: Sequence[GcTask], *, now: datetime, unmount: Callable[[Path], None]
    ) -> GcReport:
        """Perform planned gc tasks; a task that cannot run is skipped with the reason."""
        done: list[GcTask] = []
        skipped: list[tuple[GcTask, str]] = []
        failed: set[str] = set()
        for task in tasks:
            if task.uuid in failed:
                skipped.append((task, "an earlier step for this pod was skipped"))
                continue
            why = self._perform(task, now=now, unmount=unmount)
            if why is None:
                done.append(task)
            else:
                failed.add(task.uuid)
                skipped.append((task, why))
        return GcReport(tuple(done), tuple(skipped))

    def _perform(
        self, task: GcTask, *, now: datetime, unmount: Callable[[Path], None]
    ) -> str | None:
        path = self._dir(task.state, task.uuid)
        try:
            with _exclusive(path) as fd:
                if fd is None:
                    return "busy (locked by another process)"
                unit = (_read(path / "unit") or "").strip()
                if task.action is GcAction.SWEEP:
                    why = self._sweep(path, unmount)
                    if why is None:
                        self._release_network(task.uuid)
                        if unit:
                            withdraw_unit_address(unit, task.uuid)
                    return why
                source, target = _GC_MOVES[task.action]
                if source is S.EXITED and self._alive(path):
                    return "its process is still alive"
                moved = self._rename(task.uuid, source, target)
                if task.action is GcAction.MARK_EXITED:
                    Pod(task.uuid, moved, None).write("marked", now.isoformat())
                if unit:
                    withdraw_unit_address(unit, task.uuid)
                return None
        except (FileNotFoundError, PodStateError):
            return "gone (moved or deleted by another process)"

    @staticmethod
    def _sweep(path: Path, unmount: Callable[[Path], None]) -> str | None:
        rootfs = path / "rootfs"
        if os.path.ismount(rootfs):
            with contextlib.suppress(OSError):
                unmount(rootfs)
            if os.path.ismount(rootfs):
                return f"{rootfs} is still mounted"
        netns = (_read(path / "netns") or "").strip()
        if netns and os.path.ismount(netns):  # the pod's network namespace (fleetpod.network)
            with contextlib.suppress(OSError):
                unmount(Path(netns))
            if os.path.ismount(netns):
                return f"{netns} is still mounted"
        with contextlib.suppress(FileNotFoundError):
            if netns:
                os.unlink(netns)
        try:
            force_rmtree(path)
        except OSError as error:
            return f"cannot delete: {error}"
        return None

    def _release_network(self, uuid: str) -> None:
        """Free a swept pod's address (its namespace went with `_sweep`; the kernel deletes
        its veth pair with the namespace)."""
        AddressBook(self.pods_dir.parent).release(uuid)
        if PortBook(self.pods_dir.parent).release(uuid):  # it published ports: their rules
            from fleetpod.network import unpublish_ports  # noqa: PLC0415 (pyroute2 is slow)

            unpublish_ports(uuid)
