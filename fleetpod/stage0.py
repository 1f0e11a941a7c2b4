"""Stage0's executor: prepare a pod, make its rootfs, then become stage1 (`exec`, never fork).

Role: the I/O of `fleet-pod run`, `prepare` and `run-prepared`. Decisions come from the pure
modules (`pod_manifest`, `stage1`); the system calls go through `Host`, which tests replace.

Invariants:
* `prepare` only writes the pod directory; the rootfs is made at run time in both paths,
  because the overlay is mounted inside a private mount namespace (`unshare(CLONE_NEWNS)` with
  `/` made recursively private first) that lives and dies with the container: no mount ever
  leaks into the host (rkt issue 3181). Without that namespace or overlayfs, the rendered tree is
  copied into `<pod>/rootfs`; `<pod>/rootfs-kind` says which.
* `pid`, `pid-starttime`, `started` and `unit` are written before the pod enters `run/`; the
  exclusive lock taken at creation is then kept on an inheritable fd (`FLEET_POD_LOCK_FD`) across
  the exec, so the pod is `running` exactly as long as stage1 lives.
* Resource limits are never silently dropped: in a service unit they are set on it with
  `systemctl set-property --runtime`; outside one, nspawn runs in a new scope (`systemd-run
  --scope`) that carries them; fly outside a service unit with limits is refused.
* In a service unit, the pod's address on the cluster network is handed to fleetd's agent
  (`fleetpod.unit_address`) just before stage1 is exec'd; a pod without one withdraws what an
  earlier pod of the unit left.
* stdout/stderr go to journald's stream socket, tagged with the app name, only when that socket
  exists and stdout is not a terminal; a missing journal is silently skipped.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import socket
import stat
import struct
import subprocess
import sys
import uuid as uuidlib
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from ipaddress import IPv4Interface
from pathlib import Path
from typing import NoReturn

from fleetd.core.container import MIN_MEMORY, NetMode, PortMapping, Stage1
from fleetpod import ipam, stage1
from fleetpod.config import PodSettings
from fleetpod.errors import PodError, StoreError
from fleetpod.fetch import fetch
from fleetpod.image_manifest import host_arch
from fleetpod.pod_manifest import RunOptions, build_pod_manifest, default_app_name
from fleetpod.pods import Pod, PodStore, process_start_time
from fleetpod.store import ImageRecord, ImageStore
from fleetpod.trust import TrustStore
from fleetpod.unit_address import publish_unit_address, withdraw_unit_address

CLONE_NEWNS = 0x00020000
MNT_DETACH = 2
LOCK_FD_ENV = "FLEET_POD_LOCK_FD"
JOURNAL_DIR = Path("/run/systemd/journal")


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{what}: {os.strerror(error)}")


def _bytes(text: str | None) -> bytes | None:
    return None if text is None else os.fsencode(text)


def libc_mount(
    source: str | None, target: str, fstype: str | None, flags: int, data: str | None
) -> None:
    libc = _libc()
    libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
    result = libc.mount(_bytes(source), _bytes(target), _bytes(fstype), flags, _bytes(data))
    _check(result, f"mount {target}")


def lazy_unmount(path: Path) -> None:
    """umount2(MNT_DETACH): gc's unmount of a rootfs still mounted in this namespace."""
    libc = _libc()
    libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    _check(libc.umount2(os.fsencode(str(path)), MNT_DETACH), f"umount {path}")


def journal_stream_header(identifier: str, priority: int = 6) -> bytes:
    """journald's stdout stream header: identifier, unit id, priority, level prefix, 3 forwards."""
    return f"{identifier}\n\n{priority}\n0\n0\n0\n0\n".encode()


def journal_entry(fields: Mapping[str, str]) -> bytes:
    """One journald native-protocol datagram (binary form for values with newlines)."""
    out = bytearray()
    for name, value in fields.items():
        data = value.encode()
        if b"\n" in data:
            out += name.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += name.encode() + b"=" + data + b"\n"
    return bytes(out)


