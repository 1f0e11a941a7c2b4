"""Stage1 builders: pod_spec, the nspawn argv, the fly plan, limits, the service unit."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from fleetd.core.container import NetMode, Stage1
from fleetpod import stage1
from fleetpod.errors import PodError
from fleetpod.image_manifest import App, ImageManifest, MountPoint
from fleetpod.pod_manifest import RunOptions, Volume, build_pod_manifest
from fleetpod.pod_manifest import run_options as flags
from fleetpod.stage1 import (
    Bind,
    ChdirStep,
    ChrootStep,
    ExecStep,
    MountStep,
    SetIdsStep,
    fly_plan,
    limits_properties,
    nspawn_command,
    own_service_unit,
    pod_spec,
    resolve_ids,
)
from fleetpod.store import ImageRecord

UUID = "0123abcd-4567-4890-8abc-def012345678"
POD = Path("/pods/run") / UUID
IMAGE_ID = "sha512-" + "cd" * 64


def record(app: App) -> ImageRecord:
    manifest = ImageManifest(
        name="example.com/web",
        labels=(("version", "1"), ("os", "linux"), ("arch", "amd64")),
        app=app,
    )
    return ImageRecord(IMAGE_ID, manifest, 1, datetime(2024, 1, 1, tzinfo=UTC), "t", None)


WEB = App(
    exec=("/bin/web", "-v"),
    user="0",
    group="0",
    environment=(("MODE", "prod"),),
    working_directory="/srv",
    mount_points=(MountPoint("state", "/var/state", read_only=True),),
)


def manifest_for(app: App = WEB, options: RunOptions | None = None) -> dict[str, Any]:
    return build_pod_manifest(record(app), options or RunOptions(), UUID)


def test_pod_spec_reads_back_what_the_manifest_was_built_from() -> None:
    options = flags(
        set_env=["X=1"],
        volumes=["logs,kind=host,source=/var/log,readOnly=true,recursive=false"],
        mounts=["volume=logs,target=/logs"],
        memory="128M",
        cpu="750m",
        tasks_max=20,
        net="none",
        name="front",
    )
    spec = pod_spec(manifest_for(options=options))
    logs = Volume("logs", "host", "/var/log", read_only=True, recursive=False)
    state = Volume("state", "empty", read_only=True)
    assert spec == stage1.PodSpec(
        app_name="front",
        image_id=IMAGE_ID,
        image_name="example.com/web",
        exec=("/bin/web", "-v"),
        user="0",
        group="0",
        environment=(("MODE", "prod"), ("X", "1")),
        working_directory="/srv",
        binds=(Bind(logs, "/logs", True), Bind(state, "/var/state", True)),
        net=NetMode.NONE,
        stage1=Stage1.NSPAWN,
        memory=128_000_000,
        cpu=750,
        tasks_max=20,
        volumes=(logs, state),
    )


def test_a_read_only_mount_point_makes_a_writable_host_volume_read_only() -> None:
    options = flags(volumes=["state,kind=host,source=/srv/state"])
    (bind,) = pod_spec(manifest_for(options=options)).binds
    assert bind.volume.read_only is False
    assert bind.read_only is True


@pytest.mark.parametrize(
    "manifest",
    [{}, {"apps": []}, {"apps": [{"name": "a"}]}, {"apps": [{}, {}]}],
)
def test_a_manifest_that_is_not_ours_is_refused(manifest: dict[str, Any]) -> None:
    with pytest.raises(PodError, match="pod manifest is not one fleet-pod can run"):
        pod_spec(manifest)


def test_the_nspawn_command_line() -> None:
    options = flags(
        set_env=["GREETING=hello world"],
        volumes=[
            "logs,kind=host,source=/var/log/app:1,recursive=false",
            "data,kind=host,source=/srv/data",
        ],
        mounts=["volume=logs,target=/logs", "volume=data,target=/data"],
    )
    manifest = manifest_for(options=options)
    argv = nspawn_command(POD, manifest, uuid=UUID, keep_unit=True, console="pipe")
    assert argv == [
        "systemd-nspawn",
        "--quiet",
        "--register=no",
        "--keep-unit",
        "--as-pid2",
        "--uuid=0123abcd45674890" + "8abcdef012345678",
        "--machine=fleet-0123abcd",
        "--hostname=fleet-0123abcd",
        f"--directory={POD}/rootfs",
        "--private-network",
        "--console=pipe",
        "--setenv=AC_APP_NAME=web",
        "--setenv=MODE=prod",
        "--setenv=GREETING=hello world",
        "--chdir=/srv",
        "--bind=/var/log/app\\:1:/logs:norbind",
        "--bind=/srv/data:/data",
        f"--bind-ro={POD}/volumes/state:/var/state",
        "--kill-signal=SIGRTMIN+3",
        "--",
        "/bin/web",
        "-v",
    ]


@pytest.mark.parametrize(("net", "private"), [("host", False), ("none", True), ("default", True)])
def test_only_the_host_network_mode_shares_the_network(net: str, private: bool) -> None:
    argv = nspawn_command(POD, manifest_for(options=flags(net=net)), uuid=UUID, keep_unit=False)
    assert ("--private-network" in argv) is private
    assert "--keep-unit" not in argv


def test_the_net_argument_overrides_the_manifest() -> None:
    argv = nspawn_command(POD, manifest_for(), uuid=UUID, keep_unit=False, net="host")
    assert "--private-network" not in argv


@pytest.mark.parametrize(("user", "flag"), [("0", None), ("root", None), ("1000", "--user=1000")])
def test_a_non_root_user_is_passed_to_nspawn(user: str, flag: str | None) -> None:
    app = App(exec=("/bin/web",), user=user, group="0")
    argv = nspawn_command(POD, manifest_for(app), uuid=UUID, keep_unit=False)
    assert [a for a in argv if a.startswith("--user")] == ([flag] if flag else [])


def test_the_fly_plan_binds_api_filesystems_and_volumes_then_chroots() -> None:
    options = flags(
        stage1="fly",
        volumes=["logs,kind=host,source=/var/log,recursive=false"],
        mounts=["volume=logs,target=/logs"],
        set_env=["PATH=/opt/bin"],
    )
    spec = pod_spec(manifest_for(options=options))
    rootfs = POD / "rootfs"
    bind, rec, ro, remount = stage1.MS_BIND, stage1.MS_REC, stage1.MS_RDONLY, stage1.MS_REMOUNT
    assert fly_plan(POD, spec, uid=10, gid=20) == [
        MountStep("/dev", rootfs / "dev", None, bind | rec),
        MountStep("/proc", rootfs / "proc", None, bind | rec),
        MountStep("/sys", rootfs / "sys", None, bind | rec),
        MountStep(
            "tmpfs", rootfs / "tmp", "tmpfs", stage1.MS_NOSUID | stage1.MS_NODEV, "mode=1777"
        ),
        MountStep("/var/log", rootfs / "logs", None, bind),
        MountStep(str(POD / "volumes" / "state"), rootfs / "var/state", None, bind | rec),
        MountStep(None, rootfs / "var/state", None, bind | remount | ro | rec),
        ChrootStep(rootfs),
        ChdirStep("/srv"),
        SetIdsStep(uid=10, gid=20),
        ExecStep(
            argv=("/bin/web", "-v"),
            environment=(("PATH", "/opt/bin"), ("AC_APP_NAME", "web"), ("MODE", "prod")),
        ),
    ]


def test_the_fly_environment_has_a_default_path() -> None:
    steps = fly_plan(POD, pod_spec(manifest_for(options=flags(stage1="fly"))), uid=0, gid=0)
    exec_step = steps[-1]
    assert isinstance(exec_step, ExecStep)
    assert dict(exec_step.environment)["PATH"] == stage1.DEFAULT_PATH


PASSWD = "root:x:0:0::/root:/bin/sh\nweb:x:1000:1000::/srv:/bin/sh\nbroken\n"
GROUP = "root:x:0:\nwww:x:33:\n"


@pytest.mark.parametrize(
    ("user", "group", "ids"),
    [
        ("0", "0", (0, 0)),
        ("web", "www", (1000, 33)),
        ("1000", "root", (1000, 0)),
        ("7", "8", (7, 8)),
    ],
)
def test_user_and_group_resolve_to_numbers(user: str, group: str, ids: tuple[int, int]) -> None:
    assert resolve_ids(user, group, passwd=PASSWD, group_file=GROUP) == ids


@pytest.mark.parametrize(
    ("user", "group", "message"),
    [
        ("nobody", "0", "user 'nobody' is not in the image's /etc/passwd"),
        ("0", "staff", "group 'staff' is not in the image's /etc/group"),
        ("broken", "0", "user 'broken'"),
    ],
)
def test_unknown_names_are_refused(user: str, group: str, message: str) -> None:
    with pytest.raises(PodError, match=message):
        resolve_ids(user, group, passwd=PASSWD, group_file=GROUP)


@pytest.mark.parametrize(
    ("options", "properties"),
    [
        (RunOptions(), []),
        (RunOptions(memory=268435456), ["MemoryMax=268435456"]),
        (RunOptions(cpu=500), ["CPUQuota=50%"]),
        (RunOptions(cpu=2000), ["CPUQuota=200%"]),
        (RunOptions(cpu=5), ["CPUQuota=0.5%"]),
        (RunOptions(cpu=1255), ["CPUQuota=125.5%"]),
        (RunOptions(tasks_max=32), ["TasksMax=32"]),
        (
            RunOptions(memory=1, cpu=750, tasks_max=2),
            ["MemoryMax=1", "CPUQuota=75%", "TasksMax=2"],
        ),
    ],
)
def test_limits_become_systemd_properties(options: RunOptions, properties: list[str]) -> None:
    assert limits_properties(options) == properties


def test_the_scope_and_set_property_commands() -> None:
    assert stage1.scope_unit_name(UUID) == "fleet-0123abcd.scope"
    assert stage1.scope_command("u.scope", ["MemoryMax=1", "TasksMax=2"], ["nspawn", "-q"]) == [
        "systemd-run",
        "--scope",
        "--quiet",
        "--collect",
        "--unit=u.scope",
        "-p",
        "MemoryMax=1",
        "-p",
        "TasksMax=2",
        "--",
        "nspawn",
        "-q",
    ]
    assert stage1.set_property_command("a.service", ["TasksMax=2"]) == [
        "systemctl",
        "set-property",
        "--runtime",
        "a.service",
        "TasksMax=2",
    ]


@pytest.mark.parametrize(
    ("cgroup", "unit"),
    [
        ("0::/system.slice/web.service\n", "web.service"),
        ("0::/system.slice/system-web.slice/web@1.service\n", "web@1.service"),
        ("0::/system.slice/web.service/payload\n", "web.service"),
        ("0::/machine.slice/pod.service/supervisor.scope\n", None),
        ("0::/user.slice/user-1000.slice/session-3.scope\n", None),
        ("0::/user.slice/user-1000.slice/user@1000.service/app.slice/x.service\n", None),
        ("0::/user.slice/user-1000.slice/user@1000.service\n", "user@1000.service"),
        ("0::/init.scope\n", None),
        ("0::/\n", None),
        ("", None),
        (
            "12:pids:/system.slice/web.service\n"
            "1:name=systemd:/system.slice/web.service\n"
            "0::/system.slice/web.service\n",
            "web.service",
        ),
        ("4:memory:/docker/abc\n1:name=systemd:/system.slice/v1.service\n", "v1.service"),
        ("9:name=systemd:/\n0::/\n", None),
        ("1:name=systemd:/system.slice/a.service\n0::/system.slice/b.service\n", "a.service"),
        ("4:memory:/system.slice/x.service\n", None),
    ],
)
def test_own_service_unit_from_cgroup_v1_and_v2(cgroup: str, unit: str | None) -> None:
    assert own_service_unit(cgroup) == unit


def test_the_default_network_enters_the_pods_namespace() -> None:
    manifest = manifest_for(options=flags(net="default"))
    namespace = Path("/run/netns/fleet-0123")
    argv = nspawn_command(POD, manifest, uuid=UUID, keep_unit=True, network_namespace=namespace)
    assert "--network-namespace-path=/run/netns/fleet-0123" in argv
    assert "--private-network" not in argv
    none = manifest_for(options=flags(net="none"))
    argv = nspawn_command(POD, none, uuid=UUID, keep_unit=True, network_namespace=namespace)
    assert "--private-network" in argv
    assert not any(a.startswith("--network-namespace-path") for a in argv)
