"""The run flags of `fleet-pod run/prepare` and the appc pod manifest built from them.

Role: pure. `parse_*` turn one flag value into a typed value; `build_pod_manifest` joins an
image and the options into a reified appc pod manifest (`acKind: PodManifest`), written to the pod
directory; `pod_spec` reads such a manifest back into what stage1 needs, so `run` and
`run-prepared` execute from the manifest alone.

Invariants:
* Every refusal is a `PodError` whose message names the flag (or image field) and the value.
* A built manifest is reified: one app, its image by id, every image mount point satisfied
  (by a volume of the same name, or an implicit `kind=empty` volume as rkt does), every mount
  naming a declared volume, all targets absolute and none overlapping another.
* Host volume sources must be absolute here; their existence is checked at run time (stage0.py).
* `pod_spec(build_pod_manifest(...))` gives back the options' values (tested).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fleetd.core.container import (
    MIN_MEMORY,
    ContainerError,
    NetMode,
    PortMapping,
    Stage1,
    parse_ports,
    spoken_choices,
)
from fleetpod.errors import PodError
from fleetpod.image_manifest import AC_NAME, App, parse_cpu, parse_memory

if TYPE_CHECKING:
    from fleetpod.store import ImageRecord

POD_AC_KIND = "PodManifest"
POD_AC_VERSION = "0.8.11"
STAGE1_ANNOTATION = "pyfleet.io/stage1"
NET_ANNOTATION = "pyfleet.io/net"
PORTS_ANNOTATION = "pyfleet.io/ports"  # published ports, `8080:80/tcp,...`
TASKS_MAX_ANNOTATION = "pyfleet.io/tasks-max"
UUID_ANNOTATION = "pyfleet.io/uuid"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MODE = re.compile(r"^0?[0-7]{3}$")


@dataclass(frozen=True)
class Volume:
    """A pod volume: a host path bound in, or an empty directory owned by the pod."""

    name: str
    kind: str  # "host" | "empty"
    source: str | None = None
    read_only: bool = False
    recursive: bool = True
    mode: str = "0755"
    uid: int = 0
    gid: int = 0

    def to_json(self) -> dict[str, Any]:
        if self.kind == "host":
            return {
                "name": self.name,
                "kind": "host",
                "source": self.source,
                "readOnly": self.read_only,
                "recursive": self.recursive,
            }
        return {
            "name": self.name,
            "kind": "empty",
            "readOnly": self.read_only,
            "mode": self.mode,
            "uid": self.uid,
            "gid": self.gid,
        }


@dataclass(frozen=True)
class Mount:
    """`--mount volume=NAME,target=PATH`: where a volume appears inside the app."""

    volume: str
    target: str


@dataclass(frozen=True)
class RunOptions:
    """Everything `run`/`prepare` take besides the image (defaults = no flag given)."""

    exec_path: str | None = None
    args: tuple[str, ...] = ()
    environment: tuple[tuple[str, str], ...] = ()
    volumes: tuple[Volume, ...] = ()
    mounts: tuple[Mount, ...] = ()
    memory: int | None = None
    cpu: int | None = None
    tasks_max: int | None = None
    net: NetMode = NetMode.DEFAULT
    stage1: Stage1 = Stage1.NSPAWN
    name: str | None = None
    ports: tuple[PortMapping, ...] = ()


# --- flag parsers ---------------------------------------------------------------------------


def _flag_error(flag: str, value: str, why: str) -> PodError:
    return PodError(f"invalid {flag} {value!r}: {why}")


def parse_set_env(text: str) -> tuple[str, str]:
    """`--set-env K=V` (V may be empty or contain `=`)."""
    name, sep, value = text.partition("=")
    if not sep:
        raise _flag_error("--set-env", text, "expected NAME=VALUE")
    if not _ENV_NAME.match(name):
        raise _flag_error("--set-env", text, f"{name!r} is not a variable name")
    return name, value


def _parse_bool(flag: str, text: str, key: str, value: str) -> bool:
    if value not in ("true", "false"):
        raise _flag_error(flag, text, f"{key} must be true or false, not {value!r}")
    return value == "true"


def _key_values(flag: str, text: str, parts: Iterable[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for part in parts:
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise _flag_error(flag, text, f"expected key=value, got {part!r}")
        if key in found:
            raise _flag_error(flag, text, f"{key} given twice")
        found[key] = value
    return found


def parse_volume(text: str) -> Volume:
    """`NAME,kind=host,source=PATH[,readOnly=B][,recursive=B]` or `NAME,kind=empty[,...]`."""
    flag = "--volume"
    name, *rest = text.split(",")
    if not AC_NAME.match(name):
        raise _flag_error(flag, text, f"volume name {name!r} is not an AC name")
    options = _key_values(flag, text, rest)
    kind = options.pop("kind", None)
    allowed = {
        "host": {"source", "readOnly", "recursive"},
        "empty": {"readOnly", "mode", "uid", "gid"},
    }
    if kind not in allowed:
        raise _flag_error(flag, text, "kind must be host or empty")
    unknown = sorted(set(options) - allowed[kind])
    if unknown:
        raise _flag_error(flag, text, f"unknown option {unknown[0]!r} for kind={kind}")
    read_only = _parse_bool(flag, text, "readOnly", options.get("readOnly", "false"))
    if kind == "host":
        source = options.get("source")
        if not source:
            raise _flag_error(flag, text, "kind=host needs source=PATH")
        if not source.startswith("/"):
            raise _flag_error(flag, text, f"source {source!r} is not an absolute path")
        recursive = _parse_bool(flag, text, "recursive", options.get("recursive", "true"))
        return Volume(name, "host", posixpath.normpath(source), read_only, recursive)
    mode = options.get("mode", "0755")
    if not _MODE.match(mode):
        raise _flag_error(flag, text, f"mode {mode!r} is not an octal mode like 0755")
    ids = {}
    for key in ("uid", "gid"):
        value = options.get(key, "0")
        if not value.isdigit():
            raise _flag_error(flag, text, f"{key} {value!r} is not a non-negative number")
        ids[key] = int(value)
    return Volume(name, "empty", None, read_only, True, mode.zfill(4), ids["uid"], ids["gid"])


def _check_target(flag: str, text: str, target: str) -> str:
    if not target.startswith("/"):
        raise _flag_error(flag, text, f"target {target!r} is not an absolute path")
    normal = posixpath.normpath(target)
    if normal == "/":
        raise _flag_error(flag, text, "target cannot be the root directory")
    return normal


def parse_mount(text: str) -> Mount:
    """`--mount volume=NAME,target=PATH`."""
    flag = "--mount"
    options = _key_values(flag, text, text.split(","))
    unknown = sorted(set(options) - {"volume", "target"})
    if unknown:
        raise _flag_error(flag, text, f"unknown option {unknown[0]!r}")
    if not options.get("volume") or not options.get("target"):
        raise _flag_error(flag, text, "expected volume=NAME,target=PATH")
    return Mount(options["volume"], _check_target(flag, text, options["target"]))


def parse_memory_flag(text: str) -> int:
    """`--memory 256M` in bytes, at least `MIN_MEMORY`: under a unit, stage0 itself runs
    within the limit (it is set on the unit before the image is fetched)."""
    try:
        value = parse_memory(text)
    except PodError as error:
        raise _flag_error("--memory", text, str(error)) from None
    if value <= 0:
        raise _flag_error("--memory", text, "must be more than 0")
    if value < MIN_MEMORY:
        raise _flag_error(
            "--memory", text, "below the minimum of 64M (fleet-pod runs within the limit)"
        )
    return value


def parse_cpu_flag(text: str) -> int:
    """`--cpu 500m` in millicores (> 0)."""
    try:
        value = parse_cpu(text)
    except PodError as error:
        raise _flag_error("--cpu", text, str(error)) from None
    if value <= 0:
        raise _flag_error("--cpu", text, "must be more than 0")
    return value


def parse_net(text: str) -> NetMode:
    try:
        return NetMode(text)
    except ValueError:
        raise _flag_error("--net", text, f"expected {spoken_choices(tuple(NetMode))}") from None


def parse_stage1(text: str) -> Stage1:
    try:
        return Stage1(text)
    except ValueError:
        raise _flag_error("--stage1", text, f"expected {spoken_choices(tuple(Stage1))}") from None


def parse_app_name(text: str) -> str:
    if not AC_NAME.match(text):
        raise _flag_error("--name", text, "not an AC name (lowercase letters, digits and -)")
    return text


def default_app_name(image_name: str) -> str:
    """The image name's last path component as an AC name (`example.com/My_App` -> `my-app`)."""
    last = image_name.rstrip("/").rsplit("/", 1)[-1]
    name = re.sub(r"[^a-z0-9]+", "-", last.lower()).strip("-")
    if not name:
        raise PodError(f"cannot make an app name from image name {image_name!r}; give --name")
    return name


