"""The appc image manifest: parsing, refusals by name, round trips, quantities, host arch."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fleetpod.errors import ImageError, PodError
from fleetpod.image_manifest import (
    App,
    ImageManifest,
    MountPoint,
    Port,
    host_arch,
    parse_cpu,
    parse_image_manifest,
    parse_memory,
)
from tests.fleetpod.conftest import manifest_document


def encode(document: Any) -> bytes:
    return json.dumps(document).encode()


def with_app(**fields: Any) -> dict[str, Any]:
    app: dict[str, Any] = {"exec": ["/bin/hello"], "user": "0", "group": "0"}
    app.update(fields)
    return manifest_document(app=app)


def labels(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"name": name, "value": value} for name, value in pairs]


def test_a_full_manifest_parses_into_typed_fields() -> None:
    document = with_app(
        exec=["/bin/server", "--port", "80"],
        user="nobody",
        group="1000",
        environment=labels(("MODE", "prod")),
        workingDirectory="/srv",
        mountPoints=[{"name": "data", "path": "/var/data", "readOnly": True}],
        ports=[{"name": "http", "protocol": "tcp", "port": 80}],
        isolators=[{"name": "resource/memory", "value": {"limit": "256Mi"}}],
    )
    document["annotations"] = labels(("authors", "ops"))

    manifest = parse_image_manifest(encode(document))

    assert manifest.name == "example.com/app"
    assert (manifest.version, manifest.os, manifest.arch) == ("1.0", "linux", "amd64")
    assert manifest.label("missing") is None
    assert manifest.app == App(
        exec=("/bin/server", "--port", "80"),
        user="nobody",
        group="1000",
        environment=(("MODE", "prod"),),
        working_directory="/srv",
        mount_points=(MountPoint("data", "/var/data", read_only=True),),
        ports=(Port("http", "tcp", 80),),
        isolators=(("resource/memory", {"limit": "256Mi"}),),
    )
    assert manifest.annotations == (("authors", "ops"),)


def test_to_json_is_appc_json_that_parses_back_to_the_same_manifest() -> None:
    manifest = ImageManifest(
        name="example.com/app/worker",
        labels=(("version", "2"), ("os", "linux"), ("arch", "aarch64")),
        app=App(
            exec=("/worker",),
            environment=(("A", "1"),),
            mount_points=(MountPoint("cache", "/cache"),),
            ports=(Port("metrics", "udp", 9100),),
            isolators=(("resource/cpu", {"limit": "500m"}),),
        ),
        annotations=(("homepage", "https://example.com"),),
    )

    document = json.loads(manifest.to_json())

    assert document["acKind"] == "ImageManifest"
    assert document["acVersion"] == "0.8.11"
    assert document["labels"][0] == {"name": "version", "value": "2"}
    assert document["app"]["mountPoints"] == [
        {"name": "cache", "path": "/cache", "readOnly": False}
    ]
    assert document["app"]["workingDirectory"] == "/"
    assert parse_image_manifest(manifest.to_json()) == manifest


def test_an_image_without_an_app_is_valid() -> None:
    document = manifest_document()
    del document["app"]
    assert parse_image_manifest(encode(document)).app is None


REFUSALS: list[tuple[str, bytes, str]] = [
    ("not json", b"{nope", "manifest is not JSON"),
    ("nested too deeply", b"[" * 100_000, "manifest is not JSON fleet-pod can read: nested too"),
    ("not an object", b"[1, 2]", "not a JSON object"),
    ("wrong kind", encode(manifest_document(acKind="PodManifest")), "acKind is 'PodManifest'"),
    ("no version", encode(manifest_document(acVersion="")), "no acVersion"),
    (
        "no name",
        encode({k: v for k, v in manifest_document().items() if k != "name"}),
        "manifest has no name",
    ),
    ("empty name", encode(manifest_document(name="")), "manifest has no name"),
    (
        "bad name",
        encode(manifest_document(name="Foo Bar")),
        "manifest name 'Foo Bar' is not an AC identifier",
    ),
    ("trailing slash", encode(manifest_document(name="example.com/")), "is not an AC identifier"),
    (
        "label called name",
        encode(manifest_document(labels=labels(("name", "x"), ("os", "linux"), ("arch", "amd64")))),
        "label called 'name'",
    ),
    (
        "duplicate label",
        encode(
            manifest_document(labels=labels(("os", "linux"), ("os", "linux"), ("arch", "amd64")))
        ),
        "duplicate 'os'",
    ),
    (
        "bad label name",
        encode(manifest_document(labels=labels(("OS", "linux")))),
        "labels name 'OS'",
    ),
    ("label without value", encode(manifest_document(labels=[{"name": "os"}])), "no string value"),
    (
        "labels not a list",
        encode(manifest_document(labels={"os": "linux"})),
        "labels is not a list",
    ),
    ("no os", encode(manifest_document(labels=labels(("arch", "amd64")))), "no 'os' label"),
    ("no arch", encode(manifest_document(labels=labels(("os", "linux")))), "no 'arch' label"),
    (
        "other os",
        encode(manifest_document(labels=labels(("os", "freebsd"), ("arch", "amd64")))),
        "os label 'freebsd' is not supported",
    ),
    (
        "other arch",
        encode(manifest_document(labels=labels(("os", "linux"), ("arch", "mips")))),
        "arch label 'mips' is not supported",
    ),
    (
        "dependencies",
        encode(manifest_document(dependencies=[{"imageName": "x"}])),
        "'dependencies'",
    ),
    ("path whitelist", encode(manifest_document(pathWhitelist=["/bin"])), "'pathWhitelist'"),
    ("app not object", encode(manifest_document(app=["/bin/sh"])), "app is not an object"),
    ("exec empty", encode(with_app(exec=[])), "app.exec must be a non-empty list of strings"),
    ("exec a string", encode(with_app(exec="/bin/sh")), "app.exec must be a non-empty list"),
    ("exec not strings", encode(with_app(exec=["/bin/sh", 1])), "list of strings"),
    ("exec first empty", encode(with_app(exec=[""])), "app.exec[0] is empty"),
    ("no user", encode(with_app(user="")), "app.user is missing"),
    ("no group", encode(with_app(group=None)), "app.group is missing"),
    (
        "relative workdir",
        encode(with_app(workingDirectory="srv")),
        "workingDirectory 'srv' is not absolute",
    ),
    (
        "bad env name",
        encode(with_app(environment=labels(("A=B", "x")))),
        "'A=B' is not a valid environment",
    ),
    (
        "mount point name",
        encode(with_app(mountPoints=[{"name": "Data_1", "path": "/d"}])),
        "mount point name 'Data_1' is not an AC name",
    ),
    (
        "mount point path",
        encode(with_app(mountPoints=[{"name": "data", "path": "d"}])),
        "mount point 'data' path 'd' is not absolute",
    ),
    (
        "mount point ro",
        encode(with_app(mountPoints=[{"name": "data", "path": "/d", "readOnly": "yes"}])),
        "readOnly is not a boolean",
    ),
    (
        "mount point twice",
        encode(with_app(mountPoints=[{"name": "d", "path": "/a"}, {"name": "d", "path": "/b"}])),
        "duplicate 'd'",
    ),
    (
        "port protocol",
        encode(with_app(ports=[{"name": "p", "protocol": "sctp", "port": 1}])),
        "protocol 'sctp' is not tcp or udp",
    ),
    (
        "port number",
        encode(with_app(ports=[{"name": "p", "protocol": "tcp", "port": 70000}])),
        "number 70000 is not in 1-65535",
    ),
    (
        "port name",
        encode(with_app(ports=[{"name": "P", "protocol": "tcp", "port": 1}])),
        "port name 'P'",
    ),
    (
        "isolator name",
        encode(with_app(isolators=[{"name": "Bad", "value": 1}])),
        "isolator name 'Bad'",
    ),
    (
        "memory isolator",
        encode(with_app(isolators=[{"name": "resource/memory", "value": {"limit": "lots"}}])),
        "isolator 'resource/memory' limit: memory quantity 'lots'",
    ),
    (
        "cpu isolator",
        encode(with_app(isolators=[{"name": "resource/cpu", "value": "1"}])),
        "must be an object",
    ),
]


@pytest.mark.parametrize(
    ("data", "message"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
def test_a_bad_manifest_is_refused_naming_the_problem(data: bytes, message: str) -> None:
    with pytest.raises(ImageError) as raised:
        parse_image_manifest(data)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("1048576", 1048576),
        ("256M", 256 * 10**6),
        ("1G", 10**9),
        ("2Gi", 2 * 2**30),
        ("512Ki", 512 * 1024),
        ("1.5Mi", 3 * 2**19),
        ("10k", 10_000),
        (" 64Mi ", 64 * 2**20),
    ],
)
def test_parse_memory_gives_bytes(text: str, expected: int) -> None:
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "-1M", "1X", "1 G", "1m", "Mi"])
def test_parse_memory_refuses_garbage_naming_the_value(text: str) -> None:
    with pytest.raises(PodError, match=f"memory quantity {text!r}"):
        parse_memory(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("500m", 500), ("2", 2000), ("1.5", 1500), ("0.25", 250), ("0", 0), ("1500m", 1500)],
)
def test_parse_cpu_gives_millicores(text: str, expected: int) -> None:
    assert parse_cpu(text) == expected


@pytest.mark.parametrize("text", ["", "fast", "-1", "1.5m", "0.0005", "2 cores"])
def test_parse_cpu_refuses_garbage_naming_the_value(text: str) -> None:
    with pytest.raises(PodError, match=f"CPU quantity {text!r}"):
        parse_cpu(text)


@pytest.mark.parametrize(
    ("machine", "arch"),
    [
        ("x86_64", "amd64"),
        ("AMD64", "amd64"),
        ("i686", "i386"),
        ("aarch64", "aarch64"),
        ("arm64", "aarch64"),
        ("armv7l", "armv7l"),
        ("ppc64le", "ppc64le"),
        ("riscv64", "riscv64"),
    ],
)
def test_host_arch_maps_the_machine_to_the_appc_name(
    monkeypatch: pytest.MonkeyPatch, machine: str, arch: str
) -> None:
    monkeypatch.setattr("platform.machine", lambda: machine)
    assert host_arch() == arch
