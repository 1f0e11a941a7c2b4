"""Stage1, as pure builders: the nspawn command line, the fly steps, limits as unit properties.

Role: decide what stage0 (stage0.py) executes; nothing here touches the system. Input is the pod
directory, the pod manifest (read back by `pod_spec`, so `run` and `run-prepared` execute from
the manifest alone) and facts stage0 read (the cgroup file, the image's passwd/group files);
output is argv lists and typed steps.

Invariants:
* nspawn never registers with machined (`--register=no`); it keeps the caller's unit
  (`--keep-unit`) when stage0 runs inside a service unit or a scope it made for limits, so
  systemd's limits and stop semantics apply to the whole container.
* The container's identity derives from the pod UUID: `--uuid=<32 hex>`, machine and hostname
  `fleet-<first 8 hex>`.
* `--net host` is the only mode that shares the host's network; `none` gives a private network
  with loopback only; `default` runs in the pod's own namespace on the cluster network
  (`--network-namespace-path=`, made by `fleetpod.network`) when the node has one, else it is
  loopback only like `none`.
* The fly plan mounts only under the pod's rootfs and only in the private mount namespace
  stage0 entered before running it; it drops privileges (groups, gid, uid) before the exec.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from fleetd.core.container import NetMode, PortMapping, Stage1, parse_port
from fleetd.core.quantity import cpu_quota
from fleetpod.errors import PodError
from fleetpod.image_manifest import parse_cpu, parse_memory
from fleetpod.pod_manifest import (
    NET_ANNOTATION,
    PORTS_ANNOTATION,
    STAGE1_ANNOTATION,
    TASKS_MAX_ANNOTATION,
    Volume,
)

NSPAWN = "systemd-nspawn"
NSPAWN_ENV = {
    "SYSTEMD_NSPAWN_USE_CGNS": "0",
    "SYSTEMD_NSPAWN_LOCK": "0",
    "SYSTEMD_LOG_LEVEL": "err",
}
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18

_UNIT_SUFFIXES = (".service", ".scope", ".slice")


class Limits(Protocol):
    """Anything carrying the resource limits (`RunOptions`, `PodSpec`)."""

    @property
    def memory(self) -> int | None: ...
    @property
    def cpu(self) -> int | None: ...
    @property
    def tasks_max(self) -> int | None: ...


# --- the pod manifest, read back ---------------------------------------------------------


@dataclass(frozen=True)
class Bind:
    """One mount of the app, resolved: the volume it comes from and the target inside the root."""

    volume: Volume
    target: str
    read_only: bool


@dataclass(frozen=True)
class PodSpec:
    """What stage1 needs, read back from a pod manifest."""

    app_name: str
    image_id: str
    image_name: str
    exec: tuple[str, ...]
    user: str
    group: str
    environment: tuple[tuple[str, str], ...]
    working_directory: str
    binds: tuple[Bind, ...]
    net: NetMode
    stage1: Stage1
    memory: int | None = None
    cpu: int | None = None
    tasks_max: int | None = None
    volumes: tuple[Volume, ...] = ()
    ports: tuple[PortMapping, ...] = ()


def _volume_from_json(item: Mapping[str, Any]) -> Volume:
    if item.get("kind") == "host":
        return Volume(
            item["name"],
            "host",
            item["source"],
            bool(item.get("readOnly", False)),
            bool(item.get("recursive", True)),
        )
    return Volume(
        item["name"],
        "empty",
        None,
        bool(item.get("readOnly", False)),
        True,
        str(item.get("mode", "0755")),
        int(item.get("uid", 0)),
        int(item.get("gid", 0)),
    )


def annotation(manifest: Mapping[str, Any], name: str) -> str | None:
    for item in manifest.get("annotations", []):
        if item.get("name") == name:
            return str(item.get("value"))
    return None


def pod_spec(manifest: Mapping[str, Any]) -> PodSpec:
    """What stage1 runs, from a manifest made by `build_pod_manifest` (one app)."""
    try:
        (entry,) = manifest["apps"]
        app = entry["app"]
        volumes = {v["name"]: _volume_from_json(v) for v in manifest.get("volumes", [])}
        read_only_points = {
            posixpath.normpath(m["path"]) for m in app.get("mountPoints", []) if m.get("readOnly")
        }
        binds = tuple(
            Bind(
                volume=volumes[m["volume"]],
                target=m["path"],
                read_only=volumes[m["volume"]].read_only or m["path"] in read_only_points,
            )
            for m in entry.get("mounts", [])
        )
        limits = {i["name"]: i["value"]["limit"] for i in manifest.get("isolators", [])}
        tasks_max = annotation(manifest, TASKS_MAX_ANNOTATION)
        return PodSpec(
            app_name=entry["name"],
            image_id=entry["image"]["id"],
            image_name=entry["image"].get("name", ""),
            exec=tuple(app["exec"]),
            user=str(app.get("user", "0")),
            group=str(app.get("group", "0")),
            environment=tuple((e["name"], e["value"]) for e in app.get("environment", [])),
            working_directory=app.get("workingDirectory") or "/",
            binds=binds,
            net=NetMode(annotation(manifest, NET_ANNOTATION) or NetMode.DEFAULT),
            stage1=Stage1(annotation(manifest, STAGE1_ANNOTATION) or Stage1.NSPAWN),
            memory=parse_memory(limits["resource/memory"]) if "resource/memory" in limits else None,
            cpu=parse_cpu(limits["resource/cpu"]) if "resource/cpu" in limits else None,
            tasks_max=int(tasks_max) if tasks_max is not None else None,
            volumes=tuple(volumes.values()),
            ports=tuple(
                parse_port(item)
                for item in (annotation(manifest, PORTS_ANNOTATION) or "").split(",")
                if item
            ),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise PodError(f"pod manifest is not one fleet-pod can run: {error!r}") from None


# --- nspawn ---------------------------------------------------------------------------------


def machine_name(uuid: str) -> str:
    """`fleet-<first 8 hex digits of the pod UUID>`: nspawn's machine name and hostname."""
    return "fleet-" + uuid.replace("-", "")[:8]