def run_options(
    *,
    exec_path: str | None = None,
    args: Sequence[str] = (),
    set_env: Sequence[str] = (),
    volumes: Sequence[str] = (),
    mounts: Sequence[str] = (),
    memory: str | None = None,
    cpu: str | None = None,
    tasks_max: int | None = None,
    net: str | None = None,
    stage1: str = "nspawn",
    name: str | None = None,
    ports: Sequence[str] = (),
) -> RunOptions:
    """All run flags at once, as the CLI receives them. fly shares the host network."""
    kind = parse_stage1(stage1)
    net_mode = parse_net(net) if net is not None else None
    if kind is Stage1.FLY and net_mode not in (None, NetMode.HOST):
        raise _flag_error("--net", str(net), "the fly stage1 has no network isolation; use host")
    if tasks_max is not None and tasks_max <= 0:
        raise _flag_error("--tasks-max", str(tasks_max), "must be more than 0")
    if exec_path is not None and not exec_path:
        raise _flag_error("--exec", exec_path, "must not be empty")
    try:
        mappings = parse_ports(list(ports), "invalid --port")
    except ContainerError as exc:
        raise PodError(str(exc)) from None
    if mappings and net_mode not in (None, NetMode.DEFAULT):
        raise _flag_error("--port", ports[0], "needs --net default (the pod's own address)")
    return RunOptions(
        exec_path=exec_path,
        args=tuple(args),
        environment=tuple(parse_set_env(item) for item in set_env),
        volumes=tuple(parse_volume(item) for item in volumes),
        mounts=tuple(parse_mount(item) for item in mounts),
        memory=None if memory is None else parse_memory_flag(memory),
        cpu=None if cpu is None else parse_cpu_flag(cpu),
        tasks_max=tasks_max,
        net=net_mode or (NetMode.HOST if kind is Stage1.FLY else NetMode.DEFAULT),
        stage1=kind,
        name=None if name is None else parse_app_name(name),
        ports=mappings,
    )


