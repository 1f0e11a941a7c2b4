"""Stage0's executor with a recording Host: rootfs, limits, logs, the exec of stage1 or fly."""

from __future__ import annotations

import os
import socket
import stat
import struct
from collections.abc import Mapping, Sequence
from dataclasses import replace
from ipaddress import IPv4Interface
from pathlib import Path
from typing import Any, NoReturn

import pytest

from fleetd.core.container import PortMapping
from fleetd.core.pod_address import PodAddress, decode_pod_address, encode_pod_address
from fleetpod import stage0, stage1
from fleetpod.config import Insecure, PodSettings
from fleetpod.errors import PodError, StoreError
from fleetpod.pod_manifest import RunOptions, run_options
from fleetpod.pods import PodState, PodStore
from fleetpod.store import ImageStore

IMAGE_NAME = "example.com/app"


class Executed(Exception):
    """What the fake exec was asked to run."""

    def __init__(self, argv: list[str], env: Mapping[str, str], states: dict[str, PodState]):
        super().__init__(argv[0])
        self.argv = argv
        self.env = dict(env)
        self.states = states


class FakeHost(stage0.Host):
    """Records the system calls; exec raises `Executed` with the pod states at that moment."""

    def __init__(
        self,
        tmp_path: Path,
        pods_dir: Path,
        *,
        namespace: bool = True,
        overlay: bool = True,
        cgroup: str = "0::/user.slice/user-0.slice/session-1.scope\n",
        command_status: int = 0,
        tty: bool = False,
    ) -> None:
        self.tty = tty
        self.journal_dir = tmp_path / "no-journal"
        self.proc = tmp_path / "proc"  # this process, started at tick 12345
        (self.proc / str(os.getpid())).mkdir(parents=True, exist_ok=True)
        fields = " ".join(["S", *["0"] * 18, "12345", "0"])
        (self.proc / str(os.getpid()) / "stat").write_text(f"{os.getpid()} (pytest) {fields}\n")
        self.pods_dir = pods_dir
        self.namespace = namespace
        self.overlay = overlay
        self.cgroup = cgroup
        self.command_status = command_status
        self.network: tuple[IPv4Interface, Path] | None = None  # what connect_network gives
        self.connected: list[str] = []
        self.published: tuple[PortMapping, ...] = ()
        self.calls: list[tuple[Any, ...]] = []
        self.journal: list[bytes] = []

    def connect_network(
        self, uuid: str, data_dir: Path, ports: Sequence[PortMapping] = ()
    ) -> tuple[IPv4Interface, Path] | None:
        self.connected.append(uuid)
        self.published = tuple(ports)
        return self.network

    def enter_private_mount_namespace(self) -> bool:
        self.calls.append(("unshare",))
        return self.namespace

    def mount(
        self, source: str | None, target: str, fstype: str | None, flags: int, data: str | None
    ) -> None:
        self.calls.append(("mount", source, target, fstype, flags, data))
        if fstype == "overlay" and not self.overlay:
            raise OSError(22, "overlay refused")

    def read_cgroup(self) -> str:
        return self.cgroup

    def run_command(self, argv: list[str]) -> int:
        self.calls.append(("run", *argv))
        return self.command_status

    def send_journal(self, data: bytes) -> None:
        self.journal.append(data)

    def connect_output_to_journal(self, identifier: str, fds: Sequence[int] = (1, 2)) -> bool:
        self.calls.append(("journal", identifier))
        return False

    def stdout_is_tty(self) -> bool:
        return self.tty

    def chroot(self, path: str) -> None:
        self.calls.append(("chroot", path))

    def chdir(self, path: str) -> None:
        self.calls.append(("chdir", path))

    def set_ids(self, uid: int, gid: int) -> None:
        self.calls.append(("set_ids", uid, gid))

    def execvpe(self, file: str, argv: list[str], env: Mapping[str, str]) -> NoReturn:
        assert file == argv[0]
        states = {pod.uuid: pod.state for pod in PodStore(self.pods_dir).list()}
        raise Executed(argv, env, states)


@pytest.fixture
def settings(pod_settings: PodSettings) -> PodSettings:
    return replace(pod_settings, insecure=frozenset({Insecure.IMAGE}))


