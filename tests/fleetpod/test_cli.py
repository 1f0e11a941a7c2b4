"""The fleet-pod CLI, run in-process through `main` with a recording Host."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fleetd.core.pod_address import PodAddress, encode_pod_address
from fleetpod.cli import (
    exit_status_from_env,
    format_age,
    list_rows,
    main,
    parse_duration,
    status_json,
    status_lines,
)
from fleetpod.errors import PodError
from fleetpod.pods import PodInfo, PodState, PodStore
from fleetpod.store import ImageStore
from tests.fleetpod.conftest import write_gzip_bomb
from tests.fleetpod.test_stage0 import Executed, FakeHost

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


class Cli:
    """`fleet-pod --dir <tmp>/data --config <tmp>/config ...` with captured output."""

    def __init__(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.data = tmp_path / "data"
        self.config = tmp_path / "config"
        self.tmp_path = tmp_path
        self.capsys = capsys
        self.host = FakeHost(tmp_path, self.data / "pods")

    def __call__(self, *args: str, insecure: bool = True) -> tuple[int, str, str]:
        flags = ["--dir", str(self.data), "--config", str(self.config)]
        if insecure:
            flags += ["--insecure-options", "image"]
        code = main([*flags, *args], host=self.host)
        captured = self.capsys.readouterr()
        return code, captured.out, captured.err

    def pods(self) -> list[PodInfo]:
        return PodStore(self.data / "pods").list()

    def exited_pod(self, image: Path) -> PodInfo:
        with pytest.raises(Executed):
            main(
                ["--dir", str(self.data), "--insecure-options", "image", "run", str(image)],
                host=self.host,
            )
        self.capsys.readouterr()
        (pod,) = self.pods()
        assert pod.state is PodState.EXITED
        return pod


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(tmp_path, capsys)


def test_prepare_list_status_cat_manifest(cli: Cli, image_file: Path) -> None:
    code, out, err = cli("prepare", str(image_file), "--set-env", "A=1", "--name", "web")
    assert code == 0, err
    uuid = out.strip()
    (pod,) = cli.pods()
    assert pod.uuid == uuid
    assert pod.state is PodState.PREPARED

    code, out, _ = cli("list")
    header, row = out.splitlines()
    assert header.split() == [
        "UUID",
        "APP",
        "IMAGE",
        "NAME",
        "IMAGE",
        "ID",
        "STATE",
        "CREATED",
        "STARTED",
        "NETWORKS",
    ]
    assert row.split()[-1] == "-"  # a prepared pod has no address yet
    assert row.split()[:5] == [
        uuid[:8],
        "web",
        "example.com/app",
        str(pod.image_id)[:39],
        "prepared",
    ]
    assert row.endswith("-")

    code, out, _ = cli("list", "--full", "--no-legend")
    assert out.split()[:4] == [uuid, "web", "example.com/app", pod.image_id]

    code, out, _ = cli("status", uuid[:8])
    assert out.splitlines()[0] == "state=prepared"
    assert out.splitlines()[-1] == "exited=false"

    code, out, _ = cli("status", uuid, "--format", "json")
    document = json.loads(out)
    assert document["state"] == "prepared"
    assert document["app_name"] == "web"
    assert document["exited"] is False

    code, out, _ = cli("cat-manifest", uuid)
    manifest = json.loads(out)
    assert manifest["acKind"] == "PodManifest"
    assert manifest["apps"][0]["app"]["environment"][-1] == {"name": "A", "value": "1"}


def test_run_passes_the_arguments_after_the_double_dash(cli: Cli, image_file: Path) -> None:
    args = ["--dir", str(cli.data), "--insecure-options", "image", "run", str(image_file)]
    args += ["--exec", "/bin/sh", "--net", "host", "--", "-c", "echo --net none"]
    with pytest.raises(Executed) as executed:
        main(args, host=cli.host)
    assert executed.value.argv[-4:] == ["--", "/bin/sh", "-c", "echo --net none"]
    assert "--private-network" not in executed.value.argv


def test_run_prepared(cli: Cli, image_file: Path) -> None:
    _, out, _ = cli("prepare", str(image_file))
    uuid = out.strip()
    with pytest.raises(Executed) as executed:
        main(["--dir", str(cli.data), "run-prepared", uuid], host=cli.host)
    assert executed.value.states == {uuid: PodState.RUNNING}


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["run", "IMAGE", "--net", "bridge"], 254, "fleet-pod: invalid --net 'bridge'"),
        (["prepare", "IMAGE", "--volume", "x"], 254, "fleet-pod: invalid --volume 'x'"),
        (["prepare", "example.com/none"], 254, "fleet-pod: no image matches"),
        (["status", "ffff"], 254, "fleet-pod: no pod matches 'ffff'"),
        (["cat-manifest", "ffff"], 254, "fleet-pod: no pod matches 'ffff'"),
        (["run-prepared", "ffff"], 254, "fleet-pod: no pod matches 'ffff'"),
        (["gc", "--grace-period", "soon"], 254, "fleet-pod: invalid --grace-period 'soon'"),
        (["gc", "--expire-prepared", "1y"], 254, "fleet-pod: invalid --expire-prepared '1y'"),
        (["status"], 2, "Missing argument"),
        (["run", "IMAGE", "--bogus"], 2, "No such option: --bogus"),
        (["nonsense"], 2, "No such command"),
        ([], 2, "Usage: fleet-pod"),
    ],
)
def test_errors_and_exit_codes(
    cli: Cli, image_file: Path, args: list[str], code: int, message: str
) -> None:
    args = [str(image_file) if arg == "IMAGE" else arg for arg in args]
    result, out, err = cli(*args)
    assert result == code
    assert message in err + out


def test_an_unknown_insecure_option_is_refused(cli: Cli) -> None:
    code, _, err = cli("--insecure-options", "everything", "list", insecure=False)
    assert code == 254
    assert "fleet-pod: unknown --insecure-options value 'everything'" in err


def test_the_data_dir_comes_from_the_environment(
    cli: Cli, image_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLEET_POD_DATA_DIR", str(cli.data))
    assert main(["--insecure-options", "image", "prepare", str(image_file)], host=cli.host) == 0
    uuid = capsys.readouterr().out.strip()
    assert [pod.uuid for pod in cli.pods()] == [uuid]


def test_gc_collects_expired_and_exited_pods(cli: Cli, image_file: Path) -> None:
    exited = cli.exited_pod(image_file)
    _, out, _ = cli("prepare", str(image_file))
    prepared = out.strip()
    code, out, err = cli("gc")
    assert (code, err) == (0, "")
    assert out == f"pod {exited.uuid} moved to garbage: exited\n"
    assert [(p.uuid, p.state) for p in cli.pods()] == [
        (exited.uuid, PodState.EXITED_GARBAGE),
        (prepared, PodState.PREPARED),
    ]
    images = ImageStore(cli.data / "images")
    image_id = exited.image_id
    assert image_id is not None
    assert images.trees() == {image_id}  # both pods use it: kept
    code, out, _ = cli("gc", "--grace-period", "0s", "--expire-prepared", "0")
    assert code == 0
    assert f"pod {exited.uuid} deleted" in out
    assert f"pod {prepared} deleted" in out
    assert f"tree of image {image_id[:39]} removed: no pod uses it" in out
    assert cli.pods() == []
    assert images.trees() == set()
    assert [record.id for record in images.list()] == [image_id]  # the image stays


def test_gc_in_exec_stop_post_records_the_exit_status(
    cli: Cli, image_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli.host.cgroup = "0::/system.slice/web.service\n"
    exited = cli.exited_pod(image_file)
    assert exited.unit == "web.service"
    monkeypatch.setenv("EXIT_CODE", "exited")
    monkeypatch.setenv("EXIT_STATUS", "3")
    code, _, _ = cli("gc", "--mark-only", "--grace-period", "0s")
    assert code == 0
    (pod,) = cli.pods()
    assert (pod.state, pod.exit_status) == (PodState.EXITED_GARBAGE, 3)
    _, out, _ = cli("status", pod.uuid)
    assert "exited=true" in out.splitlines()
    assert "app-app=3" in out.splitlines()
    assert "unit=web.service" in out.splitlines()


def test_gc_in_exec_stop_post_withdraws_the_units_pod_address(
    cli: Cli, image_file: Path, monkeypatch: pytest.MonkeyPatch, pod_address_dir: Path
) -> None:
    cli.host.cgroup = "0::/system.slice/web.service\n"
    cli.exited_pod(image_file)
    pod_address_dir.mkdir()
    for unit in ("web.service", "db.service"):
        record = PodAddress("10.244.3.2", "the-units-pod")
        (pod_address_dir / unit).write_bytes(encode_pod_address(record))
    code, _, _ = cli("gc", "--mark-only")  # by hand: not the unit's ExecStopPost=
    assert code == 0
    assert sorted(p.name for p in pod_address_dir.iterdir()) == ["db.service", "web.service"]
    monkeypatch.setenv("EXIT_CODE", "killed")
    monkeypatch.setenv("EXIT_STATUS", "TERM")
    code, _, _ = cli("gc", "--mark-only")
    assert code == 0
    assert [p.name for p in pod_address_dir.iterdir()] == ["db.service"]


def test_rm_removes_what_it_can_and_says_what_it_cannot(cli: Cli, image_file: Path) -> None:
    _, out, _ = cli("prepare", str(image_file))
    uuid = out.strip()
    code, out, err = cli("rm", uuid, "ffff")
    assert code == 254
    assert out == f"{uuid}\n"
    assert err == "fleet-pod: no pod matches 'ffff'\n"
    assert cli.pods() == []


def test_an_image_a_running_pod_uses_is_not_removed(cli: Cli, image_file: Path) -> None:
    _, out, _ = cli("prepare", str(image_file))
    pods = PodStore(cli.data / "pods")
    lock_fd = pods.start_running(pods.lock_prepared(out.strip()))  # this process holds it
    try:
        code, _, err = cli("image", "rm", "example.com/app")
        assert code == 254
        assert f"is used by running pod {out.strip()}; stop it first" in err
    finally:
        os.close(lock_fd)  # the container is gone: the pod is exited
    code, out, err = cli("image", "rm", "example.com/app")
    assert code == 0, err
    assert out.startswith("removed sha512-")


def test_the_image_commands_are_registered(cli: Cli, image_file: Path) -> None:
    code, out, _ = cli("fetch", str(image_file))
    assert code == 0
    image_id = out.strip()
    code, out, _ = cli("image", "list")
    assert code == 0
    assert "example.com/app" in out
    assert image_id[:20] in out
    code, out, _ = cli("trust", "list")
    assert code == 0
    code, out, _ = cli("key", "--help")
    assert code == 0
    assert "generate" in out


@pytest.mark.parametrize(
    ("text", "duration"),
    [
        ("0", timedelta(0)),
        ("0s", timedelta(0)),
        ("30s", timedelta(seconds=30)),
        ("10m", timedelta(minutes=10)),
        ("24h", timedelta(hours=24)),
        ("1h30m", timedelta(minutes=90)),
        ("1.5h", timedelta(minutes=90)),
        ("2d", timedelta(days=2)),
        ("250ms", timedelta(milliseconds=250)),
    ],
)
def test_parse_duration(text: str, duration: timedelta) -> None:
    assert parse_duration("--grace-period", text) == duration


@pytest.mark.parametrize("text", ["", "10", "m", "-5m", "5 m", "10x", "1h 30m", "h1"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(PodError, match=f"invalid --grace-period {text!r}"):
        parse_duration("--grace-period", text)


@pytest.mark.parametrize(
    ("environ", "status"),
    [
        ({}, None),
        ({"EXIT_CODE": "exited", "EXIT_STATUS": "0"}, 0),
        ({"EXIT_CODE": "exited", "EXIT_STATUS": "42"}, 42),
        ({"EXIT_CODE": "killed", "EXIT_STATUS": "TERM"}, 143),
        ({"EXIT_CODE": "dumped", "EXIT_STATUS": "SEGV"}, 139),
        ({"EXIT_CODE": "killed", "EXIT_STATUS": "9"}, 137),
        ({"EXIT_CODE": "killed", "EXIT_STATUS": "NOSUCH"}, None),
        ({"EXIT_CODE": "exited", "EXIT_STATUS": "x"}, None),
        ({"EXIT_STATUS": "1"}, None),
    ],
)
def test_exit_status_from_exec_stop_post_environment(
    environ: dict[str, str], status: int | None
) -> None:
    assert exit_status_from_env(environ) == status


@pytest.mark.parametrize(
    ("ago", "text"),
    [
        (timedelta(0), "0 seconds ago"),
        (timedelta(seconds=1), "1 second ago"),
        (timedelta(seconds=59), "59 seconds ago"),
        (timedelta(minutes=1), "1 minute ago"),
        (timedelta(hours=5, minutes=59), "5 hours ago"),
        (timedelta(days=3), "3 days ago"),
        (timedelta(seconds=-5), "0 seconds ago"),
    ],
)
def test_format_age(ago: timedelta, text: str) -> None:
    assert format_age(NOW - ago, NOW) == text


def running_pod() -> PodInfo:
    return PodInfo(
        uuid="0123abcd-4567-4890-8abc-def012345678",
        state=PodState.RUNNING,
        app_name="web",
        image_id="sha512-" + "a" * 128,
        image_name="example.com/web",
        created=NOW - timedelta(minutes=5),
        started=NOW - timedelta(minutes=4),
        pid=4242,
        exit_status=None,
        unit="web.service",
        stage1="nspawn",
        path=Path("/pods/run/0123abcd-4567-4890-8abc-def012345678"),
    )


def test_status_of_a_running_pod() -> None:
    assert status_lines(running_pod()) == [
        "state=running",
        "created=2024-06-01 11:55:00.000",
        "started=2024-06-01 11:56:00.000",
        "pid=4242",
        "exited=false",
        "unit=web.service",
    ]
    assert status_json(running_pod())["pid"] == 4242


def test_a_pod_being_deleted_after_it_exited_counts_as_exited() -> None:
    pod = running_pod()
    deleting = PodInfo(**{**pod.__dict__, "state": PodState.DELETING, "pid": None})
    assert "exited=false" in status_lines(deleting)
    moved = PodInfo(**{**deleting.__dict__, "path": Path("/pods/exited-garbage/x")})
    assert "exited=true" in status_lines(moved)


def test_list_rows_short_and_full() -> None:
    assert list_rows([running_pod()], full=False, now=NOW) == [
        (
            "0123abcd",
            "web",
            "example.com/web",
            "sha512-" + "a" * 32,
            "running",
            "5 minutes ago",
            "4 minutes ago",
            "-",
        )
    ]
    (row,) = list_rows([running_pod()], full=True, now=NOW)
    assert row[0] == running_pod().uuid
    assert row[5:] == ("2024-06-01 11:55:00.000", "2024-06-01 11:56:00.000", "-")
    (row,) = list_rows([replace(running_pod(), address="10.244.3.2/24")], full=False, now=NOW)
    assert row[-1] == "default:ip4=10.244.3.2"


def test_gc_removes_leftovers_of_killed_imports_after_the_grace_period(cli: Cli) -> None:
    tmp = cli.data / "images" / "tmp"
    tmp.mkdir(parents=True)
    old, young = tmp / "import-killed.tar", tmp / "fetch-recent.aci"
    old.write_bytes(b"half an image")
    young.write_bytes(b"a download")
    two_hours_ago = (datetime.now(UTC) - timedelta(hours=2)).timestamp()
    os.utime(old, (two_hours_ago, two_hours_ago))

    code, out, _ = cli("gc", "--mark-only")
    assert (code, out) == (0, "")
    assert old.exists()

    code, out, err = cli("gc")
    assert (code, err) == (0, "")
    assert (
        out == "leftover import-killed.tar removed from the image store's tmp/: nothing uses it\n"
    )
    assert sorted(os.listdir(tmp)) == [young.name]


def test_max_image_size_bounds_what_an_import_may_expand_to(cli: Cli, tmp_path: Path) -> None:
    bomb = write_gzip_bomb(tmp_path / "bomb.aci", 1 << 30)
    code, out, err = cli("--max-image-size", "16Mi", "fetch", str(bomb))
    assert (code, out) == (254, "")
    assert err == (
        f"fleet-pod: image {str(bomb)!r} expands to more than 16 MiB, the limit for an image "
        "(raise it with --max-image-size)\n"
    )
    assert os.listdir(cli.data / "images" / "tmp") == []
    assert ImageStore(cli.data / "images").list() == []
    code, _, err = cli("--max-image-size", "lots", "fetch", str(bomb))
    assert code == 254
    assert err.startswith("fleet-pod: invalid --max-image-size 'lots': memory quantity")
    code, _, err = cli("--max-image-size", "1000", "fetch", str(bomb))
    assert (code, err) == (
        254,
        "fleet-pod: invalid --max-image-size '1000': below the minimum of 1Mi\n",
    )