# --- the pod manifest -----------------------------------------------------------------------


def _merge_environment(
    image: Iterable[tuple[str, str]], overrides: Iterable[tuple[str, str]]
) -> list[tuple[str, str]]:
    merged = dict(image)
    merged.update(overrides)
    return list(merged.items())


def _overlaps(first: str, second: str) -> bool:
    return first == second or first.startswith(second + "/") or second.startswith(first + "/")


def _image_limit(app: App | None, isolator: str, parse: Any) -> int | None:
    for name, value in app.isolators if app else ():
        if name == isolator and isinstance(value, dict) and "limit" in value:
            return int(parse(str(value["limit"])))
    return None


def _plan_mounts(
    app: App | None, options: RunOptions
) -> tuple[list[Volume], list[tuple[str, str]]]:
    """Volumes (declared + implicit) and the (volume, target) mounts, validated."""
    volumes = list(options.volumes)
    names = [volume.name for volume in volumes]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise PodError(f"--volume {duplicates[0]!r} is declared more than once")
    mounts: list[tuple[str, str]] = []
    for mount in options.mounts:
        if mount.volume not in names:
            raise PodError(f"--mount volume={mount.volume} names no --volume")
        mounts.append((mount.volume, mount.target))
    for point in app.mount_points if app else ():
        target = posixpath.normpath(point.path)
        if any(existing == target for _, existing in mounts):
            continue  # an explicit --mount already serves this mount point
        if point.name not in names:
            volumes.append(Volume(point.name, "empty", read_only=point.read_only))
            names.append(point.name)
        mounts.append((point.name, target))
    for index, (volume, target) in enumerate(mounts):
        for other_volume, other in mounts[index + 1 :]:
            if _overlaps(target, other):
                raise PodError(
                    f"mount targets overlap: {target!r} (volume {volume}) and "
                    f"{other!r} (volume {other_volume})"
                )
    return volumes, mounts


