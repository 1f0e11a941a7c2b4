"""The appc image manifest: parse and validate it, write it back, and parse appc quantities.

Pure: no I/O except `host_arch` reading `platform.machine()`.

Invariants:
* `parse_image_manifest` accepts only what the rest of fleet-pod can run: `acKind` is
  `ImageManifest`, `name` is an AC identifier, labels are unique AC identifiers (never `name`),
  `os` is `linux` and `arch` one of appc's Linux architectures, `app.exec` (when there is an app)
  is a non-empty list of strings, mount point and port names are AC names, and the appc features
  fleet-pod does not implement (`dependencies`, `pathWhitelist`) are refused rather than ignored.
  Every refusal is an `ImageError` whose message names the field and the problem.
* `ImageManifest.to_json` writes appc JSON that `parse_image_manifest` reads back to an equal value.
* `parse_memory` gives bytes and `parse_cpu` millicores, both as `int`; garbage raises `PodError`
  naming the value.
"""

from __future__ import annotations

import json
import platform
import re
from dataclasses import dataclass
from typing import Any

from fleetd.core import quantity
from fleetpod.errors import ImageError, PodError

AC_IDENTIFIER = re.compile(r"^[a-z0-9]+([-._~/][a-z0-9]+)*$")
AC_NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
AC_KIND = "ImageManifest"
AC_VERSION = "0.8.11"

SUPPORTED_OS = "linux"
LINUX_ARCHES = frozenset(
    {
        "amd64",
        "i386",
        "aarch64",
        "aarch64_be",
        "armv6l",
        "armv7l",
        "armv7b",
        "ppc64",
        "ppc64le",
        "s390x",
    }
)
_MACHINE_TO_ARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "i386": "i386",
    "i486": "i386",
    "i586": "i386",
    "i686": "i386",
    "aarch64": "aarch64",
    "arm64": "aarch64",
    "aarch64_be": "aarch64_be",
    "armv6l": "armv6l",
    "armv7l": "armv7l",
    "armv7b": "armv7b",
    "ppc64": "ppc64",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
}
PROTOCOLS = frozenset({"tcp", "udp"})


@dataclass(frozen=True)
class MountPoint:
    """A path inside the image where the pod may mount a volume (`name` is an AC name)."""

    name: str
    path: str
    read_only: bool = False


@dataclass(frozen=True)
class Port:
    """A port the app listens on."""

    name: str
    protocol: str
    port: int


@dataclass(frozen=True)
class App:
    """How to run the image: argv, identity, environment, mounts, ports, isolators."""

    exec: tuple[str, ...]
    user: str = "0"
    group: str = "0"
    environment: tuple[tuple[str, str], ...] = ()
    working_directory: str = "/"
    mount_points: tuple[MountPoint, ...] = ()
    ports: tuple[Port, ...] = ()
    isolators: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class ImageManifest:
    """A validated appc image manifest."""

    name: str
    labels: tuple[tuple[str, str], ...]
    app: App | None
    annotations: tuple[tuple[str, str], ...] = ()

    def label(self, name: str) -> str | None:
        return dict(self.labels).get(name)

    @property
    def version(self) -> str | None:
        return self.label("version")

    @property
    def os(self) -> str | None:
        return self.label("os")

    @property
    def arch(self) -> str | None:
        return self.label("arch")

    def to_dict(self) -> dict[str, Any]:
        """The appc JSON object."""
        result: dict[str, Any] = {
            "acKind": AC_KIND,
            "acVersion": AC_VERSION,
            "name": self.name,
            "labels": [{"name": name, "value": value} for name, value in self.labels],
        }
        if self.app is not None:
            result["app"] = _app_to_dict(self.app)
        if self.annotations:
            result["annotations"] = [{"name": n, "value": v} for n, v in self.annotations]
        return result

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False).encode("utf-8") + b"\n"