def _escape_bind(path: str) -> str:
    return path.replace("\\", "\\\\").replace(":", "\\:")


def volume_dir(pod_dir: Path, name: str) -> Path:
    """Where a `kind=empty` volume lives: `<pod>/volumes/<name>`."""
    return pod_dir / "volumes" / name


def bind_source(pod_dir: Path, volume_kind: str, source: str | None, name: str) -> str:
    return source if volume_kind == "host" and source else str(volume_dir(pod_dir, name))


def app_environment(spec: PodSpec) -> dict[str, str]:
    """The app's environment: a default PATH, `AC_APP_NAME`, then the manifest's variables."""
    environment = {"PATH": DEFAULT_PATH, "AC_APP_NAME": spec.app_name}
    environment.update(spec.environment)
    return environment


KILL_SIGNAL = "SIGRTMIN+3"


def nspawn_command(
    pod_dir: Path,
    manifest: Mapping[str, Any],
    *,
    uuid: str,
    keep_unit: bool,
    app: PodSpec | None = None,
    net: str | None = None,
    console: str | None = None,
    network_namespace: Path | None = None,
) -> list[str]:
    """The systemd-nspawn argv that runs the pod's app as PID 2 in `<pod>/rootfs`.

    `console="pipe"` hands nspawn's stdio to the app unchanged (logs to journald's stream);
    None keeps nspawn's default (interactive on a terminal).
    """
    spec = app if app is not None else pod_spec(manifest)
    mode = NetMode(net) if net is not None else spec.net
    argv = [NSPAWN, "--quiet", "--register=no"]
    if keep_unit:
        argv.append("--keep-unit")
    argv += [
        "--as-pid2",
        f"--uuid={uuid.replace('-', '')}",
        f"--machine={machine_name(uuid)}",
        f"--hostname={machine_name(uuid)}",
        f"--directory={pod_dir / 'rootfs'}",
    ]
    if mode is NetMode.DEFAULT and network_namespace is not None:
        argv.append(f"--network-namespace-path={network_namespace}")
    elif mode is not NetMode.HOST:
        argv.append("--private-network")
    if console is not None:
        argv.append(f"--console={console}")
    # nspawn gives PID 2 a default PATH; the manifest's variables (PATH included) override it
    environment = {"AC_APP_NAME": spec.app_name, **dict(spec.environment)}
    argv += [f"--setenv={name}={value}" for name, value in environment.items()]
    argv.append(f"--chdir={spec.working_directory}")
    if spec.user not in ("0", "root"):
        argv.append(f"--user={spec.user}")
    for bind in spec.binds:
        volume = bind.volume
        source = bind_source(pod_dir, volume.kind, volume.source, volume.name)
        option = "--bind-ro" if bind.read_only else "--bind"
        suffix = "" if volume.recursive else ":norbind"
        argv.append(f"{option}={_escape_bind(source)}:{_escape_bind(bind.target)}{suffix}")
    # nspawn sends its kill signal to the container's PID 1, the stub init of --as-pid2, which
    # halts on SIGRTMIN+3 (systemd's halt signal) by sending SIGTERM to the app and then exits
    # 0; it ignores a plain SIGTERM, so a unit stop would time out and end `failed`.
    argv += [f"--kill-signal={KILL_SIGNAL}", "--", *spec.exec]
    return argv