def build_pod_manifest(image: ImageRecord, options: RunOptions, uuid: str) -> dict[str, Any]:
    """The reified appc PodManifest for one app from `image` with the run options applied."""
    manifest = image.manifest
    app = manifest.app
    if app is None and options.exec_path is None:
        raise PodError(f"image {manifest.name} has no app to run; give --exec")
    if options.exec_path is not None:
        argv = (options.exec_path, *options.args)
    else:
        assert app is not None
        argv = (*app.exec, *options.args)
    if options.stage1 is Stage1.FLY and options.net is not NetMode.HOST:
        raise PodError("the fly stage1 has no network isolation; --net must be host")
    volumes, mounts = _plan_mounts(app, options)
    app_name = options.name or default_app_name(manifest.name)
    memory = options.memory or _image_limit(app, "resource/memory", parse_memory)
    cpu = options.cpu or _image_limit(app, "resource/cpu", parse_cpu)
    isolators: list[dict[str, Any]] = []
    if memory is not None:
        isolators.append({"name": "resource/memory", "value": {"limit": str(memory)}})
    if cpu is not None:
        isolators.append({"name": "resource/cpu", "value": {"limit": f"{cpu}m"}})
    annotations = [
        {"name": STAGE1_ANNOTATION, "value": options.stage1.value},
        {"name": NET_ANNOTATION, "value": options.net.value},
        {"name": UUID_ANNOTATION, "value": uuid},
    ]
    if options.tasks_max is not None:
        annotations.append({"name": TASKS_MAX_ANNOTATION, "value": str(options.tasks_max)})
    if options.ports:
        value = ",".join(port.spec for port in options.ports)
        annotations.append({"name": PORTS_ANNOTATION, "value": value})
    environment = _merge_environment(app.environment if app else (), options.environment)
    app_json = {
        "exec": list(argv),
        "user": app.user if app else "0",
        "group": app.group if app else "0",
        "environment": [{"name": n, "value": v} for n, v in environment],
        "workingDirectory": app.working_directory if app else "/",
        "mountPoints": [
            {"name": m.name, "path": m.path, "readOnly": m.read_only}
            for m in (app.mount_points if app else ())
        ],
        "isolators": [{"name": n, "value": v} for n, v in (app.isolators if app else ())],
    }
    return {
        "acKind": POD_AC_KIND,
        "acVersion": POD_AC_VERSION,
        "apps": [
            {
                "name": app_name,
                "image": {
                    "id": image.id,
                    "name": manifest.name,
                    "labels": [{"name": n, "value": v} for n, v in manifest.labels],
                },
                "app": app_json,
                "mounts": [{"volume": v, "path": p} for v, p in mounts],
            }
        ],
        "volumes": [volume.to_json() for volume in volumes],
        "isolators": isolators,
        "annotations": annotations,
    }
