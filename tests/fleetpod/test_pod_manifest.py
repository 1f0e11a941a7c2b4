"""Run flags and the pod manifest built from them (fleetpod.pod_manifest)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from fleetd.core.container import NetMode, Stage1
from fleetpod.errors import PodError
from fleetpod.image_manifest import App, ImageManifest, MountPoint
from fleetpod.pod_manifest import (
    Mount,
    RunOptions,
    Volume,
    build_pod_manifest,
    default_app_name,
    parse_mount,
    parse_volume,
    run_options,
)
from fleetpod.store import ImageRecord

IMAGE_ID = "sha512-" + "ab" * 64
UUID = "6f1c2a3b-0000-4000-8000-000000000001"


def record(app: App | None = None, name: str = "example.com/web-server") -> ImageRecord:
    manifest = ImageManifest(
        name=name,
        labels=(("version", "1.0"), ("os", "linux"), ("arch", "amd64")),
        app=app,
    )
    return ImageRecord(
        id=IMAGE_ID,
        manifest=manifest,
        size=1,
        imported=datetime(2024, 1, 1, tzinfo=UTC),
        source="test",
        signed_by=None,
    )


APP = App(
    exec=("/bin/web", "--port", "80"),
    user="100",
    group="101",
    environment=(("PATH", "/bin"), ("MODE", "prod")),
    working_directory="/srv",
)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"set_env": ["NOEQUALS"]}, "invalid --set-env 'NOEQUALS': expected NAME=VALUE"),
        ({"set_env": ["1BAD=x"]}, "invalid --set-env '1BAD=x': '1BAD' is not a variable name"),
        ({"set_env": ["=x"]}, "invalid --set-env '=x': '' is not a variable name"),
        ({"volumes": ["Data,kind=empty"]}, "volume name 'Data' is not an AC name"),
        ({"volumes": ["data"]}, "invalid --volume 'data': kind must be host or empty"),
        ({"volumes": ["data,kind=nfs"]}, "kind must be host or empty"),
        ({"volumes": ["data,kind=host"]}, "kind=host needs source=PATH"),
        ({"volumes": ["data,kind=host,source=rel"]}, "source 'rel' is not an absolute path"),
        ({"volumes": ["data,kind=host,source=/a,readOnly=yes"]}, "readOnly must be true or false"),
        ({"volumes": ["data,kind=host,source=/a,recursive=1"]}, "recursive must be true or false"),
        (
            {"volumes": ["data,kind=host,source=/a,mode=0755"]},
            "unknown option 'mode' for kind=host",
        ),
        ({"volumes": ["data,kind=empty,source=/a"]}, "unknown option 'source' for kind=empty"),
        ({"volumes": ["data,kind=empty,mode=999"]}, "mode '999' is not an octal mode"),
        ({"volumes": ["data,kind=empty,uid=-1"]}, "uid '-1' is not a non-negative number"),
        ({"volumes": ["data,kind=empty,gid=x"]}, "gid 'x' is not a non-negative number"),
        ({"volumes": ["data,kind=empty,kind=host"]}, "kind given twice"),
        ({"volumes": ["data,kind=empty,junk"]}, "expected key=value, got 'junk'"),
        ({"mounts": ["volume=data"]}, "invalid --mount 'volume=data': expected volume=NAME,target"),
        ({"mounts": ["volume=data,target=rel"]}, "target 'rel' is not an absolute path"),
        ({"mounts": ["volume=data,target=/"]}, "target cannot be the root directory"),
        ({"mounts": ["volume=data,target=/a,ro=1"]}, "unknown option 'ro'"),
        ({"memory": "lots"}, "invalid --memory 'lots': memory quantity 'lots'"),
        ({"memory": "0"}, "invalid --memory '0': must be more than 0"),
        ({"memory": "32M"}, "invalid --memory '32M': below the minimum of 64M"),
        ({"cpu": "fast"}, "invalid --cpu 'fast'"),
        ({"cpu": "0m"}, "invalid --cpu '0m': must be more than 0"),
        ({"net": "bridge"}, "invalid --net 'bridge': expected host, none or default"),
        ({"stage1": "kvm"}, "invalid --stage1 'kvm': expected nspawn or fly"),
        ({"stage1": "fly", "net": "none"}, "invalid --net 'none': the fly stage1 has no network"),
        ({"name": "Web_App"}, "invalid --name 'Web_App': not an AC name"),
        ({"tasks_max": 0}, "invalid --tasks-max '0': must be more than 0"),
        ({"exec_path": ""}, "invalid --exec '': must not be empty"),
    ],
)
def test_a_bad_flag_is_refused_naming_flag_and_value(flags: dict[str, Any], message: str) -> None:
    with pytest.raises(PodError) as caught:
        run_options(**flags)
    assert message in str(caught.value)


def test_no_flags_give_the_defaults() -> None:
    assert run_options() == RunOptions()
    assert RunOptions().net is NetMode.DEFAULT
    assert RunOptions().stage1 is Stage1.NSPAWN


def test_flags_are_parsed_into_typed_values() -> None:
    options = run_options(
        exec_path="/bin/sh",
        args=["-c", "echo a=b"],
        set_env=["A=1", "B=x=y", "EMPTY="],
        volumes=["logs,kind=host,source=/var/log/,readOnly=true,recursive=false"],
        mounts=["volume=logs,target=/logs/"],
        memory="256M",
        cpu="500m",
        tasks_max=64,
        net="host",
        name="web",
    )
    assert options == RunOptions(
        exec_path="/bin/sh",
        args=("-c", "echo a=b"),
        environment=(("A", "1"), ("B", "x=y"), ("EMPTY", "")),
        volumes=(Volume("logs", "host", "/var/log", read_only=True, recursive=False),),
        mounts=(Mount("logs", "/logs"),),
        memory=256_000_000,
        cpu=500,
        tasks_max=64,
        net=NetMode.HOST,
        stage1=Stage1.NSPAWN,
        name="web",
    )


def test_an_empty_volume_keeps_mode_and_owner() -> None:
    assert parse_volume("cache,kind=empty,mode=700,uid=1000,gid=100") == Volume(
        "cache", "empty", None, False, True, "0700", 1000, 100
    )
    assert parse_volume("cache,kind=empty") == Volume("cache", "empty")
    assert parse_mount("target=/a/../b,volume=v") == Mount("v", "/b")


def test_fly_defaults_to_the_host_network() -> None:
    assert run_options(stage1="fly").net is NetMode.HOST
    assert run_options(stage1="fly", net="host").net is NetMode.HOST


@pytest.mark.parametrize(
    ("image_name", "app_name"),
    [
        ("example.com/web-server", "web-server"),
        ("example.com/My_App.v2", "my-app-v2"),
        ("plain", "plain"),
        ("example.com/x/", "x"),
    ],
)
def test_the_default_app_name_is_the_last_component_made_an_ac_name(
    image_name: str, app_name: str
) -> None:
    assert default_app_name(image_name) == app_name


def test_a_name_without_letters_or_digits_needs_name() -> None:
    with pytest.raises(PodError, match="give --name"):
        default_app_name("example.com/__")


def test_the_manifest_is_an_appc_pod_manifest_with_the_overrides() -> None:
    options = run_options(
        set_env=["MODE=dev", "EXTRA=1"],
        memory="1Gi",
        cpu="2",
        tasks_max=10,
        args=["--verbose"],
    )
    manifest = build_pod_manifest(record(APP), options, UUID)
    assert manifest == {
        "acKind": "PodManifest",
        "acVersion": "0.8.11",
        "apps": [
            {
                "name": "web-server",
                "image": {
                    "id": IMAGE_ID,
                    "name": "example.com/web-server",
                    "labels": [
                        {"name": "version", "value": "1.0"},
                        {"name": "os", "value": "linux"},
                        {"name": "arch", "value": "amd64"},
                    ],
                },
                "app": {
                    "exec": ["/bin/web", "--port", "80", "--verbose"],
                    "user": "100",
                    "group": "101",
                    "environment": [
                        {"name": "PATH", "value": "/bin"},
                        {"name": "MODE", "value": "dev"},
                        {"name": "EXTRA", "value": "1"},
                    ],
                    "workingDirectory": "/srv",
                    "mountPoints": [],
                    "isolators": [],
                },
                "mounts": [],
            }
        ],
        "volumes": [],
        "isolators": [
            {"name": "resource/memory", "value": {"limit": str(2**30)}},
            {"name": "resource/cpu", "value": {"limit": "2000m"}},
        ],
        "annotations": [
            {"name": "pyfleet.io/stage1", "value": "nspawn"},
            {"name": "pyfleet.io/net", "value": "default"},
            {"name": "pyfleet.io/uuid", "value": UUID},
            {"name": "pyfleet.io/tasks-max", "value": "10"},
        ],
    }


def test_exec_replaces_the_image_argv_and_args_follow_it() -> None:
    options = run_options(exec_path="/bin/sh", args=["-c", "true"], name="shell")
    manifest = build_pod_manifest(record(APP), options, UUID)
    assert manifest["apps"][0]["app"]["exec"] == ["/bin/sh", "-c", "true"]
    assert manifest["apps"][0]["name"] == "shell"


def test_an_image_without_app_needs_exec() -> None:
    with pytest.raises(PodError, match="has no app to run; give --exec"):
        build_pod_manifest(record(None), RunOptions(), UUID)
    manifest = build_pod_manifest(record(None), run_options(exec_path="/bin/true"), UUID)
    assert manifest["apps"][0]["app"]["user"] == "0"
    assert manifest["apps"][0]["app"]["workingDirectory"] == "/"


def test_image_isolators_give_the_limits_unless_flags_override() -> None:
    app = App(
        exec=("/bin/web",),
        isolators=(("resource/memory", {"limit": "64M"}), ("resource/cpu", {"limit": "250m"})),
    )
    limits = build_pod_manifest(record(app), RunOptions(), UUID)["isolators"]
    assert limits == [
        {"name": "resource/memory", "value": {"limit": "64000000"}},
        {"name": "resource/cpu", "value": {"limit": "250m"}},
    ]
    limits = build_pod_manifest(record(app), run_options(cpu="1"), UUID)["isolators"]
    assert limits[1] == {"name": "resource/cpu", "value": {"limit": "1000m"}}


def test_mount_points_get_volumes_by_name_or_an_implicit_empty_volume() -> None:
    app = App(
        exec=("/bin/web",),
        mount_points=(
            MountPoint("data", "/var/data"),
            MountPoint("cache", "/var/cache", read_only=True),
            MountPoint("logs", "/var/log"),
        ),
    )
    options = run_options(
        volumes=["data,kind=host,source=/srv/data", "other,kind=empty"],
        mounts=["volume=other,target=/var/log"],
    )
    manifest = build_pod_manifest(record(app), options, UUID)
    assert manifest["apps"][0]["mounts"] == [
        {"volume": "other", "path": "/var/log"},
        {"volume": "data", "path": "/var/data"},
        {"volume": "cache", "path": "/var/cache"},
    ]
    assert manifest["volumes"] == [
        {
            "name": "data",
            "kind": "host",
            "source": "/srv/data",
            "readOnly": False,
            "recursive": True,
        },
        {"name": "other", "kind": "empty", "readOnly": False, "mode": "0755", "uid": 0, "gid": 0},
        {"name": "cache", "kind": "empty", "readOnly": True, "mode": "0755", "uid": 0, "gid": 0},
    ]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            {"volumes": ["a,kind=empty", "a,kind=host,source=/x"]},
            "--volume 'a' is declared more than once",
        ),
        ({"mounts": ["volume=nope,target=/x"]}, "--mount volume=nope names no --volume"),
        (
            {"volumes": ["a,kind=empty"], "mounts": ["volume=a,target=/x", "volume=a,target=/x"]},
            "mount targets overlap: '/x' (volume a) and '/x' (volume a)",
        ),
        (
            {"volumes": ["a,kind=empty"], "mounts": ["volume=a,target=/srv/data/sub"]},
            "mount targets overlap: '/srv/data/sub' (volume a) and '/srv/data' (volume data)",
        ),
    ],
)
def test_invalid_mounts_are_refused(flags: dict[str, Any], message: str) -> None:
    app = App(exec=("/bin/web",), mount_points=(MountPoint("data", "/srv/data"),))
    with pytest.raises(PodError) as caught:
        build_pod_manifest(record(app), run_options(**flags), UUID)
    assert message in str(caught.value)


def test_targets_that_only_share_a_prefix_do_not_overlap() -> None:
    options = run_options(
        volumes=["a,kind=empty", "b,kind=empty"],
        mounts=["volume=a,target=/srv/data", "volume=b,target=/srv/database"],
    )
    manifest = build_pod_manifest(record(APP), options, UUID)
    assert len(manifest["apps"][0]["mounts"]) == 2


def test_fly_with_a_private_network_is_refused_even_when_built_by_hand() -> None:
    options = RunOptions(stage1=Stage1.FLY, net=NetMode.NONE)
    with pytest.raises(PodError, match="fly stage1 has no network isolation"):
        build_pod_manifest(record(APP), options, UUID)
