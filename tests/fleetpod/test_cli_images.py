"""The image, key, trust and fetch commands, driven through a root app registered as cli.py does."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Annotated

import pytest
import typer
from typer.testing import CliRunner, Result

from fleetpod.cli_images import (
    exec_argv,
    fetch_command,
    human_size,
    image_app,
    key_app,
    trust_command,
)
from fleetpod.config import PodPaths, PodSettings, parse_insecure_options
from fleetpod.errors import ImageError
from fleetpod.image import image_id_of
from fleetpod.store import ImageStore
from fleetpod.trust import TrustStore
from tests.fleetpod.conftest import IMAGE_NAME, KeyPair


def make_app() -> typer.Typer:
    app = typer.Typer(add_completion=False)

    @app.callback()
    def root(
        ctx: typer.Context,
        data_dir: Annotated[Path, typer.Option("--dir")],
        config_dir: Annotated[Path, typer.Option("--config")],
        insecure_options: Annotated[str, typer.Option("--insecure-options")] = "none",
    ) -> None:
        ctx.obj = PodSettings(
            paths=PodPaths.resolve(data_dir, config_dir),
            insecure=parse_insecure_options(insecure_options),
        )

    app.command("fetch")(fetch_command)
    app.command("trust")(trust_command)
    app.add_typer(image_app, name="image")
    app.add_typer(key_app, name="key")
    return app


class Cli:
    def __init__(self, paths: PodPaths) -> None:
        self.paths = paths
        self.app = make_app()
        self.runner = CliRunner()

    def __call__(self, *args: str, insecure: str = "none", stdin: bytes | None = None) -> Result:
        flags = ["--dir", str(self.paths.data_dir), "--config", str(self.paths.config_dir)]
        flags += ["--insecure-options", insecure]
        return self.runner.invoke(self.app, [*flags, *args], input=stdin)


@pytest.fixture
def cli(pod_paths: PodPaths) -> Cli:
    return Cli(pod_paths)


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result.stdout


def failed(result: Result) -> str:
    assert result.exit_code == 254, (result.stdout, result.stderr)
    assert result.stderr.startswith("fleet-pod: ")
    return result.stderr


def test_generate_build_sign_trust_fetch_and_list(
    cli: Cli, tmp_path: Path, rootfs_dir: Path
) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    keyid = ok(cli("key", "generate", "--out", str(keys / "release"))).split()[0]
    assert (keys / "release.key").is_file()
    assert (keys / "release.pub").read_text().endswith(" release\n")

    image = tmp_path / "app.aci"
    built = ok(
        cli(
            "image", "build", str(rootfs_dir), "--name", IMAGE_NAME, "--version", "1.0",
            "--exec", "/bin/hello", "--exec", "--loud", "--env", "MODE=prod",
            "--mount-point", "data:/var/data:ro", "-o", str(image),
        )
    ).strip()  # fmt: skip
    assert built == image_id_of(image)

    assert ok(cli("image", "sign", "--key", str(keys / "release.key"), str(image))).strip() == (
        f"{image}.sig"
    )
    trusted = ok(cli("trust", "--prefix", IMAGE_NAME, str(keys / "release.pub")))
    assert trusted.strip() == f"trusted {keyid} (prefix {IMAGE_NAME})"

    fetched = cli("fetch", str(image))
    assert ok(fetched).strip() == built
    assert fetched.stderr == ""

    lines = ok(cli("image", "list")).splitlines()
    assert lines[0].split() == ["ID", "NAME", "VERSION", "SIZE", "IMPORTED", "SIGNED", "BY"]
    row = lines[1].split()
    assert row[0] == built[: len("sha512-") + 32]
    assert row[1:3] == [IMAGE_NAME, "1.0"]
    assert row[-1] == keyid[:16]

    manifest = json.loads(ok(cli("image", "cat-manifest", IMAGE_NAME)))
    assert manifest["app"]["exec"] == ["/bin/hello", "--loud"]
    assert manifest["app"]["environment"] == [{"name": "MODE", "value": "prod"}]
    assert manifest["app"]["mountPoints"] == [
        {"name": "data", "path": "/var/data", "readOnly": True}
    ]


@pytest.fixture
def trusted_cli(cli: Cli, key_pair: KeyPair) -> Cli:
    ok(cli("trust", "--prefix", IMAGE_NAME, str(key_pair.public_path)))
    return cli


def test_fetch_refuses_an_unsigned_image_with_exit_254(
    cli: Cli, image_file: Path, pod_paths: PodPaths
) -> None:
    result = cli("fetch", str(image_file))
    message = failed(result)
    assert f"image {image_file.absolute()} has no signature" in message
    assert "--insecure-options=image" in message
    assert result.stdout == ""
    assert ImageStore(pod_paths.images_dir).list() == []


def test_fetch_with_insecure_image_warns_on_stderr_and_prints_the_id(
    cli: Cli, image_file: Path
) -> None:
    result = cli("fetch", str(image_file), insecure="image")
    assert ok(result).strip() == image_id_of(image_file)
    assert result.stderr.startswith("fleet-pod: WARNING: SIGNATURE CHECK DISABLED")


def test_fetch_takes_an_explicit_signature(
    trusted_cli: Cli, signed_image: Path, tmp_path: Path
) -> None:
    moved = tmp_path / "elsewhere.sig"
    signed_image.with_name(signed_image.name + ".sig").rename(moved)
    assert "has no signature" in failed(trusted_cli("fetch", str(signed_image)))
    result = trusted_cli("fetch", str(signed_image), "--signature", str(moved))
    assert ok(result).strip() == image_id_of(signed_image)


def test_fetch_of_an_untrusted_image_says_how_to_trust_it(
    cli: Cli, signed_image: Path, key_pair: KeyPair
) -> None:
    message = failed(cli("fetch", str(signed_image)))
    assert f"signed by key {key_pair.keyid} which is not trusted" in message
    assert "fleet-pod trust --prefix example.com/app KEYFILE" in message


def test_image_rm_export_and_errors(
    trusted_cli: Cli, signed_image: Path, tmp_path: Path, pod_paths: PodPaths
) -> None:
    image_id = ok(trusted_cli("fetch", str(signed_image))).strip()
    exported = tmp_path / "out.tar"
    ok(trusted_cli("image", "export", image_id[:20], "-o", str(exported)))
    assert image_id_of(exported) == image_id
    with tarfile.open(exported) as tar:
        assert tar.getnames()[:2] == ["manifest", "rootfs"]

    result = trusted_cli("image", "rm", "example.com/nope", image_id[:20])
    assert failed(result) == "fleet-pod: no image matches 'example.com/nope'\n"
    assert result.stdout == f"removed {image_id}\n"
    assert ImageStore(pod_paths.images_dir).list() == []
    assert "no image matches" in failed(trusted_cli("image", "export", image_id, "-o", "x"))
    assert "no image matches" in failed(trusted_cli("image", "cat-manifest", IMAGE_NAME))


def test_image_list_of_an_empty_store_prints_the_header(cli: Cli) -> None:
    assert ok(cli("image", "list")).split() == [
        "ID", "NAME", "VERSION", "SIZE", "IMPORTED", "SIGNED", "BY",
    ]  # fmt: skip


def test_image_list_marks_unverified_images(cli: Cli, image_file: Path) -> None:
    ok(cli("fetch", str(image_file), insecure="image"))
    assert ok(cli("image", "list")).splitlines()[1].split()[-1] == "unverified"


def test_build_splits_a_single_exec_like_a_shell(
    cli: Cli, tmp_path: Path, rootfs_dir: Path
) -> None:
    image = tmp_path / "sh.aci"
    ok(
        cli(
            "image", "build", str(rootfs_dir), "--name", "example.com/sh", "--version", "2",
            "--exec", "/bin/sh -c 'echo hello world'", "--compression", "xz", "-o", str(image),
        )
    )  # fmt: skip
    assert image.read_bytes()[:6] == b"\xfd7zXZ\x00"
    with tarfile.open(image) as tar:
        manifest = json.load(tar.extractfile("manifest"))  # type: ignore[arg-type]
    assert manifest["app"]["exec"] == ["/bin/sh", "-c", "echo hello world"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--env", "NOEQUALS"], "--env 'NOEQUALS' is not KEY=VALUE"),
        (["--mount-point", "data"], "--mount-point 'data' is not NAME:PATH[:ro]"),
        (["--mount-point", "Data:/d"], "mount point name 'Data' is not an AC name"),
        (["--user", ""], "app.user is missing"),
    ],
)
def test_build_refusals_exit_254(
    cli: Cli, tmp_path: Path, rootfs_dir: Path, extra: list[str], message: str
) -> None:
    output = tmp_path / "x.aci"
    result = cli(
        "image", "build", str(rootfs_dir), "--name", "example.com/x", "--version", "1",
        "--exec", "/x", "-o", str(output), *extra,
    )  # fmt: skip
    assert message in failed(result)
    assert not output.exists()


def test_build_refuses_a_bad_name(cli: Cli, tmp_path: Path, rootfs_dir: Path) -> None:
    result = cli(
        "image", "build", str(rootfs_dir), "--name", "Foo Bar", "--version", "1",
        "--exec", "/x", "-o", str(tmp_path / "x.aci"),
    )  # fmt: skip
    assert "image name 'Foo Bar' is not an AC identifier" in failed(result)


def test_sign_refusals(cli: Cli, tmp_path: Path, key_pair: KeyPair, image_file: Path) -> None:
    assert "is not a PEM or OpenSSH private key" in failed(
        cli("image", "sign", "--key", str(key_pair.public_path), str(image_file))
    )
    assert "no image file" in failed(
        cli("image", "sign", "--key", str(key_pair.private_path), str(tmp_path / "nope.aci"))
    )


def test_trust_root_list_and_rm(
    cli: Cli, key_pair: KeyPair, other_key_pair: KeyPair, pod_paths: PodPaths
) -> None:
    assert ok(cli("trust", "--root", str(other_key_pair.public_path))).strip() == (
        f"trusted {other_key_pair.keyid} (every image)"
    )
    ok(cli("trust", "--prefix", "example.com", str(key_pair.public_path)))

    lines = ok(cli("trust", "list")).splitlines()
    assert lines[0].split() == ["KEY", "ID", "PREFIX", "COMMENT"]
    assert [line.split() for line in lines[1:]] == [
        [other_key_pair.keyid, "(root)", "stranger"],
        [key_pair.keyid, "example.com", "publisher"],
    ]

    wrong_scope = cli("trust", "rm", key_pair.keyid[:12], "--prefix", "example.org")
    assert "no trusted key matches" in failed(wrong_scope)
    assert "for prefix 'example.org'" in wrong_scope.stderr
    removed = ok(cli("trust", "rm", key_pair.keyid[:12], "--prefix", "example.com"))
    assert removed.strip() == f"removed {key_pair.keyid} (prefix example.com)"
    assert ok(cli("trust", "rm", other_key_pair.keyid)).strip() == (
        f"removed {other_key_pair.keyid} (every image)"
    )
    assert TrustStore(pod_paths.trust_dir).list() == []


def test_trust_reads_a_key_from_stdin(cli: Cli, key_pair: KeyPair, pod_paths: PodPaths) -> None:
    ok(cli("trust", "--root", "-", stdin=key_pair.public_path.read_bytes()))
    assert [k.keyid for k in TrustStore(pod_paths.trust_dir).list()] == [key_pair.keyid]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["KEYFILE"], "give --prefix NAME_PREFIX (or --root)"),
        (["--root", "--prefix", "a", "KEYFILE"], "give --prefix or --root, not both"),
        (["rm"], "usage: fleet-pod trust rm KEYID"),
        ([], "usage: fleet-pod trust"),
        (["a", "b"], "usage: fleet-pod trust"),
        (["--root", "/no/such.pub"], "cannot read key file '/no/such.pub'"),
        (["--prefix", "Bad Prefix", "PUB"], "trust prefix 'Bad Prefix' is not an AC identifier"),
        (["--root", "PRIVATE"], "is a private key"),
        (["rm", "abc"], "must be at least 8 hex digits"),
    ],
)
def test_trust_refusals_exit_254(
    cli: Cli, key_pair: KeyPair, args: list[str], message: str
) -> None:
    paths = {"PUB": str(key_pair.public_path), "PRIVATE": str(key_pair.private_path)}
    assert message in failed(cli("trust", *[paths.get(a, a) for a in args]))


def test_exec_argv_and_human_size() -> None:
    assert exec_argv(["/bin/sh", "-c", "echo hi"]) == ["/bin/sh", "-c", "echo hi"]
    assert exec_argv(["/bin/echo 'a b'"]) == ["/bin/echo", "a b"]
    with pytest.raises(ImageError, match="cannot split --exec"):
        exec_argv(["/bin/echo 'unterminated"])
    assert [human_size(n) for n in (0, 1023, 1536, 10 * 2**20, 3 * 2**40)] == [
        "0 B",
        "1023 B",
        "1.5 KiB",
        "10.0 MiB",
        "3.0 TiB",
    ]


@pytest.mark.timeout(60)
def test_trust_refuses_a_key_file_over_the_size_cap(cli: Cli, tmp_path: Path) -> None:
    """A key is ~100 bytes: a bigger file (or an endless one) is refused, not read to the end."""
    big = tmp_path / "big.pub"
    big.write_bytes(b"ed25519 " + b"A" * (100 << 10))
    assert f"key file {str(big)!r} is larger than 64 KiB" in failed(
        cli("trust", "--root", str(big))
    )
    assert "key file '/dev/zero' is larger than 64 KiB" in failed(
        cli("trust", "--root", "/dev/zero")
    )
    assert "key from stdin is larger than 64 KiB" in failed(
        cli("trust", "--root", "-", stdin=b"A" * (100 << 10))
    )


@pytest.mark.timeout(60)
def test_a_signature_nested_too_deeply_or_endless_is_a_refusal(
    cli: Cli, tmp_path: Path, image_file: Path
) -> None:
    deep = tmp_path / "deep.sig"
    deep.write_bytes(b"[" * 100_000)
    result = cli("fetch", str(image_file), "--signature", str(deep))
    assert "malformed signature file: nested too deeply" in failed(result)
    assert "Traceback" not in result.stderr
    beside = image_file.with_name(image_file.name + ".sig")
    beside.write_bytes(b"[" * 100_000)
    assert "malformed signature file: nested too deeply" in failed(cli("fetch", str(image_file)))
    endless = failed(cli("fetch", str(image_file), "--signature", "/dev/zero"))
    assert "signature '/dev/zero' is larger than 1 MiB" in endless
    assert ImageStore(cli.paths.images_dir).list() == []