class Host:
    """The system calls stage0 makes; tests subclass it and record instead."""

    journal_dir = JOURNAL_DIR
    proc = Path("/proc")

    def enter_private_mount_namespace(self) -> bool:
        """unshare(CLONE_NEWNS) and make `/` recursively private; False if not permitted."""
        libc = _libc()
        libc.unshare.argtypes = [ctypes.c_int]
        try:
            _check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
            libc_mount(None, "/", None, stage1.MS_REC | stage1.MS_PRIVATE, None)
        except OSError:
            return False
        return True

    def mount(
        self, source: str | None, target: str, fstype: str | None, flags: int, data: str | None
    ) -> None:
        libc_mount(source, target, fstype, flags, data)

    def connect_network(
        self, uuid: str, data_dir: Path, ports: Sequence[PortMapping] = ()
    ) -> tuple[IPv4Interface, Path] | None:
        """Put pod `uuid` on the node's cluster network (an address from `fleetpod.ipam`, the
        links of `fleetpod.network`) and publish its `ports` on the node's address; None when
        the node has no network. Nothing is left held or made when it fails."""
        node = ipam.read_node_network()
        if node is None:
            if ports:
                raise PodError("--port needs the cluster network, and this node has none")
            return None
        if ports and node.public_ip is None:
            raise PodError("--port: the node's subnet file names no FLEET_PUBLIC_IP")
        from fleetpod import network  # noqa: PLC0415 (pyroute2 takes ~150 ms to import)

        book, port_book = ipam.AddressBook(data_dir), ipam.PortBook(data_dir)
        address = book.allocate(node, uuid)
        connected = False
        try:
            for port in ports:
                port_book.claim(uuid, port.protocol, port.host)
            path = network.connect_pod(node, uuid, address)
            connected = True
            if ports:
                assert node.public_ip is not None
                network.publish_ports(uuid, node.public_ip, address.ip, ports)
            return address, path
        except BaseException:
            if connected:
                network.disconnect_pod(uuid)
            port_book.release(uuid)
            book.release(uuid)
            raise

    def read_cgroup(self) -> str:
        return (self.proc / "self" / "cgroup").read_text()

    def run_command(self, argv: list[str]) -> int:
        return subprocess.run(argv, check=False).returncode

    def send_journal(self, data: bytes) -> None:
        path = self.journal_dir / "socket"
        if not path.exists():
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock, contextlib.suppress(OSError):
            sock.sendto(data, str(path))

    def connect_output_to_journal(self, identifier: str, fds: Sequence[int] = (1, 2)) -> bool:
        path = self.journal_dir / "stdout"
        if not path.exists() or os.isatty(fds[0]):
            return False
        sys.stdout.flush()
        sys.stderr.flush()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            try:
                sock.connect(str(path))
                sock.shutdown(socket.SHUT_RD)
                sock.sendall(journal_stream_header(identifier))
            except OSError:
                return False
            for fd in fds:
                os.dup2(sock.fileno(), fd)
        return True

    def stdout_is_tty(self) -> bool:
        return os.isatty(1)

    def chroot(self, path: str) -> None:
        os.chroot(path)
        os.chdir("/")

    def chdir(self, path: str) -> None:
        os.chdir(path)

    def set_ids(self, uid: int, gid: int) -> None:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)

    def execvpe(self, file: str, argv: list[str], env: Mapping[str, str]) -> NoReturn:
        os.execvpe(file, argv, env)


def resolve_image(
    settings: PodSettings,
    image_ref: str,
    *,
    warn: Callable[[str], None],
    signature: Path | None = None,
) -> ImageRecord:
    """An image of the store by id or name, else the file or URL `image_ref`, fetched."""
    store = ImageStore(settings.paths.images_dir)
    if "://" not in image_ref and signature is None:
        try:
            return store.resolve(image_ref)
        except StoreError:
            if not Path(image_ref).exists():
                raise
    trust = TrustStore(settings.paths.trust_dir)
    return fetch(
        image_ref,
        store=store,
        trust=trust,
        insecure=settings.insecure,
        warn=warn,
        signature=signature,
        max_bytes=settings.max_image_bytes,
    )