@pytest.fixture
def host(tmp_path: Path, settings: PodSettings) -> FakeHost:
    return FakeHost(tmp_path, settings.paths.pods_dir)


def run_until_exec(
    settings: PodSettings, image: Path | str, options: RunOptions, host: FakeHost
) -> Executed:
    with pytest.raises(Executed) as executed:
        stage0.run(settings, str(image), options, warn=lambda _: None, host=host)
    return executed.value


def only_pod(settings: PodSettings) -> Any:
    (pod,) = PodStore(settings.paths.pods_dir).list()
    return pod


def test_run_becomes_nspawn_in_run_holding_the_lock(
    settings: PodSettings, host: FakeHost, image_file: Path
) -> None:
    executed = run_until_exec(settings, image_file, run_options(args=["--loud"]), host)
    pod = only_pod(settings)
    assert executed.states == {pod.uuid: PodState.RUNNING}
    assert pod.state is PodState.EXITED  # the fake exec failed: the lock went with it
    assert executed.argv[:3] == ["systemd-nspawn", "--quiet", "--register=no"]
    assert "--keep-unit" not in executed.argv
    assert f"--directory={pod.path}/rootfs" in executed.argv
    assert "--console=pipe" in executed.argv
    assert (pod.path / "rootfs" / "usr").is_dir()  # nspawn wants /usr; the image has none
    assert executed.argv[-3:] == ["--", "/bin/hello", "--loud"]
    assert {k: executed.env[k] for k in stage1.NSPAWN_ENV} == stage1.NSPAWN_ENV
    assert executed.env[stage0.LOCK_FD_ENV].isdigit()
    tree = ImageStore(settings.paths.images_dir).render(pod.image_id)
    preparing = pod.path.parent.parent / "prepare" / pod.uuid  # mounted before the move to run/
    upper, work = preparing / "overlay" / "upper", preparing / "overlay" / "work"
    assert host.calls[:2] == [
        ("unshare",),
        (
            "mount",
            "overlay",
            f"{preparing}/rootfs",
            "overlay",
            0,
            f"lowerdir={tree},upperdir={upper},workdir={work}",
        ),
    ]
    assert host.calls[-1] == ("journal", "app")
    assert (pod.path / "rootfs-kind").read_text() == "overlay"
    assert pod.pid == os.getpid()
    assert pod.started is not None
    assert pod.unit is None
    assert (pod.path / "pid-starttime").read_text() == "12345"
    (entry,) = host.journal
    assert (
        entry
        == (
            f"MESSAGE=pod {pod.uuid} starting app app from image {IMAGE_NAME} {pod.image_id}\n"
            f"POD_UUID={pod.uuid}\nAPP=app\nSYSLOG_IDENTIFIER=fleet-pod\n"
        ).encode()
    )


@pytest.mark.parametrize(("namespace", "overlay"), [(True, False), (False, True)])
def test_without_overlay_the_rendered_tree_is_copied(
    settings: PodSettings, tmp_path: Path, image_file: Path, namespace: bool, overlay: bool
) -> None:
    host = FakeHost(tmp_path, settings.paths.pods_dir, namespace=namespace, overlay=overlay)
    run_until_exec(settings, image_file, RunOptions(), host)
    pod = only_pod(settings)
    assert (pod.path / "rootfs-kind").read_text() == "copy"
    assert (pod.path / "rootfs" / "bin" / "hello").read_text() == "#!/bin/sh\necho hello\n"
    assert (pod.path / "rootfs" / "etc" / "motd").readlink() == Path("hostname")
    assert not (pod.path / "overlay").exists()
    mounts = [call for call in host.calls if call[0] == "mount"]
    assert len(mounts) == (1 if namespace else 0)


def test_in_a_service_unit_limits_are_set_on_it_and_nspawn_keeps_it(
    settings: PodSettings, tmp_path: Path, image_file: Path
) -> None:
    cgroup = "0::/system.slice/web.service\n"
    host = FakeHost(tmp_path, settings.paths.pods_dir, cgroup=cgroup)
    options = run_options(memory="64M", cpu="250m", tasks_max=9)
    executed = run_until_exec(settings, image_file, options, host)
    assert (
        "run",
        "systemctl",
        "set-property",
        "--runtime",
        "web.service",
        "MemoryMax=64000000",
        "CPUQuota=25%",
        "TasksMax=9",
    ) in host.calls
    assert executed.argv[0] == "systemd-nspawn"
    assert "--keep-unit" in executed.argv
    assert only_pod(settings).unit == "web.service"


