"""`fleet-pod`: the typer app (rkt's CLI surface for pods) and `main`.

Role: parse the command line, build `PodSettings` (global flags, then `FLEET_POD_DATA_DIR` /
`FLEET_POD_CONFIG_DIR`, then the system defaults) into `ctx.obj`, and call one function of
`run`/`pods` per command. The image, key, trust and fetch commands come from `cli_images`.

Invariants: `main` returns the exit code and never raises for a refusal: a `PodError` is
printed as `fleet-pod: <message>` on stderr with exit code 254 (rkt's), a usage error exits 2.
`run` and `run-prepared` do not return when they succeed: the process becomes the container.
Tests pass `host=` to `main` so nothing mounts, execs or talks to systemd.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import traceback
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from fleetd.core.container import STAGE1S, NetMode, spoken_choices
from fleetpod import stage0
from fleetpod.cli_images import fetch_command, image_app, key_app, trust_command
from fleetpod.config import PodPaths, PodSettings, parse_insecure_options, parse_max_image_size
from fleetpod.errors import PodError
from fleetpod.image import SHORT_IMAGE_ID
from fleetpod.pod_manifest import RunOptions, run_options
from fleetpod.pods import GcAction, PodInfo, PodState, PodStore, plan_gc
from fleetpod.stage1 import own_service_unit
from fleetpod.store import ImageStore
from fleetpod.unit_address import withdraw_unit_address

EXIT_FAILURE = 254
HOST_KEY = "fleet_pod.host"

app = typer.Typer(
    name="fleet-pod",
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def fleet_pod(
    ctx: typer.Context,
    *,
    data_dir: Annotated[
        Path | None, typer.Option("--dir", help="Data directory (env FLEET_POD_DATA_DIR).")
    ] = None,
    config_dir: Annotated[
        Path | None, typer.Option("--config", help="Config directory (env FLEET_POD_CONFIG_DIR).")
    ] = None,
    insecure_options: Annotated[
        str,
        typer.Option("--insecure-options", help="none, image, http, tls, modes, all-fetch, all."),
    ] = "none",
    max_image_size: Annotated[
        str,
        typer.Option(
            "--max-image-size",
            help="Largest image to fetch or decompress, e.g. 8Gi (default 4Gi).",
        ),
    ] = "4Gi",
    debug: Annotated[bool, typer.Option("--debug", help="Tracebacks on errors.")] = False,
) -> None:
    """fleet-pod: rkt-style pods run by systemd (stage0: fetch, verify, prepare, exec stage1)."""
    if isinstance(ctx.obj, stage0.Host):
        ctx.meta[HOST_KEY] = ctx.obj
    ctx.obj = PodSettings(
        paths=PodPaths.resolve(data_dir, config_dir),
        insecure=parse_insecure_options(insecure_options),
        debug=debug,
        max_image_bytes=parse_max_image_size(max_image_size),
    )


def _settings(ctx: typer.Context) -> PodSettings:
    settings = ctx.find_object(PodSettings)
    assert settings is not None
    return settings


def _pods(ctx: typer.Context) -> PodStore:
    return PodStore(_settings(ctx).paths.pods_dir)


def _warn(message: str) -> None:
    typer.echo(f"fleet-pod: {message}", err=True)


ImageArg = Annotated[str, typer.Argument(help="Image id, name[:version], path or URL.")]
ArgsArg = Annotated[
    list[str] | None, typer.Argument(help="Arguments for the app (after --).", show_default=False)
]
ExecOpt = Annotated[str | None, typer.Option("--exec", help="Run this instead of the image's.")]
SetEnvOpt = Annotated[list[str] | None, typer.Option("--set-env", help="NAME=VALUE, repeatable.")]
VolumeOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--volume",
        help="NAME,kind=host,source=PATH[,readOnly=B][,recursive=B] or "
        "NAME,kind=empty[,mode=0755,uid=0,gid=0].",
    ),
]
MountOpt = Annotated[
    list[str] | None, typer.Option("--mount", help="volume=NAME,target=PATH, repeatable.")
]
MemoryOpt = Annotated[str | None, typer.Option("--memory", help="Memory limit, e.g. 256M.")]
CpuOpt = Annotated[str | None, typer.Option("--cpu", help="CPU limit, e.g. 500m or 2.")]
TasksOpt = Annotated[int | None, typer.Option("--tasks-max", help="Most tasks (TasksMax=).")]
NetOpt = Annotated[str | None, typer.Option("--net", help=f"{spoken_choices(tuple(NetMode))}.")]
PortOpt = Annotated[
    list[str] | None,
    typer.Option("--port", help="NODE-PORT:POD-PORT[/tcp|udp] on the node's address, repeatable."),
]
Stage1Opt = Annotated[str, typer.Option("--stage1", help=f"{spoken_choices(STAGE1S)}.")]
NameOpt = Annotated[str | None, typer.Option("--name", help="The app's name.")]
SignatureOpt = Annotated[Path | None, typer.Option("--signature", help="Signature file.")]


def _options(**flags: Any) -> RunOptions:
    """RunOptions from the flag values of `run`/`prepare` (which pass their `locals()`)."""
    return run_options(
        exec_path=flags["exec_path"],
        args=flags["args"] or (),
        set_env=flags["set_env"] or (),
        volumes=flags["volume"] or (),
        mounts=flags["mount"] or (),
        memory=flags["memory"],
        cpu=flags["cpu"],
        tasks_max=flags["tasks_max"],
        net=flags["net"],
        stage1=flags["stage1"],
        name=flags["name"],
        ports=flags["port"] or (),
    )


@app.command("run")
def run_command(
    ctx: typer.Context,
    image: ImageArg,
    args: ArgsArg = None,
    *,
    exec_path: ExecOpt = None,
    set_env: SetEnvOpt = None,
    volume: VolumeOpt = None,
    mount: MountOpt = None,
    memory: MemoryOpt = None,
    cpu: CpuOpt = None,
    tasks_max: TasksOpt = None,
    net: NetOpt = None,
    port: PortOpt = None,
    stage1: Stage1Opt = "nspawn",
    name: NameOpt = None,
    signature: SignatureOpt = None,
) -> None:
    """Run IMAGE in a new pod; this process becomes the container."""
    options = _options(**locals())
    host = ctx.meta.get(HOST_KEY)
    stage0.run(_settings(ctx), image, options, warn=_warn, signature=signature, host=host)


@app.command("prepare")
def prepare_command(
    ctx: typer.Context,
    image: ImageArg,
    args: ArgsArg = None,
    *,
    exec_path: ExecOpt = None,
    set_env: SetEnvOpt = None,
    volume: VolumeOpt = None,
    mount: MountOpt = None,
    memory: MemoryOpt = None,
    cpu: CpuOpt = None,
    tasks_max: TasksOpt = None,
    net: NetOpt = None,
    port: PortOpt = None,
    stage1: Stage1Opt = "nspawn",
    name: NameOpt = None,
    signature: SignatureOpt = None,
) -> None:
    """Prepare a pod for IMAGE and print its UUID (start it with run-prepared)."""
    options = _options(**locals())
    pod = stage0.prepare(_settings(ctx), image, options, warn=_warn, signature=signature)
    typer.echo(pod.uuid)


@app.command("run-prepared")
def run_prepared_command(ctx: typer.Context, uuid: str) -> None:
    """Run a prepared pod; this process becomes the container."""
    stage0.run_prepared(_settings(ctx), uuid, host=ctx.meta.get(HOST_KEY))


def format_time(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def format_age(moment: datetime | None, now: datetime) -> str:
    """`12 seconds ago`, `3 minutes ago`, `2 hours ago`, `5 days ago`."""
    if moment is None:
        return ""
    seconds = max(0, int((now - moment).total_seconds()))
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''} ago"
    return f"{seconds} second{'s' if seconds != 1 else ''} ago"


def network_column(pod: PodInfo) -> str:
    """rkt's NETWORKS cell: `default:ip4=10.244.3.2`, or `-` off the cluster network."""
    return f"default:ip4={pod.address.split('/')[0]}" if pod.address else "-"