def _create(
    settings: PodSettings,
    image_ref: str,
    options: RunOptions,
    warn: Callable[[str], None],
    signature: Path | None,
) -> tuple[PodStore, Pod]:
    image = resolve_image(settings, image_ref, warn=warn, signature=signature)
    arch = image.manifest.arch
    if arch != host_arch():
        raise PodError(f"image {image.name} is for {arch}, this machine is {host_arch()}")
    ImageStore(settings.paths.images_dir).render(image.id)
    uuid = str(uuidlib.uuid4())
    manifest = build_pod_manifest(image, options, uuid)
    app_name = options.name or default_app_name(image.name)
    pods = PodStore(settings.paths.pods_dir)
    return pods, pods.create(manifest, image.id, app_name, options.stage1.value, uuid=uuid)


def prepare(
    settings: PodSettings,
    image_ref: str,
    options: RunOptions,
    *,
    warn: Callable[[str], None],
    signature: Path | None = None,
) -> Pod:
    """`fleet-pod prepare`: a pod in `prepared/`, unlocked, ready for `run-prepared`."""
    pods, pod = _create(settings, image_ref, options, warn, signature)
    pods.mark_prepared(pod)
    return pod


def run(
    settings: PodSettings,
    image_ref: str,
    options: RunOptions,
    *,
    warn: Callable[[str], None],
    signature: Path | None = None,
    host: Host | None = None,
) -> NoReturn:
    """`fleet-pod run`: prepare, then become the container.

    Under a service unit the flags' limits go on the unit before anything else, while this
    process is still small: the kernel refuses (cgroup v1) or reclaims hard (v2) a limit below
    what the cgroup already uses, and fetching an image is the biggest thing stage0 does."""
    host = host or Host()
    applied = stage1.limits_properties(options)
    _apply_limits(host, _service_unit(host), applied)
    pods, pod = _create(settings, image_ref, options, warn, signature)
    launch(settings, pods, pod, host, applied=applied)


def run_prepared(settings: PodSettings, uuid: str, *, host: Host | None = None) -> NoReturn:
    """`fleet-pod run-prepared`: take a prepared pod and become the container."""
    pods = PodStore(settings.paths.pods_dir)
    launch(settings, pods, pods.lock_prepared(uuid), host or Host())


def overlay_options(lower: Path, upper: Path, work: Path) -> str:
    def escape(path: Path) -> str:
        return str(path).replace("\\", "\\\\").replace(",", "\\,").replace(":", "\\:")

    return f"lowerdir={escape(lower)},upperdir={escape(upper)},workdir={escape(work)}"


def _copy_entry(source: str, destination: str) -> None:
    mode = os.lstat(source).st_mode
    if stat.S_ISREG(mode):
        shutil.copy2(source, destination)
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
        with contextlib.suppress(PermissionError):
            os.mknod(destination, mode, os.lstat(source).st_rdev)


def copy_tree(source: Path, destination: Path) -> None:
    """A copy keeping symlinks, modes, times and (as root) owners; devices only as root."""
    shutil.copytree(
        source, destination, symlinks=True, dirs_exist_ok=True, copy_function=_copy_entry
    )
    if os.geteuid() != 0:
        return
    for directory, names, files in os.walk(source):
        relative = Path(directory).relative_to(source)
        for name in [".", *names, *files]:
            original = os.lstat(Path(directory) / name)
            copy = destination / relative / name
            if os.path.lexists(copy):
                os.lchown(copy, original.st_uid, original.st_gid)
                if not stat.S_ISLNK(original.st_mode):
                    os.chmod(copy, stat.S_IMODE(original.st_mode))