def _app_to_dict(app: App) -> dict[str, Any]:
    return {
        "exec": list(app.exec),
        "user": app.user,
        "group": app.group,
        "environment": [{"name": n, "value": v} for n, v in app.environment],
        "workingDirectory": app.working_directory,
        "mountPoints": [
            {"name": m.name, "path": m.path, "readOnly": m.read_only} for m in app.mount_points
        ],
        "ports": [{"name": p.name, "protocol": p.protocol, "port": p.port} for p in app.ports],
        "isolators": [{"name": n, "value": v} for n, v in app.isolators],
    }


def parse_image_manifest(data: bytes) -> ImageManifest:
    """Validate appc manifest JSON; `ImageError` names the first problem found."""
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ImageError(f"manifest is not JSON: {error}") from None
    except RecursionError:
        raise ImageError("manifest is not JSON fleet-pod can read: nested too deeply") from None
    if not isinstance(document, dict):
        raise ImageError("manifest is not a JSON object")
    if document.get("acKind") != AC_KIND:
        raise ImageError(f"manifest acKind is {document.get('acKind')!r}, expected {AC_KIND!r}")
    if not isinstance(document.get("acVersion"), str) or not document["acVersion"]:
        raise ImageError("manifest has no acVersion")
    name = document.get("name")
    if name is None or name == "":
        raise ImageError("manifest has no name")
    check_identifier(name, "manifest name")
    for unsupported in ("dependencies", "pathWhitelist"):
        if document.get(unsupported):
            raise ImageError(f"manifest uses {unsupported!r}, which fleet-pod does not support")
    labels = _pairs(document.get("labels"), "labels", key_check=check_identifier)
    if "name" in dict(labels):
        raise ImageError("manifest has a label called 'name' (the name is a top-level field)")
    label_map = dict(labels)
    for required in ("os", "arch"):
        if required not in label_map:
            raise ImageError(f"manifest has no {required!r} label")
    if label_map["os"] != SUPPORTED_OS:
        raise ImageError(f"manifest os label {label_map['os']!r} is not supported (only 'linux')")
    if label_map["arch"] not in LINUX_ARCHES:
        known = ", ".join(sorted(LINUX_ARCHES))
        raise ImageError(f"manifest arch label {label_map['arch']!r} is not supported ({known})")
    app = document.get("app")
    annotations = _pairs(document.get("annotations"), "annotations", key_check=check_identifier)
    return ImageManifest(
        name=name,
        labels=labels,
        app=None if app is None else _parse_app(app),
        annotations=annotations,
    )


def check_identifier(value: object, what: str) -> str:
    """`value` if it is an AC identifier, else `ImageError` naming `what`."""
    if not isinstance(value, str) or not AC_IDENTIFIER.match(value):
        raise ImageError(
            f"{what} {value!r} is not an AC identifier "
            "(lowercase letters and digits, separated by one of - . _ ~ /)"
        )
    return value


def check_name(value: object, what: str) -> str:
    """`value` if it is an AC name, else `ImageError` naming `what`."""
    if not isinstance(value, str) or not AC_NAME.match(value):
        raise ImageError(
            f"{what} {value!r} is not an AC name (lowercase letters and digits, separated by -)"
        )
    return value


def _pairs(
    value: object, field: str, *, key_check: Any = None, unique: bool = True
) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ImageError(f"manifest {field} is not a list")
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ImageError(f"manifest {field} entry {item!r} has no name")
        if not isinstance(item.get("value"), str):
            raise ImageError(f"manifest {field} entry {item['name']!r} has no string value")
        if key_check is not None:
            key_check(item["name"], f"manifest {field} name")
        if unique and item["name"] in seen:
            raise ImageError(f"manifest {field} has a duplicate {item['name']!r}")
        seen.add(item["name"])
        pairs.append((item["name"], item["value"]))
    return tuple(pairs)


def _check_environment_name(value: str, what: str) -> None:
    if not value or "=" in value or "\0" in value:
        raise ImageError(f"{what} {value!r} is not a valid environment variable name")