def list_rows(pods: list[PodInfo], *, full: bool, now: datetime) -> list[tuple[str, ...]]:
    """The `list` table (without its header)."""
    when = format_time if full else (lambda moment: format_age(moment, now))
    return [
        (
            pod.uuid if full else pod.uuid[:8],
            pod.app_name or "-",
            pod.image_name or "-",
            (pod.image_id or "-") if full else (pod.image_id or "-")[:SHORT_IMAGE_ID],
            pod.state.value,
            when(pod.created),
            when(pod.started) or "-",
            network_column(pod),
        )
        for pod in pods
    ]


@app.command("list")
def list_command(
    ctx: typer.Context,
    full: Annotated[bool, typer.Option("--full", help="Whole UUIDs, ids, times.")] = False,
    no_legend: Annotated[bool, typer.Option("--no-legend", help="No header line.")] = False,
) -> None:
    """List pods."""
    rows = list_rows(_pods(ctx).list(), full=full, now=datetime.now(UTC))
    header = ("UUID", "APP", "IMAGE NAME", "IMAGE ID", "STATE", "CREATED", "STARTED", "NETWORKS")
    table = rows if no_legend else [header, *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))] if table else []
    for row in table:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        typer.echo("  ".join(cells).rstrip())


def _exited(pod: PodInfo) -> bool:
    if pod.state is PodState.DELETING:
        return pod.path.parent.name == "exited-garbage"
    return pod.state in (PodState.EXITED, PodState.EXITED_GARBAGE)


class StatusFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


def status_lines(pod: PodInfo) -> list[str]:
    """rkt's `status` output: key=value lines."""
    lines = [f"state={pod.state.value}", f"created={format_time(pod.created)}"]
    if pod.started is not None:
        lines.append(f"started={format_time(pod.started)}")
    if pod.pid is not None and pod.state is PodState.RUNNING:
        lines.append(f"pid={pod.pid}")
    lines.append(f"exited={'true' if _exited(pod) else 'false'}")
    if pod.exit_status is not None and pod.app_name:
        lines.append(f"app-{pod.app_name}={pod.exit_status}")
    if pod.unit:
        lines.append(f"unit={pod.unit}")
    if pod.address:
        lines.append(f"networks={network_column(pod)}")
    return lines


def status_json(pod: PodInfo) -> dict[str, Any]:
    return {
        "uuid": pod.uuid,
        "state": pod.state.value,
        "created": pod.created.isoformat(),
        "started": pod.started.isoformat() if pod.started else None,
        "pid": pod.pid if pod.state is PodState.RUNNING else None,
        "exited": _exited(pod),
        "app_name": pod.app_name,
        "exit_status": pod.exit_status,
        "image_name": pod.image_name,
        "image_id": pod.image_id,
        "unit": pod.unit,
        "stage1": pod.stage1,
        "address": pod.address.split("/")[0] if pod.address else None,
    }


@app.command("status")
def status_command(
    ctx: typer.Context,
    uuid: str,
    output: Annotated[StatusFormat, typer.Option("--format")] = StatusFormat.TEXT,
) -> None:
    """Show a pod's state (key=value lines, or --format json)."""
    pod = _pods(ctx).get(uuid)
    if output is StatusFormat.JSON:
        typer.echo(json.dumps(status_json(pod), indent=2))
    else:
        typer.echo("\n".join(status_lines(pod)))


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(flag: str, text: str) -> timedelta:
    """Go-style durations: `30s`, `10m`, `24h`, `1h30m`, `0s` (or `0`)."""
    if text.strip() == "0":
        return timedelta(0)
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text.strip():
        raise PodError(f"invalid {flag} {text!r}: expected a duration like 30s, 10m, 24h")
    return timedelta(seconds=sum(float(n) * _DURATION_UNITS[u] for n, u in parts))


def exit_status_from_env(environ: Mapping[str, str]) -> int | None:
    """The main process's status as systemd gives it to ExecStopPost= (128+N when killed)."""
    code, status = environ.get("EXIT_CODE"), environ.get("EXIT_STATUS", "")
    if code == "exited" and status.isdigit():
        return int(status)
    if code in ("killed", "dumped"):
        try:
            return 128 + signal.Signals["SIG" + status].value
        except KeyError:
            return int(status) + 128 if status.isdigit() else None
    return None


