"""rkt-style containers on real systemd: a signed image made here, run by `fleetctl start`.

The test builds a small image on the host (a static busybox taken from node1 as its rootfs),
signs it with a key made for the test, copies the image, its signature and the public key into
every node, and trusts the key there for the image's name prefix only. Then:

* A unit with an `[X-Container]` section runs on the node it is pinned to: the agent's drop-in
  makes `fleet-pod run` the unit's command, `fleet-pod` fetches (verifying the signature against
  the node's trust store), and stage1 (systemd-nspawn) becomes the unit's main process. The app
  runs in its own root (its `/` is not the node's: a writable overlay on the rendered image,
  mounted in the container's namespace only), its output is in the unit's journal under the
  app's name, and the unit's memory limit is on its cgroup. The node's image store is 0700: no
  other user of the node reaches the rendered tree.
* Killing the agent (fleetd, SIGKILL) and restarting fleetd leave the container running (same
  main PID, same app PID).
* `fleetctl stop` stops the container; the pod is exited, `fleet-pod gc` keeps it within the
  grace period and removes it after.
* The `fly` stage1 (`Stage1=fly`): no nspawn, the app itself is the unit's main process,
  chrooted into the pod's root.
* On a node, `fleet-pod fetch` refuses, naming the cause and adding nothing to the store: an
  unsigned image, one signed by a key the node does not trust or trusts only for another prefix,
  a tampered image (another build beside the first one's signature), archives with a `../`
  member, an absolute symlink or a symlink that climbs out through another one, manifests
  without a name or with a bad one, and a signed gzip bomb past `--max-image-size`.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from testcontainers.core.container import DockerContainer

from fleetpod.image import build_image, image_id_of
from fleetpod.keys import generate_key_pair, load_private_key
from fleetpod.signature import STATEMENT_TYPE, file_sha256, make_envelope, sign_image
from tests.fleetpod.conftest import Entry, manifest_document, write_archive, write_gzip_bomb
from tests.rig.cluster import NODE_NAMES, Cluster
from tests.rig.nodes import TEST_TIMEOUT, run_in

pytestmark = pytest.mark.timeout(TEST_TIMEOUT)

IMAGES = "/srv/images"
NAME = "example.com/hello"
MEMORY = 64_000_000
APP_COMMAND = "echo hello from $(hostname) with / holding: $(ls /); exec sleep 100000"
BUSYBOX_APPLETS = ("sh", "echo", "ls", "sleep", "hostname", "cat")
MAX_IMAGE_SIZE = "64Mi"
REFUSED = [
    ("unsigned", r"image /srv/images/unsigned\.aci has no signature"),
    ("untrusted", r"signed by key \w+ which is not trusted for 'example.com/hello'"),
    ("other-prefix", r"not trusted for 'example.com/other'; trusted keys for it: none"),
    ("tampered", r"hash mismatch"),
    ("dot-dot", r"'rootfs/\.\./\.\./etc/x' escapes the root \('\.\.'\)"),
    ("absolute-link", r"is a symlink to the absolute path '/bin/x'"),
    ("no-name", r"manifest has no name"),
    ("bad-name", r"manifest name 'Not A Name' is not an AC identifier"),
    (
        "composed-link",
        r"'rootfs/esc' is a symlink to .*, which leaves rootfs/ through the symlinks",
    ),
    ("bomb", r"expands to more than 64 MiB, the limit for an image \(raise it with --max-image"),
]
"""Each image a node must refuse, and what the refusal says."""


@dataclass(frozen=True)
class Images:
    """What the nodes hold under `IMAGES`: the signed image and its public key, and by name
    (`REFUSED`) the images a node must refuse."""

    signed: str
    refused: dict[str, str]


def crafted(path: Path, *extra: Entry, manifest: dict[str, Any] | None = None) -> Path:
    """A hand-made image: a manifest (example.com/hello unless `manifest`), rootfs/, `extra`."""
    document = manifest_document(name=NAME) if manifest is None else manifest
    members = [
        Entry("manifest", data=json.dumps(document).encode()),
        Entry("rootfs", kind="dir", mode=0o755),
        Entry("rootfs/bin", kind="dir", mode=0o755),
        *extra,
    ]
    return write_archive(path, members, compression="gzip")


def sign_anyway(path: Path, key: Ed25519PrivateKey, *, image_id: str | None = None) -> Path:
    """`path.sig`: a valid signature by `key` for example.com/hello, even of a malformed archive
    (`sign_image` checks the archive first)."""
    statement = {
        "type": STATEMENT_TYPE,
        "name": NAME,
        "imageID": image_id or image_id_of(path),
        "archiveSHA256": file_sha256(path),
        "labels": {},
        "created": "2026-01-01T00:00:00Z",
    }
    signature = path.with_name(path.name + ".sig")
    signature.write_bytes(make_envelope(statement, key))
    return signature


def without_name() -> dict[str, Any]:
    document = manifest_document(name=NAME)
    del document["name"]
    return document


def busybox_from(node: DockerContainer) -> bytes:
    """The node's static busybox (Debian's busybox-static)."""
    stream, _ = node.get_wrapped_container().get_archive("/bin/busybox")
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as archive:
        member = archive.extractfile("busybox")
        assert member is not None
        return member.read()


def rootfs(directory: Path, busybox: bytes) -> Path:
    for sub in ("bin", "etc", "tmp"):
        (directory / sub).mkdir(parents=True)
    (directory / "bin" / "busybox").write_bytes(busybox)
    (directory / "bin" / "busybox").chmod(0o755)
    for applet in BUSYBOX_APPLETS:
        (directory / "bin" / applet).symlink_to("busybox")
    return directory


def put_files(node: DockerContainer, files: dict[str, Path]) -> None:
    """Copy host files into the node's `IMAGES` directory under the given names."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, path in files.items():
            archive.add(path, arcname=name)
    assert run_in(node, ["mkdir", "-p", IMAGES])[0] == 0
    assert node.get_wrapped_container().put_archive(IMAGES, buffer.getvalue())