# --- fly ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MountStep:
    """mount(2): `target` is a path inside the pod rootfs (made if missing, like the source)."""

    source: str | None
    target: Path
    fstype: str | None
    flags: int
    data: str | None = None


@dataclass(frozen=True)
class ChrootStep:
    path: Path


@dataclass(frozen=True)
class ChdirStep:
    path: str


@dataclass(frozen=True)
class SetIdsStep:
    """Drop supplementary groups, then set gid, then uid (numeric)."""

    uid: int
    gid: int


@dataclass(frozen=True)
class ExecStep:
    argv: tuple[str, ...]
    environment: tuple[tuple[str, str], ...]


FlyStep = MountStep | ChrootStep | ChdirStep | SetIdsStep | ExecStep


def fly_plan(pod_dir: Path, spec: PodSpec, *, uid: int, gid: int) -> list[FlyStep]:
    """rkt's fly stage1: API filesystems and volumes bound into the rootfs, chroot, exec."""
    rootfs = pod_dir / "rootfs"

    def inside(path: str) -> Path:
        return rootfs / path.lstrip("/")

    steps: list[FlyStep] = [
        MountStep(api, inside(api), None, MS_BIND | MS_REC) for api in ("/dev", "/proc", "/sys")
    ]
    steps.append(MountStep("tmpfs", inside("/tmp"), "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777"))
    for bind in spec.binds:
        volume = bind.volume
        source = bind_source(pod_dir, volume.kind, volume.source, volume.name)
        recursive = MS_REC if volume.recursive else 0
        steps.append(MountStep(source, inside(bind.target), None, MS_BIND | recursive))
        if bind.read_only:
            flags = MS_BIND | MS_REMOUNT | MS_RDONLY | recursive
            steps.append(MountStep(None, inside(bind.target), None, flags))
    steps += [
        ChrootStep(rootfs),
        ChdirStep(spec.working_directory),
        SetIdsStep(uid=uid, gid=gid),
        ExecStep(argv=spec.exec, environment=tuple(app_environment(spec).items())),
    ]
    return steps


def _lookup(text: str, name: str) -> int | None:
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and fields[0] == name and fields[2].isdigit():
            return int(fields[2])
    return None


def resolve_ids(user: str, group: str, *, passwd: str, group_file: str) -> tuple[int, int]:
    """Numeric (uid, gid) for the manifest's user/group, names looked up in the image's files."""
    uid = int(user) if user.isdigit() else _lookup(passwd, user)
    if uid is None:
        raise PodError(f"user {user!r} is not in the image's /etc/passwd")
    gid = int(group) if group.isdigit() else _lookup(group_file, group)
    if gid is None:
        raise PodError(f"group {group!r} is not in the image's /etc/group")
    return uid, gid


# --- systemd --------------------------------------------------------------------------------


def limits_properties(options: Limits) -> list[str]:
    """The isolators as systemd properties: MemoryMax=, CPUQuota= (millicores/10 %), TasksMax=."""
    properties: list[str] = []
    if options.memory is not None:
        properties.append(f"MemoryMax={options.memory}")
    if options.cpu is not None:
        properties.append(f"CPUQuota={cpu_quota(options.cpu)}")
    if options.tasks_max is not None:
        properties.append(f"TasksMax={options.tasks_max}")
    return properties


def set_property_command(unit: str, properties: list[str]) -> list[str]:
    return ["systemctl", "set-property", "--runtime", unit, *properties]


def scope_unit_name(uuid: str) -> str:
    return f"{machine_name(uuid)}.scope"


def scope_command(unit: str, properties: list[str], argv: list[str]) -> list[str]:
    """Run `argv` in a new transient scope `unit` with `properties` (systemd-run execs it)."""
    head = ["systemd-run", "--scope", "--quiet", "--collect", f"--unit={unit}"]
    return [*head, *(item for prop in properties for item in ("-p", prop)), "--", *argv]


def _cgroup_path(cgroup_text: str) -> str | None:
    unified = None
    for line in cgroup_text.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if "name=systemd" in controllers.split(","):
            return path
        if hierarchy == "0" and controllers == "":
            unified = path
    return unified


def own_service_unit(cgroup_text: str) -> str | None:
    """The system service unit a process with this /proc/<pid>/cgroup runs in, or None.

    The deepest unit in the path decides: a `.service` is the answer, a scope (a login
    session, `init.scope`, a `systemd-run --scope`) or a slice means no service. Services of a
    user manager (below `user@<uid>.service`) are not the system manager's to change: None.
    """
    path = _cgroup_path(cgroup_text)
    if not path:
        return None
    units = [part for part in path.split("/") if part.endswith(_UNIT_SUFFIXES)]
    if not units or not units[-1].endswith(".service"):
        return None
    if any(re.fullmatch(r"user@\d+\.service", part) for part in units[:-1]):
        return None
    return units[-1]
