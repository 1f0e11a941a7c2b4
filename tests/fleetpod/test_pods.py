"""Pod directories: states = directory x lock, every transition of the table, gc and rm."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Interface, IPv4Network
from pathlib import Path

import pytest
from pyroute2 import netns

from fleetd.core.pod_address import PodAddress, encode_pod_address
from fleetpod import pods as pods_module
from fleetpod import stage0
from fleetpod.errors import PodError, PodStateError
from fleetpod.ipam import AddressBook, NodeNetwork, PortBook
from fleetpod.pods import (
    DIR_OF,
    STATE_DIRS,
    STATE_OF,
    TRANSITIONS,
    GcAction,
    GcTask,
    Pod,
    PodInfo,
    PodState,
    PodStore,
    plan_gc,
    plan_remove,
    process_start_time,
)

S = PodState
IMAGE_ID = "sha512-" + "ef" * 64
MANIFEST = {
    "acKind": "PodManifest",
    "apps": [{"name": "app", "image": {"name": "example.com/app"}}],
}
NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> PodStore:
    return PodStore(tmp_path / "pods", proc=tmp_path / "proc")


@pytest.fixture
def held() -> Iterator[Callable[[Path], None]]:
    """`hold(path)`: another process (another open file description) takes the exclusive lock."""
    fds: list[int] = []

    def hold(path: Path) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        fds.append(fd)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    yield hold
    for fd in fds:
        os.close(fd)


@pytest.fixture
def pods_to_release() -> Iterator[list[Pod]]:
    handles: list[Pod] = []
    yield handles
    for pod in handles:
        pod.release()


def make(store: PodStore, handles: list[Pod], state: PodState, uuid: str | None = None) -> str:
    """A pod in `state` (one of those a live process or a crash can leave behind)."""
    if state is S.EMBRYO:
        pod_uuid = uuid or "00000000-0000-4000-8000-00000000e001"
        store.create(MANIFEST, IMAGE_ID, "app", "nspawn", uuid=pod_uuid).release()
        os.rename(store.pods_dir / "prepare" / pod_uuid, store.pods_dir / "embryo" / pod_uuid)
        return pod_uuid
    pod = store.create(MANIFEST, IMAGE_ID, "app", "nspawn", uuid=uuid)
    handles.append(pod)
    if state is S.PREPARING:
        return pod.uuid
    if state is S.ABORTED_PREPARE:
        pod.release()
    elif state in (S.PREPARED, S.GARBAGE):
        store.mark_prepared(pod)
        if state is S.GARBAGE:
            store._rename(pod.uuid, S.PREPARED, S.GARBAGE)
    elif state in (S.RUNNING, S.EXITED, S.EXITED_GARBAGE):
        store.start_running(pod)
        if state is not S.RUNNING:
            pod.release()
        if state is S.EXITED_GARBAGE:
            store._rename(pod.uuid, S.EXITED, S.EXITED_GARBAGE)
    return pod.uuid


def state_of(store: PodStore, uuid: str) -> PodState | None:
    try:
        return store.get(uuid).state
    except PodStateError:
        return None


def no_unmount(path: Path) -> None:
    raise AssertionError(f"unexpected unmount of {path}")


def task(action: GcAction, uuid: str, state: PodState) -> GcTask:
    return GcTask(action, uuid, state, "test")


# --- the tables ---------------------------------------------------------------------------


def test_every_directory_and_lock_combination_has_a_state() -> None:
    assert set(STATE_OF) == {(d, locked) for d in STATE_DIRS for locked in (False, True)}
    assert set(STATE_OF.values()) == set(PodState)
    assert all(DIR_OF[state] in STATE_DIRS for state in DIR_OF)
    assert set(DIR_OF) == set(PodState) - {S.DELETING}


def drive_create_crash(store: PodStore, handles: list[Pod], held: Callable[[Path], None]) -> str:
    real_rename = os.rename

    def crash(source: object, destination: object) -> None:
        raise OSError("crash before the rename")

    os.rename = crash  # type: ignore[assignment]
    try:
        with pytest.raises(OSError, match="crash"):
            store.create(
                MANIFEST, IMAGE_ID, "app", "nspawn", uuid="00000000-0000-4000-8000-0000000000c1"
            )
    finally:
        os.rename = real_rename
    return "00000000-0000-4000-8000-0000000000c1"


def drive_from(
    state: PodState, step: Callable[[PodStore, str, list[Pod]], object]
) -> Callable[..., str]:
    def drive(store: PodStore, handles: list[Pod], held: Callable[[Path], None]) -> str:
        uuid = make(store, handles, state)
        assert state_of(store, uuid) is state
        step(store, uuid, handles)
        return uuid

    return drive


def _gc(action: GcAction, state: PodState) -> Callable[[PodStore, str, list[Pod]], None]:
    def step(store: PodStore, uuid: str, handles: list[Pod]) -> None:
        report = store.apply([task(action, uuid, state)], now=NOW, unmount=no_unmount)
        assert report.skipped == ()

    return step


def _start_prepared(store: PodStore, uuid: str, handles: list[Pod]) -> None:
    handles.append(store.lock_prepared(uuid))
    store.start_running(handles[-1])


def _hold_lock(store: PodStore, uuid: str, held: Callable[[Path], None]) -> None:
    held(store.get(uuid).path)


DRIVERS: dict[tuple[PodState | None, PodState | None], Callable[..., str]] = {
    (None, S.EMBRYO): drive_create_crash,
    (S.EMBRYO, S.PREPARING): lambda store, handles, held: make(store, handles, S.PREPARING),
    (S.PREPARING, S.PREPARED): drive_from(S.PREPARING, lambda s, u, h: s.mark_prepared(h[-1])),
    (S.PREPARING, S.RUNNING): drive_from(S.PREPARING, lambda s, u, h: s.start_running(h[-1])),
    (S.PREPARED, S.RUNNING): drive_from(S.PREPARED, _start_prepared),
    (S.PREPARING, S.ABORTED_PREPARE): drive_from(S.PREPARING, lambda s, u, h: h[-1].release()),
    (S.RUNNING, S.EXITED): drive_from(S.RUNNING, lambda s, u, h: h[-1].release()),
    (S.EMBRYO, S.GARBAGE): drive_from(S.EMBRYO, _gc(GcAction.DISCARD_EMBRYO, S.EMBRYO)),
    (S.ABORTED_PREPARE, S.GARBAGE): drive_from(
        S.ABORTED_PREPARE, _gc(GcAction.DISCARD_ABORTED, S.ABORTED_PREPARE)
    ),
    (S.PREPARED, S.GARBAGE): drive_from(S.PREPARED, _gc(GcAction.EXPIRE_PREPARED, S.PREPARED)),
    (S.EXITED, S.EXITED_GARBAGE): drive_from(S.EXITED, _gc(GcAction.MARK_EXITED, S.EXITED)),
    (S.EXITED_GARBAGE, S.DELETING): lambda store, handles, held: _locked_garbage(
        store, handles, held, S.EXITED_GARBAGE
    ),
    (S.GARBAGE, S.DELETING): lambda store, handles, held: _locked_garbage(
        store, handles, held, S.GARBAGE
    ),
    (S.DELETING, None): drive_from(S.GARBAGE, _gc(GcAction.SWEEP, S.GARBAGE)),
}


def _locked_garbage(
    store: PodStore, handles: list[Pod], held: Callable[[Path], None], state: PodState
) -> str:
    uuid = make(store, handles, state)
    assert state_of(store, uuid) is state
    _hold_lock(store, uuid, held)
    return uuid


def test_every_transition_of_the_table_has_a_test() -> None:
    assert set(DRIVERS) == {(t.source, t.target) for t in TRANSITIONS}


@pytest.mark.parametrize("transition", TRANSITIONS, ids=lambda t: f"{t.source}->{t.target}")
def test_each_transition_happens_as_the_table_says(
    transition: pods_module.Transition,
    store: PodStore,
    pods_to_release: list[Pod],
    held: Callable[[Path], None],
) -> None:
    uuid = DRIVERS[(transition.source, transition.target)](store, pods_to_release, held)
    assert state_of(store, uuid) == transition.target


def test_a_rename_that_is_not_in_the_table_is_refused(
    store: PodStore, pods_to_release: list[Pod]
) -> None:
    uuid = make(store, pods_to_release, S.EXITED)
    with pytest.raises(PodStateError, match="no transition from exited to prepared"):
        store._rename(uuid, S.EXITED, S.PREPARED)
    assert state_of(store, uuid) is S.EXITED


# --- create, run, inspect -----------------------------------------------------------------


def test_a_new_pod_holds_its_files(store: PodStore, pods_to_release: list[Pod]) -> None:
    pod = store.create(MANIFEST, IMAGE_ID, "web", "fly")
    pods_to_release.append(pod)
    assert pod.path == store.pods_dir / "prepare" / pod.uuid
    assert sorted(os.listdir(pod.path)) == [
        "app",
        "image",
        "pod",
        "pod-created",
        "rootfs",
        "stage1",
    ]
    assert pod.read("app") == "web"
    assert pod.read("stage1") == "fly"
    assert pod.read("image") == IMAGE_ID
    assert pod.read("missing") is None


def test_the_running_lock_fd_is_inheritable(store: PodStore, pods_to_release: list[Pod]) -> None:
    pod = store.create(MANIFEST, IMAGE_ID, "app", "nspawn")
    pods_to_release.append(pod)
    assert pod.lock_fd is not None
    assert not os.get_inheritable(pod.lock_fd)
    fd = store.start_running(pod)
    assert fd == pod.lock_fd
    assert os.get_inheritable(fd)
    assert pod.path == store.pods_dir / "run" / pod.uuid


def test_start_running_needs_the_lock(store: PodStore, pods_to_release: list[Pod]) -> None:
    uuid = make(store, pods_to_release, S.PREPARED)
    with pytest.raises(PodStateError, match="not locked by this process"):
        store.start_running(Pod(uuid, store.pods_dir / "prepared" / uuid, None))


def test_a_prepared_pod_is_started_by_one_process_only(
    store: PodStore, pods_to_release: list[Pod], held: Callable[[Path], None]
) -> None:
    uuid = make(store, pods_to_release, S.PREPARED)
    held(store.get(uuid).path)
    with pytest.raises(PodStateError, match="being started by another process"):
        store.lock_prepared(uuid)
    running = make(store, pods_to_release, S.RUNNING)
    with pytest.raises(PodStateError, match="is running, not prepared"):
        store.lock_prepared(running)


def test_a_pod_that_moved_away_before_its_start_is_refused(
    store: PodStore, pods_to_release: list[Pod]
) -> None:
    uuid = make(store, pods_to_release, S.PREPARED)
    pod = store.lock_prepared(uuid)
    pods_to_release.append(pod)
    store._rename(uuid, S.PREPARED, S.GARBAGE)
    with pytest.raises(PodStateError, match="is no longer prepared"):
        store.start_running(pod)


def write_stat(proc: Path, pid: int, start: str, comm: str = "systemd-nspawn") -> None:
    (proc / str(pid)).mkdir(parents=True)
    fields = ["S", *["0"] * 18, start, *["0"] * 10]
    (proc / str(pid) / "stat").write_text(f"{pid} ({comm}) {' '.join(fields)}\n")


def test_process_start_time_reads_field_22(tmp_path: Path) -> None:
    write_stat(tmp_path, 42, "987654", comm="a) b (c")
    assert process_start_time(tmp_path, 42) == "987654"
    assert process_start_time(tmp_path, 43) is None


@pytest.mark.parametrize(("start", "state"), [("777", S.RUNNING), ("778", S.EXITED)])
def test_a_pod_whose_recorded_process_lives_is_running_without_the_lock(
    store: PodStore, pods_to_release: list[Pod], start: str, state: PodState
) -> None:
    uuid = make(store, pods_to_release, S.EXITED)
    pod = Pod(uuid, store.get(uuid).path, None)
    pod.write("pid", "4242")
    pod.write("pid-starttime", "777")
    write_stat(store.proc, 4242, start)
    assert store.get(uuid).state is state
    report = store.apply([task(GcAction.MARK_EXITED, uuid, S.EXITED)], now=NOW, unmount=no_unmount)
    assert [why for _, why in report.skipped] == (
        ["its process is still alive"] if state is S.RUNNING else []
    )


def test_pod_info_reads_the_pod_files(store: PodStore, pods_to_release: list[Pod]) -> None:
    uuid = make(store, pods_to_release, S.EXITED)
    pod = Pod(uuid, store.get(uuid).path, None)
    pod.write("pid", "99\n")
    pod.write("started", "2024-06-01T11:00:00+00:00")
    pod.write("exit", "3\n")
    pod.write("unit", "web.service")
    os.utime(pod.path / "pod-created", (1_700_000_000, 1_700_000_000))
    info = store.get(uuid)
    assert info == PodInfo(
        uuid=uuid,
        state=S.EXITED,
        app_name="app",
        image_id=IMAGE_ID,
        image_name="example.com/app",
        created=datetime.fromtimestamp(1_700_000_000, UTC),
        started=datetime(2024, 6, 1, 11, tzinfo=UTC),
        pid=99,
        exit_status=3,
        unit="web.service",
        stage1="nspawn",
        path=pod.path,
        marked=None,
    )


def test_pods_are_found_by_uuid_or_unique_prefix(
    store: PodStore, pods_to_release: list[Pod]
) -> None:
    first = make(store, pods_to_release, S.PREPARED, uuid="abcd1234-0000-4000-8000-000000000001")
    make(store, pods_to_release, S.PREPARED, uuid="abcd1234-0000-4000-8000-000000000002")
    assert store.get(first).uuid == first
    assert store.get("ABCD1234000040008000000000000001").uuid == first
    assert store.get("abcd1234-0000-4000-8000-000000000001").uuid == first
    with pytest.raises(PodError, match="ambiguous"):
        store.get("abcd")
    with pytest.raises(PodStateError, match="no pod matches 'ffff'"):
        store.get("ffff")
    with pytest.raises(PodError, match="no pod UUID given"):
        store.get("-")


def test_list_is_oldest_first_across_states(store: PodStore, pods_to_release: list[Pod]) -> None:
    assert store.list() == []
    uuids = [make(store, pods_to_release, state) for state in (S.RUNNING, S.PREPARED, S.EXITED)]
    for age, uuid in enumerate(uuids):
        created = store.get(uuid).path / "pod-created"
        os.utime(created, (1_000_000 - age, 1_000_000 - age))
    assert [p.uuid for p in store.list()] == list(reversed(uuids))
    assert [p.state for p in store.list()] == [S.EXITED, S.PREPARED, S.RUNNING]


def test_record_exit_picks_the_last_exited_pod_of_the_unit(
    store: PodStore, pods_to_release: list[Pod]
) -> None:
    old, new, done, other = (make(store, pods_to_release, S.EXITED) for _ in range(4))
    for uuid, started, unit in (
        (old, "2024-06-01T10:00:00+00:00", "web.service"),
        (new, "2024-06-01T11:00:00+00:00", "web.service"),
        (done, "2024-06-01T12:00:00+00:00", "web.service"),
        (other, "2024-06-01T13:00:00+00:00", "db.service"),
    ):
        pod = Pod(uuid, store.get(uuid).path, None)
        pod.write("started", started)
        pod.write("unit", unit)
    Pod(done, store.get(done).path, None).write("exit", "0")
    recorded = store.record_exit("web.service", 143)
    assert recorded is not None
    assert recorded.uuid == new
    assert [store.get(u).exit_status for u in (old, new, done, other)] == [None, 143, 0, None]
    assert store.record_exit("nothing.service", 1) is None


# --- gc planning (pure) -------------------------------------------------------------------


def info(state: PodState, created_ago: timedelta, marked_ago: timedelta | None = None) -> PodInfo:
    return PodInfo(
        uuid=f"uuid-{state}",
        state=state,
        app_name="app",
        image_id=IMAGE_ID,
        image_name="example.com/app",
        created=NOW - created_ago,
        started=None,
        pid=None,
        exit_status=None,
        unit=None,
        stage1="nspawn",
        path=Path("/nowhere"),
        marked=None if marked_ago is None else NOW - marked_ago,
    )


MIN = timedelta(minutes=1)
HOUR = timedelta(hours=1)
A = GcAction


@pytest.mark.parametrize(
    ("pod", "grace", "planned"),
    [
        (info(S.RUNNING, 48 * HOUR), MIN, []),
        (info(S.PREPARING, 48 * HOUR), MIN, []),
        (info(S.DELETING, 48 * HOUR), MIN, []),
        (info(S.EMBRYO, HOUR), MIN, []),
        (info(S.EMBRYO, 25 * HOUR), MIN, [(A.DISCARD_EMBRYO, S.EMBRYO), (A.SWEEP, S.GARBAGE)]),
        (
            info(S.ABORTED_PREPARE, MIN),
            MIN,
            [(A.DISCARD_ABORTED, S.ABORTED_PREPARE), (A.SWEEP, S.GARBAGE)],
        ),
        (info(S.PREPARED, 23 * HOUR), MIN, []),
        (info(S.PREPARED, 24 * HOUR), MIN, [(A.EXPIRE_PREPARED, S.PREPARED), (A.SWEEP, S.GARBAGE)]),
        (info(S.EXITED, MIN), 30 * MIN, [(A.MARK_EXITED, S.EXITED)]),
        (
            info(S.EXITED, MIN),
            timedelta(0),
            [(A.MARK_EXITED, S.EXITED), (A.SWEEP, S.EXITED_GARBAGE)],
        ),
        (info(S.EXITED_GARBAGE, HOUR, 29 * MIN), 30 * MIN, []),
        (info(S.EXITED_GARBAGE, HOUR, 30 * MIN), 30 * MIN, [(A.SWEEP, S.EXITED_GARBAGE)]),
        (info(S.EXITED_GARBAGE, HOUR), 30 * MIN, [(A.SWEEP, S.EXITED_GARBAGE)]),
        (info(S.EXITED_GARBAGE, 10 * MIN), 30 * MIN, []),
        (info(S.GARBAGE, MIN), 30 * MIN, [(A.SWEEP, S.GARBAGE)]),
    ],
    ids=lambda value: str(value) if not isinstance(value, PodInfo) else value.state.value,
)
def test_plan_gc(pod: PodInfo, grace: timedelta, planned: list[tuple[GcAction, PodState]]) -> None:
    tasks = plan_gc([pod], now=NOW, grace=grace, expire_prepared=24 * HOUR)
    assert [(t.action, t.state) for t in tasks] == planned
    assert all(t.uuid == pod.uuid and t.reason for t in tasks)


def test_plan_gc_reasons_say_why() -> None:
    tasks = plan_gc(
        [info(S.EXITED_GARBAGE, HOUR, 31 * MIN), info(S.PREPARED, 25 * HOUR)],
        now=NOW,
        grace=30 * MIN,
        expire_prepared=24 * HOUR,
    )
    assert [t.reason for t in tasks] == [
        "marked 0:31:00 ago (grace period 0:30:00)",
        "prepared 1 day, 1:00:00 ago (expire after 1 day, 0:00:00)",
        "prepared 1 day, 1:00:00 ago (expire after 1 day, 0:00:00); nothing to keep",
    ]


@pytest.mark.parametrize(
    ("state", "planned"),
    [
        (S.EXITED, [(A.MARK_EXITED, S.EXITED), (A.SWEEP, S.EXITED_GARBAGE)]),
        (S.ABORTED_PREPARE, [(A.DISCARD_ABORTED, S.ABORTED_PREPARE), (A.SWEEP, S.GARBAGE)]),
        (S.PREPARED, [(A.EXPIRE_PREPARED, S.PREPARED), (A.SWEEP, S.GARBAGE)]),
        (S.EXITED_GARBAGE, [(A.SWEEP, S.EXITED_GARBAGE)]),
        (S.GARBAGE, [(A.SWEEP, S.GARBAGE)]),
    ],
)
def test_plan_remove(state: PodState, planned: list[tuple[GcAction, PodState]]) -> None:
    assert [(t.action, t.state) for t in plan_remove(info(state, MIN))] == planned


@pytest.mark.parametrize("state", [S.EMBRYO, S.PREPARING, S.RUNNING, S.DELETING])
def test_rm_refuses_pods_in_use(state: PodState) -> None:
    with pytest.raises(PodStateError, match=f"is {state}; only a pod that is not running"):
        plan_remove(info(state, MIN))


# --- gc and rm executed -------------------------------------------------------------------


def test_gc_marks_then_sweeps_after_the_grace_period(
    store: PodStore, pods_to_release: list[Pod]
) -> None:
    exited = make(store, pods_to_release, S.EXITED)
    running = make(store, pods_to_release, S.RUNNING)
    aborted = make(store, pods_to_release, S.ABORTED_PREPARE)
    kwargs = {"grace": 30 * MIN, "expire_prepared": 24 * HOUR, "unmount": no_unmount}
    report = store.gc(now=NOW, **kwargs)  # type: ignore[arg-type]
    assert report.skipped == ()
    assert state_of(store, exited) is S.EXITED_GARBAGE
    assert store.get(exited).marked == NOW
    assert state_of(store, aborted) is None
    store.gc(now=NOW + 29 * MIN, **kwargs)  # type: ignore[arg-type]
    assert state_of(store, exited) is S.EXITED_GARBAGE
    store.gc(now=NOW + 30 * MIN, **kwargs)  # type: ignore[arg-type]
    assert state_of(store, exited) is None
    assert state_of(store, running) is S.RUNNING
    assert not (store.pods_dir / "exited-garbage" / exited).exists()


def test_gc_withdraws_the_address_a_pod_handed_over_for_its_unit(
    store: PodStore, pods_to_release: list[Pod], pod_address_dir: Path
) -> None:
    exited, newer_exited = (make(store, pods_to_release, S.EXITED) for _ in range(2))
    garbage = make(store, pods_to_release, S.GARBAGE)  # swept at once
    for uuid, unit in (
        (exited, "web.service"),
        (newer_exited, "db.service"),
        (garbage, "x.service"),
    ):
        Pod(uuid, store.get(uuid).path, None).write("unit", unit)
    pod_address_dir.mkdir()
    for unit, uuid in (
        ("web.service", exited),
        ("db.service", "a-newer-pod"),
        ("x.service", garbage),
    ):
        (pod_address_dir / unit).write_bytes(encode_pod_address(PodAddress("10.244.3.2", uuid)))
    kwargs = {"grace": 30 * MIN, "expire_prepared": 24 * HOUR, "unmount": no_unmount}
    assert store.gc(now=NOW, **kwargs).skipped == ()  # type: ignore[arg-type]
    assert state_of(store, exited) is S.EXITED_GARBAGE
    assert state_of(store, garbage) is None
    assert [path.name for path in pod_address_dir.iterdir()] == ["db.service"]


def test_a_busy_pod_is_skipped_and_the_others_go_on(
    store: PodStore, pods_to_release: list[Pod], held: Callable[[Path], None]
) -> None:
    busy = make(store, pods_to_release, S.GARBAGE)
    free = make(store, pods_to_release, S.EXITED)
    held(store.get(busy).path)
    tasks = [
        task(A.SWEEP, busy, S.GARBAGE),
        task(A.MARK_EXITED, free, S.EXITED),
        task(A.SWEEP, free, S.EXITED_GARBAGE),
        task(A.SWEEP, "no-such-pod", S.GARBAGE),
    ]
    report = store.apply(tasks, now=NOW, unmount=no_unmount)
    assert report.done == tuple(tasks[1:3])
    assert [(t.uuid, why) for t, why in report.skipped] == [
        (busy, "busy (locked by another process)"),
        ("no-such-pod", "gone (moved or deleted by another process)"),
    ]
    assert state_of(store, busy) is S.DELETING
    assert state_of(store, free) is None


def test_a_pod_whose_move_failed_is_not_swept(store: PodStore, pods_to_release: list[Pod]) -> None:
    uuid = make(store, pods_to_release, S.RUNNING)
    tasks = [task(A.MARK_EXITED, uuid, S.EXITED), task(A.SWEEP, uuid, S.EXITED_GARBAGE)]
    report = store.apply(tasks, now=NOW, unmount=no_unmount)
    assert [why for _, why in report.skipped] == [
        "busy (locked by another process)",
        "an earlier step for this pod was skipped",
    ]
    assert state_of(store, uuid) is S.RUNNING


@pytest.mark.parametrize("unmount_works", [True, False])
def test_a_mounted_rootfs_is_lazily_unmounted_before_deletion(
    store: PodStore,
    pods_to_release: list[Pod],
    monkeypatch: pytest.MonkeyPatch,
    unmount_works: bool,
) -> None:
    uuid = make(store, pods_to_release, S.GARBAGE)
    rootfs = store.get(uuid).path / "rootfs"
    mounted = {rootfs}
    real_ismount = os.path.ismount
    monkeypatch.setattr(os.path, "ismount", lambda p: Path(p) in mounted or real_ismount(p))
    unmounted: list[Path] = []

    def unmount(path: Path) -> None:
        unmounted.append(path)
        if not unmount_works:
            raise OSError("EBUSY")
        mounted.discard(path)

    report = store.apply([task(A.SWEEP, uuid, S.GARBAGE)], now=NOW, unmount=unmount)
    assert unmounted == [rootfs]
    if unmount_works:
        assert report.skipped == ()
        assert not rootfs.parent.exists()
    else:
        assert [why for _, why in report.skipped] == [f"{rootfs} is still mounted"]
        assert rootfs.exists()


def test_sweep_deletes_read_only_directories(store: PodStore, pods_to_release: list[Pod]) -> None:
    uuid = make(store, pods_to_release, S.GARBAGE)
    locked_dir = store.get(uuid).path / "rootfs" / "usr"
    locked_dir.mkdir()
    (locked_dir / "file").write_text("x")
    locked_dir.chmod(0o500)
    report = store.apply([task(A.SWEEP, uuid, S.GARBAGE)], now=NOW, unmount=no_unmount)
    assert report.skipped == ()
    assert not locked_dir.exists()


def test_rm_removes_a_pod_that_is_not_running(store: PodStore, pods_to_release: list[Pod]) -> None:
    exited = make(store, pods_to_release, S.EXITED)
    prepared = make(store, pods_to_release, S.PREPARED)
    running = make(store, pods_to_release, S.RUNNING)
    assert store.remove(exited[:8], now=NOW, unmount=no_unmount).uuid == exited
    assert store.remove(prepared, now=NOW, unmount=no_unmount).uuid == prepared
    with pytest.raises(PodStateError, match="is running"):
        store.remove(running, now=NOW, unmount=no_unmount)
    assert [p.uuid for p in store.list()] == [running]


def test_rm_reports_a_pod_it_could_not_delete(
    store: PodStore, pods_to_release: list[Pod], held: Callable[[Path], None]
) -> None:
    uuid = make(store, pods_to_release, S.PREPARED)
    held(store.get(uuid).path)
    with pytest.raises(PodStateError, match="not removed: busy"):
        store.remove(uuid, now=NOW, unmount=no_unmount)


def test_sweep_removes_the_pods_network_namespace_and_frees_its_address(
    store: PodStore, pods_to_release: list[Pod]
) -> None:
    uuid = make(store, pods_to_release, S.GARBAGE)
    other = make(store, pods_to_release, S.RUNNING)
    node = NodeNetwork(IPv4Network("10.244.0.0/16"), IPv4Interface("10.244.1.1/24"), 1450)
    book = AddressBook(store.pods_dir.parent)
    address = book.allocate(node, uuid)
    book.allocate(node, other)
    name = f"pyf-sweep-{uuid[:8]}"
    netns.create(name)
    try:
        store.get(uuid).path.joinpath("netns").write_text(f"/run/netns/{name}\n")
        report = store.apply([task(A.SWEEP, uuid, S.GARBAGE)], now=NOW, unmount=stage0.lazy_unmount)
        assert report.skipped == ()
        assert name not in netns.listnetns()
        assert book.address_of(uuid) is None
        assert book.address_of(other) is not None
        assert book.allocate(node, "next") == address
    finally:
        if name in netns.listnetns():
            netns.remove(name)


def test_sweep_frees_a_pods_published_ports_and_deletes_their_rules(
    store: PodStore, pods_to_release: list[Pod], monkeypatch: pytest.MonkeyPatch
) -> None:
    import fleetpod.network

    uuid = make(store, pods_to_release, S.GARBAGE)
    ports = PortBook(store.pods_dir.parent)
    ports.claim(uuid, "tcp", 8080)
    unpublished: list[str] = []
    monkeypatch.setattr(fleetpod.network, "unpublish_ports", unpublished.append)
    report = store.apply([task(A.SWEEP, uuid, S.GARBAGE)], now=NOW, unmount=no_unmount)
    assert report.skipped == ()
    assert unpublished == [uuid]
    ports.claim("another-pod", "tcp", 8080)  # free again