@pytest.fixture(scope="module")
def images(shared_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Images:
    work = tmp_path_factory.mktemp("images")
    tree = rootfs(work / "rootfs", busybox_from(shared_cluster.nodes["node1"]))
    generate_key_pair(work / "signer.key", work / "signer.pub")
    generate_key_pair(work / "stranger.key", work / "stranger.pub")
    signer = load_private_key(work / "signer.key")
    stranger = load_private_key(work / "stranger.key")

    def image(file: str, name: str, key: object | None) -> Path:
        path = work / file
        build_image(tree, path, name=name, version="1.0", exec_=["/bin/sh", "-c", APP_COMMAND])
        if key is not None:
            sign_image(path, key)  # type: ignore[arg-type]
        return path

    files = {"signer.pub": work / "signer.pub"}
    for file, name, key in (
        ("hello-1.0.aci", NAME, signer),
        ("unsigned.aci", NAME, None),
        ("untrusted.aci", NAME, stranger),
        ("other-prefix.aci", "example.com/other", signer),
    ):
        path = image(file, name, key)
        files[file] = path
        if key is not None:
            files[file + ".sig"] = Path(f"{path}.sig")
    # Another build of example.com/hello beside the first build's signature.
    (tree / "etc" / "motd").write_text("tampered\n")
    files["tampered.aci"] = image("tampered.aci", NAME, None)
    files["tampered.aci.sig"] = files["hello-1.0.aci.sig"]
    # Archives that must not be unpacked, and manifests that must not be read, each signed by
    # the trusted key, so the archive or the manifest is the only thing wrong with them.
    for file, path in (
        ("dot-dot.aci", crafted(work / "dot-dot.aci", Entry("rootfs/../../etc/x", data=b"x"))),
        (
            "absolute-link.aci",
            crafted(work / "absolute-link.aci", Entry("rootfs/bin/sh", "symlink", target="/bin/x")),
        ),
        ("no-name.aci", crafted(work / "no-name.aci", manifest=without_name())),
        (
            "bad-name.aci",
            crafted(work / "bad-name.aci", manifest=manifest_document(name="Not A Name")),
        ),
        (
            "composed-link.aci",
            crafted(
                work / "composed-link.aci",
                Entry("rootfs/a", kind="dir", mode=0o755),
                Entry("rootfs/a/L", kind="symlink", target=".."),
                Entry("rootfs/esc", kind="symlink", target="a/L/" * 8 + "../" * 16 + "etc/x"),
            ),
        ),
    ):
        files[file] = path
        files[file + ".sig"] = sign_anyway(path, signer)
    # 1 GiB of zeros in a 1 MB file, signed (the signature binds the file, not its content).
    files["bomb.aci"] = write_gzip_bomb(work / "bomb.aci", 1 << 30)
    files["bomb.aci.sig"] = sign_anyway(files["bomb.aci"], signer, image_id="sha512-" + "0" * 128)
    for node in NODE_NAMES:
        container = shared_cluster.nodes[node]
        put_files(container, files)
        trusted = run_in(
            container, ["fleet-pod", "trust", "--prefix", NAME, f"{IMAGES}/signer.pub"]
        )
        assert trusted[0] == 0, trusted
    return Images(
        signed=f"{IMAGES}/hello-1.0.aci",
        refused={file: f"{IMAGES}/{file}.aci" for file, _ in REFUSED},
    )


def container_unit(image: str, machine: str, extra: str = "") -> str:
    return (
        "[Unit]\nDescription=Hello from a container\n\n"
        f"[X-Container]\nImage={image}\nExec=/bin/sh -c '{APP_COMMAND}'\nMemory={MEMORY}\n"
        f"{extra}\n[X-Fleet]\nMachineID={machine}\n"
    )


def app_pid(cluster: Cluster, node: str) -> str:
    """The PID (in the node) of the container's app, the `sleep 100000` it execs, once it runs:
    the unit is active as soon as stage0 starts, and stage0 fetches the image first."""

    def running() -> tuple[bool, str]:
        code, output = run_in(cluster.nodes[node], ["pgrep", "-f", "^sleep 100000"])
        return code == 0 and len(output.split()) == 1, output

    return cluster.wait(running, f"the container's app running on {node}")


def memory_limit(cluster: Cluster, node: str, control_group: str) -> int:
    """The memory limit on the unit's cgroup (cgroup v1's memory controller, or v2's)."""
    script = (
        'if [ -e /sys/fs/cgroup/cgroup.controllers ]; then cat "/sys/fs/cgroup$1/memory.max";'
        ' else cat "/sys/fs/cgroup/memory$1/memory.limit_in_bytes"; fi'
    )
    code, output = run_in(cluster.nodes[node], ["sh", "-c", script, "sh", control_group])
    assert code == 0, output
    return int(output)


def pods(cluster: Cluster, node: str) -> list[tuple[str, str]]:
    """`fleet-pod list` on `node`: (uuid, state) of every pod."""
    code, output = run_in(cluster.nodes[node], ["fleet-pod", "list", "--full", "--no-legend"])
    assert code == 0, output
    return [(line.split()[0], line.split()[4]) for line in output.splitlines() if line.strip()]


def test_a_container_unit_runs_in_its_own_root_and_outlives_fleetd(
    cluster: Cluster, images: Images
) -> None:
    node2 = cluster.machines["node2"]
    cluster.write_unit("hello-container.service", container_unit(images.signed, node2))
    cluster.fleetctl("start", "hello-container.service")
    assert cluster.wait_active_on("hello-container.service", 1) == {"node2"}
    node = cluster.nodes["node2"]

    # The container is the unit's main process (stage1, systemd-nspawn), in its own root.
    app = app_pid(cluster, "node2")
    shown = cluster.systemd("node2", "hello-container.service")
    code, main = run_in(node, ["cat", f"/proc/{shown['MainPID']}/comm"])
    assert (code, main) == (0, "systemd-nspawn"), main
    code, inside = run_in(node, ["ls", f"/proc/{app}/root/"])
    assert code == 0, inside
    assert "bin" in inside.split(), inside
    assert "opt" not in inside.split(), inside
    roots = run_in(node, ["stat", "-L", "-c", "%d:%i", "/", f"/proc/{app}/root/"])[1].split()
    assert roots[0] != roots[1], roots
    assert run_in(node, ["test", "-x", f"/proc/{app}/root/opt/pyfleet/bin/fleetd"])[0] != 0

    # Its output is in the unit's journal, under the app's name; the pod is running.
    def greeted() -> tuple[bool, str]:
        _, log = run_in(
            node, ["journalctl", "-u", "hello-container.service", "-t", "hello", "-o", "cat"]
        )
        return "hello from fleet-" in log, log

    log = cluster.wait(greeted, "the app's output in the unit's journal")
    assert re.search(r"with / holding: bin dev etc", log), log
    [(uuid, state)] = pods(cluster, "node2")
    assert state == "running"
    # Its root is a writable overlay on the image's rendered tree, mounted only in the
    # container's own mount namespace: the node's mount table does not have it.
    pod_dir = f"/var/lib/pyfleet/pods/run/{uuid}"
    assert run_in(node, ["cat", f"{pod_dir}/rootfs-kind"]) == (0, "overlay")
    assert f"{pod_dir}/rootfs" not in run_in(node, ["cat", "/proc/self/mountinfo"])[1]
    _, mounts = run_in(node, ["cat", f"/proc/{app}/mountinfo"])
    assert any(line.split()[4] == "/" and " overlay " in line for line in mounts.splitlines())
    # The image store is root's alone: no other user of the node reaches the rendered tree.
    store = "/var/lib/pyfleet/images"
    assert run_in(node, ["stat", "-c", "%a", store, f"{store}/trees"]) == (0, "700\n700")
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    code, denied = run_in(node, [*nobody, "ls", f"{store}/trees"])
    assert code != 0, denied
    assert "Permission denied" in denied, denied

    # The memory limit is on the unit's cgroup, which holds the whole container.
    properties = run_in(
        node,
        ["systemctl", "show", "-p", "MemoryMax", "-p", "ControlGroup", "hello-container.service"],
    )[1]
    values = dict(line.split("=", 1) for line in properties.splitlines())
    assert values["MemoryMax"] == str(MEMORY)
    assert memory_limit(cluster, "node2", values["ControlGroup"]) == MEMORY

    # Killing the agent, then restarting fleetd, leaves the container as it was.
    before = (shown["MainPID"], shown["InvocationID"], app)
    old_fleetd = cluster.systemd("node2", "fleet.service")["MainPID"]
    assert run_in(node, ["systemctl", "kill", "-s", "KILL", "fleet.service"])[0] == 0

    def fleetd_back(previous: str) -> tuple[bool, str]:
        seen = cluster.systemd("node2", "fleet.service")
        return seen["ActiveState"] == "active" and seen["MainPID"] != previous, f"{seen}"

    cluster.wait(lambda: fleetd_back(old_fleetd), "fleetd restarted after SIGKILL")
    restarted = cluster.systemd("node2", "fleet.service")["MainPID"]
    assert run_in(node, ["systemctl", "restart", "fleet.service"])[0] == 0
    cluster.wait(lambda: fleetd_back(restarted), "fleetd restarted")
    again = cluster.systemd("node2", "hello-container.service")
    assert (again["MainPID"], again["InvocationID"], app_pid(cluster, "node2")) == before
    assert pods(cluster, "node2") == [(uuid, "running")]

    # Stopping the unit stops the container; the pod is exited, gc removes it after the grace.
    cluster.fleetctl("stop", "hello-container.service")
    assert cluster.is_active("node2", "hello-container.service") == "inactive"
    assert run_in(node, ["pgrep", "-f", "^sleep 100000"])[0] == 1  # no app left
    [(stopped, state)] = pods(cluster, "node2")
    assert (stopped, state) in {(uuid, "exited"), (uuid, "exited-garbage")}
    assert run_in(node, ["fleet-pod", "gc", "--grace-period", "1h"])[0] == 0
    assert pods(cluster, "node2") == [(uuid, "exited-garbage")]  # within the grace period
    assert run_in(node, ["fleet-pod", "gc", "--grace-period", "0s"])[0] == 0
    assert pods(cluster, "node2") == []


def test_the_fly_stage1_runs_the_app_itself_in_its_own_root(
    cluster: Cluster, images: Images
) -> None:
    node3 = cluster.machines["node3"]
    cluster.write_unit("fly.service", container_unit(images.signed, node3, "Stage1=fly\n"))
    cluster.fleetctl("start", "fly.service")
    assert cluster.wait_active_on("fly.service", 1) == {"node3"}
    node = cluster.nodes["node3"]
    app = app_pid(cluster, "node3")
    # No nspawn: the app is the unit's main process, chrooted into the pod's root.
    assert cluster.systemd("node3", "fly.service")["MainPID"] == app
    _, inside = run_in(node, ["ls", f"/proc/{app}/root/"])
    assert "bin" in inside.split(), inside
    assert "opt" not in inside.split(), inside
    [(uuid, state)] = pods(cluster, "node3")
    assert state == "running"
    cluster.fleetctl("stop", "fly.service")
    assert cluster.is_active("node3", "fly.service") == "inactive"
    [(stopped, state)] = pods(cluster, "node3")
    assert (stopped, state) in {(uuid, "exited"), (uuid, "exited-garbage")}
    assert run_in(node, ["fleet-pod", "gc", "--grace-period", "0s"])[0] == 0


@pytest.mark.parametrize(("image", "cause"), REFUSED, ids=[image for image, _ in REFUSED])
def test_a_node_refuses_images_it_cannot_trust(
    cluster: Cluster, images: Images, image: str, cause: str
) -> None:
    node = cluster.nodes["node3"]
    store = "/var/lib/pyfleet-refusals"
    code, output = run_in(
        node,
        [
            "fleet-pod",
            "--dir",
            store,
            "--max-image-size",
            MAX_IMAGE_SIZE,
            "fetch",
            images.refused[image],
        ],
    )
    assert code == 254, output
    assert re.search(cause, output), output
    listed = run_in(node, ["fleet-pod", "--dir", store, "image", "list"])[1]
    assert listed.splitlines()[1:] == [], listed  # the header only: nothing was added
    _, blobs = run_in(node, ["sh", "-c", f"ls -A {store}/images/blobs {store}/images/trees"])
    assert "sha512-" not in blobs, blobs