def make_rootfs(pod_dir: Path, tree: Path, host: Host, *, namespaced: bool) -> str:
    """`<pod>/rootfs` as an overlay on the rendered tree, else a copy; returns which."""
    rootfs = pod_dir / "rootfs"
    rootfs.mkdir(exist_ok=True)
    if namespaced:
        upper, work = pod_dir / "overlay" / "upper", pod_dir / "overlay" / "work"
        upper.mkdir(parents=True, exist_ok=True)
        work.mkdir(exist_ok=True)
        try:
            host.mount("overlay", str(rootfs), "overlay", 0, overlay_options(tree, upper, work))
        except OSError:
            shutil.rmtree(pod_dir / "overlay", ignore_errors=True)
        else:
            return "overlay"
    copy_tree(tree, rootfs)
    return "copy"


def prepare_volumes(pod_dir: Path, spec: stage1.PodSpec) -> None:
    """Check host sources exist; create `kind=empty` volume directories with their mode/owner."""
    for volume in spec.volumes:
        if volume.kind == "host":
            if not os.path.lexists(volume.source or ""):
                raise PodError(
                    f"volume {volume.name}: host source {volume.source!r} does not exist"
                )
            continue
        directory = stage1.volume_dir(pod_dir, volume.name)
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, int(volume.mode, 8))
        if os.geteuid() == 0:
            os.chown(directory, volume.uid, volume.gid)


def resolve_in_root(root: Path, path: str, *, hops: int = 40) -> Path:
    """`path` inside `root` with symlinks resolved as if `root` were `/` (never escapes it)."""
    resolved: list[str] = []
    pending = [part for part in path.split("/") if part not in ("", ".")]
    while pending:
        part = pending.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root.joinpath(*resolved, part)
        if candidate.is_symlink():
            hops -= 1
            if hops < 0:
                raise PodError(f"too many symlinks resolving {path!r} in the pod rootfs")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            pending = [p for p in target.split("/") if p not in ("", ".")] + pending
            continue
        resolved.append(part)
    return root.joinpath(*resolved)


def run_fly(steps: Sequence[stage1.FlyStep], rootfs: Path, host: Host) -> NoReturn:
    """Execute a fly plan: mounts under the rootfs (targets made), chroot, chdir, ids, exec."""
    for step in steps:
        if isinstance(step, stage1.MountStep):
            target = resolve_in_root(rootfs, "/" + str(step.target.relative_to(rootfs)))
            if not os.path.lexists(target):
                if step.source and os.path.isfile(step.source):
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.touch()
                else:
                    target.mkdir(parents=True)
            host.mount(step.source, str(target), step.fstype, step.flags, step.data)
        elif isinstance(step, stage1.ChrootStep):
            host.chroot(str(step.path))
        elif isinstance(step, stage1.ChdirStep):
            host.chdir(step.path)
        elif isinstance(step, stage1.SetIdsStep):
            host.set_ids(step.uid, step.gid)
        else:
            host.execvpe(step.argv[0], list(step.argv), dict(step.environment))
    raise PodError("fly plan has no exec step")


def _service_unit(host: Host) -> str | None:
    try:
        return stage1.own_service_unit(host.read_cgroup())
    except OSError:
        return None


def _apply_limits(host: Host, service: str | None, properties: list[str]) -> None:
    if service and properties:
        command = stage1.set_property_command(service, properties)
        if host.run_command(command) != 0:
            raise PodError(f"cannot set resource limits on {service}: {' '.join(command)} failed")


def _record_start(pod: Pod, host: Host, spec: stage1.PodSpec) -> None:
    pid = os.getpid()
    pod.write("pid", str(pid))
    pod.write("pid-starttime", process_start_time(host.proc, pid) or "")
    pod.write("started", datetime.now(UTC).isoformat())
    message = f"pod {pod.uuid} starting app {spec.app_name} from image {spec.image_name}"
    fields = {"MESSAGE": f"{message} {spec.image_id}", "POD_UUID": pod.uuid}
    fields |= {"APP": spec.app_name, "SYSLOG_IDENTIFIER": "fleet-pod"}
    host.send_journal(journal_entry(fields))


