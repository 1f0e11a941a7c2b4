"""A unit's `[X-Container]` section: the container it runs, and the `ExecStart=` that runs it.

A unit may say which container it runs instead of writing `ExecStart=fleet-pod run ...` by hand:

    [X-Container]
    Image=https://images.example.com/hello-1.0.aci
    Exec=/bin/sh -c "echo hello; exec sleep infinity"
    Environment=GREETING=hello "NAME=the world"
    Volume=data,kind=host,source=/srv/data,target=/data,readOnly=true
    Memory=64M
    CPU=500m

`parse_container` reads and checks the section (submission refuses a bad one, naming the key);
`container_dropin` turns it into the text of a systemd drop-in that the agent writes beside the
unit, so the unit file itself, and so its hash, stays exactly what was submitted.

Keys (each may appear once unless said otherwise):
* `Image=` (required): a path, `file://` or `https://` URL, or an image in the node's store
  (`name`, `name:version` or `sha512-...`); the image must be signed by a trusted key.
* `Exec=`: the app's command line (shell-like quoting), replacing the image's `exec`.
* `Environment=` (repeatable): `NAME=value` assignments, quoted as systemd's `Environment=`.
* `Volume=` (repeatable): `NAME,kind=host,source=PATH[,readOnly=B][,recursive=B][,target=PATH]`
  or `NAME,kind=empty[,readOnly=B][,mode=0755][,uid=N][,gid=N][,target=PATH]`: fleet-pod's
  `--volume`, plus `target=` for its `--mount`.
* `Memory=` (`256M`, `1Gi`, bytes; at least `MIN_MEMORY`) and `CPU=` (`500m`, `1.5`): limits
  of the whole unit, set from its start (`MemoryMax=`, `CPUQuota=` in the drop-in) and recorded
  in the pod. They bound stage0 too, which is Python: below 64 MB fleet-pod itself would be
  killed while it fetches and prepares, so a smaller `Memory=` is refused.
* `Net=` (`default`, `host`, `none`) and `Stage1=` (`nspawn`, `fly`): fleet-pod's flags.
* `Port=` (repeatable): `NODE-PORT:POD-PORT[/tcp|udp]`, a pod port published on the node's
  address (fleet-pod's `--port`); needs `Net=default`.

Values are unit-file values: systemd's specifiers (`%i`, `%H`, `%n`, ...) expand as in any other
line of the unit (`Image=/srv/images/%i.aci` in a template, `Environment=NODE=%H`); write `%%`
for a literal `%`. Nothing else is expanded: `$VAR` and `$(...)` reach the container as written.

Invariants: pure (standard library only); the drop-in quotes every argument for systemd's own
command-line syntax (`"`, `\\` and `$` escaped), so systemd splits and expands nothing but the
specifiers.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from fleetd.core.quantity import QuantityError, cpu_quota, parse_cpu, parse_memory
from fleetd.core.unitfile import UnitFile

SECTION = "X-Container"
KEYS = frozenset(
    {"Image", "Exec", "Environment", "Volume", "Memory", "CPU", "Net", "Stage1", "Port"}
)
REPEATABLE = frozenset({"Environment", "Volume", "Port"})
PROTOCOLS = ("tcp", "udp")


class NetMode(StrEnum):
    """A pod's network (`Net=`, fleet-pod's `--net`): the host's, loopback only (`none`), or
    the cluster network (`default`: loopback only on a node without a subnet)."""

    HOST = "host"
    NONE = "none"
    DEFAULT = "default"


class Stage1(StrEnum):
    """What runs a pod (`Stage1=`, fleet-pod's `--stage1`): systemd-nspawn (namespaces) or fly
    (chroot, no isolation)."""

    NSPAWN = "nspawn"
    FLY = "fly"


NETS = tuple(sorted(NetMode))
STAGE1S = tuple(Stage1)


def spoken_choices(choices: tuple[str, ...]) -> str:
    """`a, b or c`: choices as a help text or an error message says them."""
    return " or ".join((", ".join(choices[:-1]), choices[-1])) if len(choices) > 1 else choices[0]


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_VOLUME_NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
_BOOL = ("true", "false")
_MODE = re.compile(r"^0?[0-7]{3}$")
_VOLUME_KEYS = {
    "host": frozenset({"source", "readOnly", "recursive", "target"}),
    "empty": frozenset({"readOnly", "mode", "uid", "gid", "target"}),
}
MIN_MEMORY = 64_000_000
"""The smallest memory limit for a container (bytes): fleet-pod's stage0 runs within it and
needs about 55 MB at its peak (measured on the rig: `fleet-pod prepare`, maximum RSS)."""


class ContainerError(ValueError):
    """An `[X-Container]` section that cannot run; the message names the key and the problem."""


@dataclass(frozen=True, slots=True)
class ContainerVolume:
    """One `Volume=`: fleet-pod's `--volume` value and, with a target, its `--mount`."""

    name: str
    spec: str
    target: str | None


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    """What the `[X-Container]` section asks for."""

    image: str
    exec: tuple[str, ...] = ()
    environment: tuple[tuple[str, str], ...] = ()
    volumes: tuple[ContainerVolume, ...] = ()
    memory: str | None = None
    cpu: str | None = None
    net: str | None = None
    stage1: str | None = None
    ports: tuple[PortMapping, ...] = ()


@dataclass(frozen=True, slots=True)
class PortMapping:
    """A pod port published on the node's address: `8080:80/tcp` (node port, pod port)."""

    host: int
    pod: int
    protocol: str = "tcp"

    @property
    def spec(self) -> str:
        return f"{self.host}:{self.pod}/{self.protocol}"


def parse_port(text: str) -> PortMapping:
    """`HOST:POD[/tcp|udp]`; ValueError saying what is wrong."""
    ports, _, protocol = text.strip().partition("/")
    protocol = protocol or "tcp"
    if protocol not in PROTOCOLS:
        raise ValueError(f"{text!r}: protocol {protocol!r} is not tcp or udp")
    host, sep, pod = ports.partition(":")
    if not sep:
        raise ValueError(f"{text!r}: expected NODE-PORT:POD-PORT[/tcp|udp], e.g. 8080:80/tcp")
    numbers = []
    for which, value in (("node", host), ("pod", pod)):
        if not value.isdigit() or not 1 <= int(value) <= 65535:
            raise ValueError(f"{text!r}: {which} port {value!r} is not a port (1 to 65535)")
        numbers.append(int(value))
    return PortMapping(numbers[0], numbers[1], protocol)


def parse_ports(values: list[str], what: str) -> tuple[PortMapping, ...]:
    """Several mappings; a node port published twice is refused (`what` names the source)."""
    mappings = []
    for value in values:
        try:
            mappings.append(parse_port(value))
        except ValueError as exc:
            raise ContainerError(f"{what} {exc}") from None
    seen = [(m.host, m.protocol) for m in mappings]
    if len(set(seen)) != len(seen):
        raise ContainerError(f"{what}: a node port is published twice")
    return tuple(mappings)


def _split(key: str, value: str) -> list[str]:
    try:
        return shlex.split(value)
    except ValueError as exc:
        raise ContainerError(f"[X-Container] {key}={value}: {exc}") from None


def _environment(values: list[str]) -> tuple[tuple[str, str], ...]:
    pairs: list[tuple[str, str]] = []
    for value in values:
        for word in _split("Environment", value):
            name, equals, setting = word.partition("=")
            if not equals or not _ENV_NAME.match(name):
                raise ContainerError(
                    f"[X-Container] Environment: {word!r} is not a NAME=value assignment"
                )
            pairs.append((name, setting))
    return tuple(pairs)


def _volume(value: str) -> ContainerVolume:
    name, _, rest = value.partition(",")
    if not _VOLUME_NAME.match(name):
        raise ContainerError(
            f"[X-Container] Volume={value}: {name!r} is not a volume name"
            " (lowercase letters, digits and single dashes)"
        )
    fields: dict[str, str] = {}
    for part in rest.split(",") if rest else []:
        key, equals, setting = part.partition("=")
        if not equals:
            raise ContainerError(f"[X-Container] Volume={value}: unknown part {part!r}")
        if key in fields:
            raise ContainerError(f"[X-Container] Volume={value}: {key} given twice")
        fields[key] = setting
    kind = fields.pop("kind", None)
    if kind not in _VOLUME_KEYS:
        raise ContainerError(f"[X-Container] Volume={value}: kind must be host or empty")
    unknown = sorted(set(fields) - _VOLUME_KEYS[kind])
    if unknown:
        raise ContainerError(
            f"[X-Container] Volume={value}: unknown part {unknown[0]!r} for kind={kind}"
        )
    if not _MODE.match(fields.get("mode", "0755")):
        raise ContainerError(f"[X-Container] Volume={value}: mode must be octal, like 0755")
    for key in ("uid", "gid"):
        if not fields.get(key, "0").isdigit():
            raise ContainerError(f"[X-Container] Volume={value}: {key} must be a number")
    for key in ("source", "target"):
        path = fields.get(key)
        if path is not None and not path.startswith("/"):
            raise ContainerError(f"[X-Container] Volume={value}: {key} must be an absolute path")
    if kind == "host" and "source" not in fields:
        raise ContainerError(f"[X-Container] Volume={value}: a host volume needs source=")
    for key in ("readOnly", "recursive"):
        if key in fields and fields[key] not in _BOOL:
            raise ContainerError(f"[X-Container] Volume={value}: {key} must be true or false")
    target = fields.pop("target", None)
    if target is not None and target.rstrip("/") == "":
        raise ContainerError(f"[X-Container] Volume={value}: target cannot be /")
    spec = ",".join([name, f"kind={kind}", *(f"{key}={fields[key]}" for key in fields)])
    return ContainerVolume(name, spec, target)


def _single(unit: UnitFile, key: str) -> str | None:
    values = unit.values(SECTION, key)
    if len(values) > 1:
        raise ContainerError(f"[X-Container] {key}= is given {len(values)} times; give it once")
    return values[0].strip() if values else None


def _choice(value: str | None, key: str, allowed: tuple[str, ...]) -> str | None:
    if value is not None and value not in allowed:
        raise ContainerError(f"[X-Container] {key}={value}: must be one of {', '.join(allowed)}")
    return value


def parse_container(unit: UnitFile) -> ContainerSpec | None:
    """The unit's container, or None when it has no `[X-Container]` section."""
    if SECTION not in unit.sections():
        return None
    unknown = sorted({o.name for o in unit.options if o.section == SECTION} - KEYS)
    if unknown:
        raise ContainerError(
            f"[X-Container] unknown key {', '.join(unknown)}= (known: {', '.join(sorted(KEYS))})"
        )
    image = _single(unit, "Image")
    if not image:
        raise ContainerError("[X-Container] needs Image=: the image the container runs")
    if any(c.isspace() for c in image):
        raise ContainerError(f"[X-Container] Image={image}: an image reference has no spaces")
    command = _single(unit, "Exec")
    memory = _single(unit, "Memory")
    if memory is not None:
        size = _quantity(parse_memory, memory)
        if size is None:
            raise ContainerError(f"[X-Container] Memory={memory}: not a size such as 256M or 1Gi")
        if size < MIN_MEMORY:
            raise ContainerError(
                f"[X-Container] Memory={memory}: below the minimum of 64M"
                " (fleet-pod itself runs within the limit while it prepares the container)"
            )
    cpu = _single(unit, "CPU")
    if cpu is not None and _quantity(parse_cpu, cpu) is None:
        raise ContainerError(f"[X-Container] CPU={cpu}: not a CPU amount such as 500m or 1.5")
    exec_ = tuple(_split("Exec", command)) if command else ()
    if command is not None and not exec_:
        raise ContainerError("[X-Container] Exec= is empty")
    volumes = tuple(_volume(v.strip()) for v in unit.values(SECTION, "Volume"))
    names = [volume.name for volume in volumes]
    if len(set(names)) != len(names):
        raise ContainerError("[X-Container] Volume: a volume name is used twice")
    net = _choice(_single(unit, "Net"), "Net", NETS)
    ports = parse_ports([v.strip() for v in unit.values(SECTION, "Port")], "[X-Container] Port=")
    if ports and net not in (None, "default"):
        raise ContainerError(
            f"[X-Container] Port= needs Net=default (the pod's own address), not Net={net}"
        )
    return ContainerSpec(
        image=image,
        exec=exec_,
        environment=_environment(unit.values(SECTION, "Environment")),
        volumes=volumes,
        memory=memory,
        cpu=cpu,
        net=net,
        stage1=_choice(_single(unit, "Stage1"), "Stage1", STAGE1S),
        ports=ports,
    )


def _quantity(parse: Callable[[str], int], text: str) -> int | None:
    try:
        return parse(text) or None
    except QuantityError:
        return None


def systemd_quote(word: str) -> str:
    """`word` as one argument of a systemd command line: taken literally but for specifiers."""
    escaped = word.replace("\\", "\\\\").replace('"', '\\"')
    escaped = escaped.replace("$", "$$").replace("\n", "\\n")
    return f'"{escaped}"'


def fleet_pod_argv(spec: ContainerSpec, program: str) -> list[str]:
    """`fleet-pod run ... IMAGE [-- EXEC...]` for `spec`."""
    argv = [program, "run"]
    for flag, value in (
        ("--net", spec.net),
        ("--stage1", spec.stage1),
        ("--memory", spec.memory),
        ("--cpu", spec.cpu),
    ):
        if value is not None:
            argv += [flag, value]
    for name, value in spec.environment:
        argv += ["--set-env", f"{name}={value}"]
    for port in spec.ports:
        argv += ["--port", port.spec]
    for volume in spec.volumes:
        argv += ["--volume", volume.spec]
        if volume.target is not None:
            argv += ["--mount", f"volume={volume.name},target={volume.target}"]
    argv.append(spec.image)
    if spec.exec:
        argv += ["--exec", spec.exec[0], "--", *spec.exec[1:]]
    return argv


def container_dropin(spec: ContainerSpec, program: str) -> str:
    """The drop-in that runs `spec` as the unit's main process, with its limits on the unit."""
    lines = [
        "# Written by fleetd's agent from the unit's [X-Container] section.",
        "[Service]",
        "ExecStart=",
        "ExecStart=" + " ".join(systemd_quote(word) for word in fleet_pod_argv(spec, program)),
        # rkt's advice for a container under a unit: SIGTERM to the main process only (it
        # halts the container), cgroup delegation for nspawn, and the pod marked exited (with
        # its exit status) as soon as the unit stops.
        "KillMode=mixed",
        "Delegate=yes",
        "ExecStopPost=-" + " ".join(systemd_quote(word) for word in (program, "gc", "--mark-only")),
    ]
    if spec.memory is not None:
        lines.append(f"MemoryMax={parse_memory(spec.memory)}")
    if spec.cpu is not None:
        lines.append(f"CPUQuota={cpu_quota(parse_cpu(spec.cpu))}")
    return "\n".join(lines) + "\n"