def _parse_app(app: object) -> App:
    if not isinstance(app, dict):
        raise ImageError("manifest app is not an object")
    argv = app.get("exec")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise ImageError("manifest app.exec must be a non-empty list of strings")
    if not argv[0]:
        raise ImageError("manifest app.exec[0] is empty")
    for field in ("user", "group"):
        if not isinstance(app.get(field), str) or not app[field]:
            raise ImageError(f"manifest app.{field} is missing (a name or a number is required)")
    working_directory = app.get("workingDirectory") or "/"
    if not isinstance(working_directory, str) or not working_directory.startswith("/"):
        raise ImageError(f"manifest app.workingDirectory {working_directory!r} is not absolute")
    environment = _pairs(
        app.get("environment"), "app.environment", key_check=_check_environment_name
    )
    return App(
        exec=tuple(argv),
        user=app["user"],
        group=app["group"],
        environment=environment,
        working_directory=working_directory,
        mount_points=_parse_mount_points(app.get("mountPoints")),
        ports=_parse_ports(app.get("ports")),
        isolators=_parse_isolators(app.get("isolators")),
    )


def _parse_mount_points(value: object) -> tuple[MountPoint, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ImageError("manifest app.mountPoints is not a list")
    result: list[MountPoint] = []
    for item in value:
        if not isinstance(item, dict):
            raise ImageError(f"manifest app.mountPoints entry {item!r} is not an object")
        name = check_name(item.get("name"), "mount point name")
        path = item.get("path")
        if not isinstance(path, str) or not path.startswith("/"):
            raise ImageError(f"mount point {name!r} path {path!r} is not absolute")
        read_only = item.get("readOnly", False)
        if not isinstance(read_only, bool):
            raise ImageError(f"mount point {name!r} readOnly is not a boolean")
        if any(m.name == name for m in result):
            raise ImageError(f"manifest app.mountPoints has a duplicate {name!r}")
        result.append(MountPoint(name=name, path=path, read_only=read_only))
    return tuple(result)


def _parse_ports(value: object) -> tuple[Port, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ImageError("manifest app.ports is not a list")
    result: list[Port] = []
    for item in value:
        if not isinstance(item, dict):
            raise ImageError(f"manifest app.ports entry {item!r} is not an object")
        name = check_name(item.get("name"), "port name")
        protocol = item.get("protocol")
        if protocol not in PROTOCOLS:
            raise ImageError(f"port {name!r} protocol {protocol!r} is not tcp or udp")
        number = item.get("port")
        if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= 65535:
            raise ImageError(f"port {name!r} number {number!r} is not in 1-65535")
        result.append(Port(name=name, protocol=protocol, port=number))
    return tuple(result)


def _parse_isolators(value: object) -> tuple[tuple[str, Any], ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ImageError("manifest app.isolators is not a list")
    result: list[tuple[str, Any]] = []
    for item in value:
        if not isinstance(item, dict) or "value" not in item:
            raise ImageError(f"manifest app.isolators entry {item!r} needs a name and a value")
        name = check_identifier(item.get("name"), "isolator name")
        _check_isolator_value(name, item["value"])
        result.append((name, item["value"]))
    return tuple(result)


def _check_isolator_value(name: str, value: Any) -> None:
    parse = {"resource/memory": parse_memory, "resource/cpu": parse_cpu}.get(name)
    if parse is None:
        return
    if not isinstance(value, dict):
        raise ImageError(f"isolator {name!r} value must be an object with request/limit")
    for key in ("request", "limit"):
        if key in value:
            try:
                parse(str(value[key]))
            except PodError as error:
                raise ImageError(f"isolator {name!r} {key}: {error}") from None


def parse_memory(text: str) -> int:
    """An appc memory quantity in bytes (`fleetd.core.quantity`): `256M`, `2Gi`, `1048576`."""
    try:
        return quantity.parse_memory(text)
    except quantity.QuantityError as error:
        raise PodError(str(error)) from None


def parse_cpu(text: str) -> int:
    """An appc CPU quantity in millicores (`fleetd.core.quantity`): `500m`, `2`, `1.5`."""
    try:
        return quantity.parse_cpu(text)
    except quantity.QuantityError as error:
        raise PodError(str(error)) from None


def host_arch() -> str:
    """The appc name of this machine's architecture (`x86_64` -> `amd64`)."""
    machine = platform.machine()
    return _MACHINE_TO_ARCH.get(machine, _MACHINE_TO_ARCH.get(machine.lower(), machine.lower()))