def test_in_a_service_unit_without_limits_nothing_is_set(
    settings: PodSettings, tmp_path: Path, image_file: Path
) -> None:
    host = FakeHost(tmp_path, settings.paths.pods_dir, cgroup="0::/system.slice/web.service\n")
    executed = run_until_exec(settings, image_file, RunOptions(), host)
    assert not [call for call in host.calls if call[0] == "run"]
    assert "--keep-unit" in executed.argv
    assert only_pod(settings).unit == "web.service"


def test_limits_go_on_the_unit_first_and_stop_the_run_when_they_cannot(
    settings: PodSettings, tmp_path: Path, image_file: Path
) -> None:
    host = FakeHost(
        tmp_path, settings.paths.pods_dir, cgroup="0::/system.slice/a.service", command_status=1
    )
    with pytest.raises(PodError, match=r"cannot set resource limits on a\.service"):
        stage0.run(settings, str(image_file), run_options(memory="64M"), warn=print, host=host)
    # Before anything else: no image fetched, no pod made.
    assert PodStore(settings.paths.pods_dir).list() == []
    assert ImageStore(settings.paths.images_dir).list() == []


def test_outside_a_service_unit_limits_come_with_a_scope(
    settings: PodSettings, host: FakeHost, image_file: Path
) -> None:
    executed = run_until_exec(settings, image_file, run_options(memory="1Gi"), host)
    pod = only_pod(settings)
    scope = stage1.scope_unit_name(pod.uuid)
    assert executed.argv[:8] == [
        "systemd-run",
        "--scope",
        "--quiet",
        "--collect",
        f"--unit={scope}",
        "-p",
        f"MemoryMax={2**30}",
        "--",
    ]
    assert executed.argv[8] == "systemd-nspawn"
    assert "--keep-unit" in executed.argv
    assert pod.unit == scope


def test_fly_mounts_chroots_drops_ids_and_execs_the_app(
    settings: PodSettings, host: FakeHost, image_file: Path
) -> None:
    options = run_options(
        stage1="fly",
        set_env=["A=1"],
        volumes=["v,kind=empty,mode=0700"],
        mounts=["volume=v,target=/data"],
    )
    executed = run_until_exec(settings, image_file, options, host)
    pod = only_pod(settings)
    rootfs = pod.path / "rootfs"
    assert executed.argv == ["/bin/hello"]
    assert executed.env == {"PATH": stage1.DEFAULT_PATH, "AC_APP_NAME": "app", "A": "1"}
    assert executed.states == {pod.uuid: PodState.RUNNING}
    targets = [call[2] for call in host.calls if call[0] == "mount"][1:]
    assert targets == [str(rootfs / name) for name in ("dev", "proc", "sys", "tmp", "data")]
    assert all((rootfs / name).is_dir() for name in ("dev", "proc", "sys", "tmp", "data"))
    assert host.calls.index(("journal", "app")) < host.calls.index(("chroot", str(rootfs)))
    assert host.calls[-3:] == [
        ("chroot", str(rootfs)),
        ("chdir", "/"),
        ("set_ids", 0, 0),
    ]
    assert stat.S_IMODE((pod.path / "volumes" / "v").stat().st_mode) == 0o700


def test_fly_needs_the_private_mount_namespace(
    settings: PodSettings, tmp_path: Path, image_file: Path
) -> None:
    host = FakeHost(tmp_path, settings.paths.pods_dir, namespace=False)
    with pytest.raises(PodError, match="fly stage1 needs a private mount namespace"):
        stage0.run(settings, str(image_file), run_options(stage1="fly"), warn=print, host=host)
    assert not [call for call in host.calls if call[0] == "mount"]


def test_fly_with_limits_outside_a_service_unit_is_refused(
    settings: PodSettings, host: FakeHost, image_file: Path
) -> None:
    options = run_options(stage1="fly", cpu="1")
    with pytest.raises(PodError, match="fly applies resource limits only inside a service"):
        stage0.run(settings, str(image_file), options, warn=print, host=host)
    assert host.calls == []