def launch(
    settings: PodSettings,
    pods: PodStore,
    pod: Pod,
    host: Host,
    *,
    applied: Sequence[str] = (),
) -> NoReturn:
    """Make the rootfs, limits and logs, enter `run/`, exec stage1 (or the fly plan).

    A failure releases the pod's lock at once: it shows as aborted-prepare (or exited).
    """
    try:
        _launch(settings, pods, pod, host, applied)
    finally:
        pod.release()


def _launch(
    settings: PodSettings, pods: PodStore, pod: Pod, host: Host, applied: Sequence[str]
) -> NoReturn:
    manifest = json.loads(pod.read("pod") or "{}")
    spec = stage1.pod_spec(manifest)
    properties = stage1.limits_properties(spec)
    service = _service_unit(host)
    fly = spec.stage1 is Stage1.FLY
    if fly and properties and not service:
        raise PodError("fly applies resource limits only inside a service unit (use systemd-run)")
    if spec.memory is not None and spec.memory < MIN_MEMORY:
        raise PodError(
            f"memory limit {spec.memory} bytes (from the image) is below the minimum of 64M:"
            " fleet-pod runs within the limit; give --memory"
        )
    if properties != list(applied):  # the image declares limits the flags did not give
        _apply_limits(host, service, properties)
    images = ImageStore(settings.paths.images_dir)
    tree = images.render(spec.image_id)
    with contextlib.suppress(StoreError):
        images.touch(spec.image_id)
    prepare_volumes(pod.path, spec)
    network_namespace, address = None, None
    if spec.net is NetMode.DEFAULT and not fly:  # before the private mount namespace: the
        # namespace's bind mount under /run/netns must be the host's, for gc to remove it
        connected = host.connect_network(pod.uuid, settings.paths.data_dir, spec.ports)
        if connected is not None:
            address, network_namespace = connected
            pod.write("net-address", str(address))
            pod.write("netns", str(network_namespace))
    namespaced = host.enter_private_mount_namespace()
    if fly and not namespaced:
        raise PodError("the fly stage1 needs a private mount namespace (run as root)")
    pod.write("rootfs-kind", make_rootfs(pod.path, tree, host, namespaced=namespaced))
    unit = service or (stage1.scope_unit_name(pod.uuid) if properties else None)
    if unit:
        pod.write("unit", unit)
    _record_start(pod, host, spec)
    lock_fd = pods.start_running(pod)
    if service:  # the unit's state in fleet shows the address (fleetd.core.pod_address)
        if address is None:
            withdraw_unit_address(service)
        else:
            publish_unit_address(service, pod.uuid, address.ip, warn=_warn)
    host.connect_output_to_journal(spec.app_name)
    rootfs = pod.path / "rootfs"
    if fly:
        uid, gid = stage1.resolve_ids(
            spec.user,
            spec.group,
            passwd=_read_or_empty(resolve_in_root(rootfs, "/etc/passwd")),
            group_file=_read_or_empty(resolve_in_root(rootfs, "/etc/group")),
        )
        run_fly(stage1.fly_plan(pod.path, spec, uid=uid, gid=gid), rootfs, host)
    if not os.path.lexists(rootfs / "usr"):
        (rootfs / "usr").mkdir()  # nspawn refuses a directory without /usr unless it boots
    console = None if host.stdout_is_tty() else "pipe"
    argv = stage1.nspawn_command(
        pod.path,
        manifest,
        uuid=pod.uuid,
        keep_unit=unit is not None,
        app=spec,
        console=console,
        network_namespace=network_namespace,
    )
    if unit and not service:
        argv = stage1.scope_command(unit, properties, argv)
    environment = {**os.environ, **stage1.NSPAWN_ENV, LOCK_FD_ENV: str(lock_fd)}
    host.execvpe(argv[0], argv, environment)


def _warn(message: str) -> None:
    print(f"fleet-pod: {message}", file=sys.stderr, flush=True)


def _read_or_empty(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