@app.command("gc")
def gc_command(
    ctx: typer.Context,
    grace_period: Annotated[str, typer.Option("--grace-period", help="e.g. 30m; 0s: now.")] = "30m",
    expire_prepared: Annotated[str, typer.Option("--expire-prepared")] = "24h",
    mark_only: Annotated[
        bool, typer.Option("--mark-only", help="Only move exited/expired pods to garbage.")
    ] = False,
) -> None:
    """Mark exited pods as garbage, delete garbage older than the grace period, remove the
    rendered trees no pod uses any more (an image renders again when a pod needs it) and what
    killed imports left in the image store's tmp/ (older than the grace period)."""
    grace = parse_duration("--grace-period", grace_period)
    expire = parse_duration("--expire-prepared", expire_prepared)
    pods = _pods(ctx)
    status = exit_status_from_env(os.environ)
    if status is not None:  # run as ExecStopPost=: record the pod's exit status first
        host: stage0.Host = ctx.meta.get(HOST_KEY) or stage0.Host()
        unit = own_service_unit(_read_cgroup(host))
        if unit is not None:
            pods.record_exit(unit, status)
            withdraw_unit_address(unit)  # its pod stopped: no address in the unit's state
    now = datetime.now(UTC)
    tasks = plan_gc(pods.list(), now=now, grace=grace, expire_prepared=expire)
    if mark_only:
        tasks = [task for task in tasks if task.action is not GcAction.SWEEP]
    report = pods.apply(tasks, now=now, unmount=stage0.lazy_unmount)
    for task in report.done:
        verb = "deleted" if task.action is GcAction.SWEEP else "moved to garbage"
        typer.echo(f"pod {task.uuid} {verb}: {task.reason}")
    for task, why in report.skipped:
        _warn(f"pod {task.uuid} not collected ({task.action}): {why}")
    if not mark_only:
        images = ImageStore(_settings(ctx).paths.images_dir)
        for image_id in unused_trees(images.trees(), pods.list()):
            images.remove_tree(image_id)
            typer.echo(f"tree of image {image_id[:39]} removed: no pod uses it")
        for name in images.remove_leftovers(now=now, grace=grace):
            typer.echo(f"leftover {name} removed from the image store's tmp/: nothing uses it")


def unused_trees(trees: set[str], pods: Sequence[PodInfo]) -> list[str]:
    """The rendered trees (by image id) that no pod left in the pods directory refers to."""
    return sorted(trees - {pod.image_id for pod in pods})


def _read_cgroup(host: stage0.Host) -> str:
    try:
        return host.read_cgroup()
    except OSError:
        return ""


@app.command("rm")
def rm_command(ctx: typer.Context, uuids: Annotated[list[str], typer.Argument()]) -> None:
    """Delete pods that are not running (exited, prepared, garbage)."""
    pods = _pods(ctx)
    failed = False
    for uuid in uuids:
        try:
            removed = pods.remove(uuid, now=datetime.now(UTC), unmount=stage0.lazy_unmount)
        except PodError as error:
            _warn(str(error))
            failed = True
        else:
            typer.echo(removed.uuid)
    if failed:
        raise typer.Exit(EXIT_FAILURE)


@app.command("cat-manifest")
def cat_manifest_command(ctx: typer.Context, uuid: str) -> None:
    """Print a pod's manifest."""
    pod = _pods(ctx).get(uuid)
    typer.echo((pod.path / "pod").read_text().rstrip("\n"))


app.command("fetch")(fetch_command)
app.command("trust")(trust_command)
app.add_typer(image_app, name="image")
app.add_typer(key_app, name="key")


def main(argv: list[str] | None = None, *, host: stage0.Host | None = None) -> int:
    """Run one fleet-pod command; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    command = typer.main.get_command(app)
    try:
        command.main(args=args, prog_name="fleet-pod", standalone_mode=True, obj=host)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except PodError as error:
        if "--debug" in args:
            traceback.print_exc()
        sys.stderr.write(f"fleet-pod: {error}\n")
        return EXIT_FAILURE
    return 0


if __name__ == "__main__":
    sys.exit(main())