def test_a_missing_host_volume_source_stops_the_run(
    settings: PodSettings, host: FakeHost, image_file: Path, tmp_path: Path
) -> None:
    options = run_options(
        volumes=[f"logs,kind=host,source={tmp_path}/absent"], mounts=["volume=logs,target=/l"]
    )
    with pytest.raises(PodError, match=r"volume logs: host source '.*/absent' does not exist"):
        stage0.run(settings, str(image_file), options, warn=print, host=host)
    assert only_pod(settings).state is PodState.ABORTED_PREPARE


def test_prepare_then_run_prepared(settings: PodSettings, host: FakeHost, image_file: Path) -> None:
    warnings: list[str] = []
    pod = stage0.prepare(settings, str(image_file), RunOptions(), warn=warnings.append)
    assert pod.lock_fd is None
    assert only_pod(settings).state is PodState.PREPARED
    assert "SIGNATURE CHECK DISABLED" in warnings[0]
    assert not (pod.path / "rootfs-kind").exists()  # the rootfs is made at run time
    with pytest.raises(Executed) as executed:
        stage0.run_prepared(settings, pod.uuid[:8], host=host)
    assert executed.value.states == {pod.uuid: PodState.RUNNING}
    assert f"--uuid={pod.uuid.replace('-', '')}" in executed.value.argv
    with pytest.raises(PodError, match="is exited, not prepared"):
        stage0.run_prepared(settings, pod.uuid, host=host)


def test_images_are_found_in_the_store_by_name_or_fetched(
    settings: PodSettings, image_file: Path
) -> None:
    with pytest.raises(StoreError, match=r"no image matches 'example\.com/app'"):
        stage0.resolve_image(settings, IMAGE_NAME, warn=print)
    fetched = stage0.resolve_image(settings, str(image_file), warn=lambda _: None)
    assert stage0.resolve_image(settings, IMAGE_NAME, warn=print) == fetched
    assert stage0.resolve_image(settings, fetched.id[:20], warn=print) == fetched
    assert stage0.resolve_image(settings, image_file.as_uri(), warn=lambda _: None) == fetched


def test_an_image_for_another_architecture_is_refused(
    settings: PodSettings, host: FakeHost, image_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stage0, "host_arch", lambda: "s390x")
    with pytest.raises(PodError, match=r"example\.com/app is for amd64, this machine is s390x"):
        stage0.run(settings, str(image_file), RunOptions(), warn=lambda _: None, host=host)


def test_journal_stream_header() -> None:
    assert stage0.journal_stream_header("web") == b"web\n\n6\n0\n0\n0\n0\n"


def test_journal_entry_uses_the_binary_form_for_newlines() -> None:
    assert stage0.journal_entry({"A": "1", "MESSAGE": "two\nlines"}) == (
        b"A=1\nMESSAGE\n" + struct.pack("<Q", 9) + b"two\nlines\n"
    )


def test_output_goes_to_the_journal_stream_socket(tmp_path: Path) -> None:
    (tmp_path / "j").mkdir()
    host = stage0.Host()
    host.journal_dir = tmp_path / "j"
    out, err = os.open(os.devnull, os.O_WRONLY), os.open(os.devnull, os.O_WRONLY)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(tmp_path / "j" / "stdout"))
        server.listen(1)
        assert host.connect_output_to_journal("web", fds=(out, err))
        os.write(out, b"to stdout\n")
        os.write(err, b"to stderr\n")
        os.close(out)
        os.close(err)
        connection, _ = server.accept()
        with connection:
            received = b""
            while chunk := connection.recv(4096):
                received += chunk
    assert received == b"web\n\n6\n0\n0\n0\n0\nto stdout\nto stderr\n"


def test_a_terminal_or_a_missing_journal_keeps_the_output(tmp_path: Path) -> None:
    host = stage0.Host()
    host.journal_dir = tmp_path
    assert not host.connect_output_to_journal("web", fds=(1, 2))
    (tmp_path / "stdout").touch()
    primary, secondary = os.openpty()
    try:
        assert not host.connect_output_to_journal("web", fds=(secondary,))
    finally:
        os.close(primary)
        os.close(secondary)
    host.send_journal(b"MESSAGE=nobody listens\n")  # no socket: silently skipped


def test_send_journal_sends_one_datagram(tmp_path: Path) -> None:
    host = stage0.Host()
    host.journal_dir = tmp_path
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(tmp_path / "socket"))
        host.send_journal(b"MESSAGE=hi\n")
        assert server.recv(4096) == b"MESSAGE=hi\n"


def test_overlay_options_escape_separators() -> None:
    assert stage0.overlay_options(Path("/a,b"), Path("/c:d"), Path("/e\\f")) == (
        "lowerdir=/a\\,b,upperdir=/c\\:d,workdir=/e\\\\f"
    )


def test_copy_tree_keeps_links_modes_and_fifos(tmp_path: Path) -> None:
    source, copy = tmp_path / "src", tmp_path / "copy"
    (source / "bin").mkdir(parents=True)
    (source / "bin" / "tool").write_text("x")
    (source / "bin" / "tool").chmod(0o751)
    (source / "link").symlink_to("bin/tool")
    (source / "dangling").symlink_to("/nowhere")
    os.mkfifo(source / "fifo")
    if os.geteuid() == 0:  # as root the copy keeps owners, and set-id bits survive the chown
        os.chown(source / "bin" / "tool", 1234, 5678)
        os.chmod(source / "bin" / "tool", 0o4751)
        os.lchown(source / "link", 1234, 5678)
    copy.mkdir()
    stage0.copy_tree(source, copy)
    for name in ("bin/tool", "link", "bin"):
        original, copied = os.lstat(source / name), os.lstat(copy / name)
        assert (copied.st_uid, copied.st_gid, copied.st_mode) == (
            original.st_uid,
            original.st_gid,
            original.st_mode,
        )
    assert (copy / "bin" / "tool").read_text() == "x"
    assert (copy / "link").readlink() == Path("bin/tool")
    assert (copy / "dangling").readlink() == Path("/nowhere")
    assert stat.S_ISFIFO(os.lstat(copy / "fifo").st_mode)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/etc/passwd", "etc/passwd"),
        ("/abs/passwd", "etc/passwd"),
        ("/rel/passwd", "etc/passwd"),
        ("/../../etc/passwd", "etc/passwd"),
        ("/up/x", "x"),
        ("/deep/abs/passwd", "etc/passwd"),
        ("/deep/rel/x", "deep/etc/x"),
        ("/new/dir", "new/dir"),
    ],
)
def test_resolve_in_root_never_leaves_the_root(tmp_path: Path, path: str, expected: str) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "abs").symlink_to("/etc")
    (tmp_path / "rel").symlink_to("etc")
    (tmp_path / "up").symlink_to("../../..")
    (tmp_path / "deep").mkdir()
    (tmp_path / "deep" / "abs").symlink_to("/etc")
    (tmp_path / "deep" / "rel").symlink_to("etc")
    assert stage0.resolve_in_root(tmp_path, path) == tmp_path / expected


def test_resolve_in_root_stops_at_a_symlink_loop(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    with pytest.raises(PodError, match="too many symlinks"):
        stage0.resolve_in_root(tmp_path, "/a/x")


def test_run_fly_makes_file_targets_for_file_sources(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    (tmp_path / "resolv.conf").write_text("nameserver 1.1.1.1\n")
    (rootfs / "etc").symlink_to("/private")  # resolved inside the rootfs, not on the host
    host = FakeHost(tmp_path, tmp_path / "pods")
    steps: list[stage1.FlyStep] = [
        stage1.MountStep(str(tmp_path / "resolv.conf"), rootfs / "etc/resolv.conf", None, 4096)
    ]
    with pytest.raises(PodError, match="fly plan has no exec step"):
        stage0.run_fly(steps, rootfs, host)
    assert (rootfs / "private" / "resolv.conf").is_file()
    assert host.calls == [
        (
            "mount",
            str(tmp_path / "resolv.conf"),
            str(rootfs / "private/resolv.conf"),
            None,
            4096,
            None,
        )
    ]


def test_prepare_volumes_creates_empty_volumes(tmp_path: Path) -> None:
    manifest: dict[str, Any] = {
        "apps": [
            {
                "name": "a",
                "image": {"id": "x"},
                "app": {"exec": ["/x"]},
                "mounts": [{"volume": "c", "path": "/c"}],
            }
        ],
        "volumes": [{"name": "c", "kind": "empty", "mode": "0750", "uid": 0, "gid": 0}],
    }
    stage0.prepare_volumes(tmp_path, stage1.pod_spec(manifest))
    assert stat.S_IMODE((tmp_path / "volumes" / "c").stat().st_mode) == 0o750


def test_on_a_terminal_nspawn_keeps_its_interactive_console(
    settings: PodSettings, tmp_path: Path, image_file: Path
) -> None:
    host = FakeHost(tmp_path, settings.paths.pods_dir, tty=True)
    executed = run_until_exec(settings, image_file, RunOptions(), host)
    assert not [arg for arg in executed.argv if arg.startswith("--console")]


def test_on_the_cluster_network_nspawn_enters_the_pods_namespace(
    settings: PodSettings, host: FakeHost, image_file: Path
) -> None:
    host.network = (IPv4Interface("10.244.3.2/24"), Path("/run/netns/fleet-x"))
    executed = run_until_exec(settings, image_file, run_options(), host)
    pod = only_pod(settings)
    assert host.connected == [pod.uuid]
    assert "--network-namespace-path=/run/netns/fleet-x" in executed.argv
    assert "--private-network" not in executed.argv
    assert pod.address == "10.244.3.2/24"
    assert host.published == ()


def test_in_a_service_the_pods_address_is_handed_to_fleetd_before_stage1(
    settings: PodSettings, tmp_path: Path, image_file: Path, pod_address_dir: Path
) -> None:
    cgroup = "0::/system.slice/web.service\n"
    host = FakeHost(tmp_path, settings.paths.pods_dir, cgroup=cgroup)
    host.network = (IPv4Interface("10.244.3.2/24"), Path("/run/netns/fleet-x"))
    run_until_exec(settings, image_file, run_options(), host)  # the file is there at the exec
    record = decode_pod_address((pod_address_dir / "web.service").read_bytes())
    assert record == PodAddress("10.244.3.2", only_pod(settings).uuid)


def test_a_pod_without_an_address_withdraws_what_the_units_last_pod_left(
    settings: PodSettings, tmp_path: Path, image_file: Path, pod_address_dir: Path
) -> None:
    pod_address_dir.mkdir()
    (pod_address_dir / "web.service").write_bytes(
        encode_pod_address(PodAddress("10.244.3.9", "an-earlier-pod"))
    )
    (pod_address_dir / "db.service").write_bytes(
        encode_pod_address(PodAddress("10.244.3.8", "another-units-pod"))
    )
    cgroup = "0::/system.slice/web.service\n"
    host = FakeHost(tmp_path, settings.paths.pods_dir, cgroup=cgroup)
    run_until_exec(settings, image_file, run_options(net="host"), host)
    assert [path.name for path in pod_address_dir.iterdir()] == ["db.service"]


def test_outside_a_service_no_address_is_handed_over(
    settings: PodSettings, host: FakeHost, image_file: Path, pod_address_dir: Path
) -> None:
    host.network = (IPv4Interface("10.244.3.2/24"), Path("/run/netns/fleet-x"))
    run_until_exec(settings, image_file, run_options(), host)  # in a login session's scope
    assert not pod_address_dir.exists()


def test_published_ports_reach_the_network_set_up(
    settings: PodSettings, host: FakeHost, image_file: Path
) -> None:
    host.network = (IPv4Interface("10.244.3.2/24"), Path("/run/netns/fleet-x"))
    run_until_exec(settings, image_file, run_options(ports=["8080:80/tcp", "53:53/udp"]), host)
    assert host.published == (PortMapping(8080, 80, "tcp"), PortMapping(53, 53, "udp"))


def test_net_none_and_host_are_never_connected(
    settings: PodSettings, host: FakeHost, image_file: Path
) -> None:
    host.network = (IPv4Interface("10.244.3.2/24"), Path("/run/netns/fleet-x"))
    executed = run_until_exec(settings, image_file, run_options(net="none"), host)
    assert host.connected == []
    assert "--private-network" in executed.argv
    assert only_pod(settings).address is None
