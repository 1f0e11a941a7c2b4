"""fleet-pod's image, key, trust and fetch commands (typer), registered by `fleetpod.cli`.

Registration (done by the root CLI, whose callback puts a `PodSettings` in `ctx.obj`):

    app.add_typer(image_app, name="image")
    app.add_typer(key_app, name="key")
    app.command("trust")(trust_command)
    app.command("fetch")(fetch_command)

Command lines: `image build DIR --name N --version V --exec ARG... -o FILE`, `image sign --key
KEY FILE`, `image list`, `image rm REF...`, `image export REF -o FILE`, `image cat-manifest REF`,
`key generate --out NAME`, `trust --prefix P KEYFILE`, `trust --root KEYFILE`, `trust list`,
`trust rm KEYID [--prefix P | --root]`, `fetch SOURCE [--signature FILE]`. (`trust` takes its
words as positional arguments, so a key file literally named `list` or `rm` needs `./list`.)

Invariants: every `PodError` is caught at the command, printed as `fleet-pod: <message>` on
stderr, and the exit code is 254 (rkt's stage0 failure code). Warnings (insecure switches in
effect) go to stderr; results (an image id, a key id) go to stdout.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC
from enum import StrEnum
from pathlib import Path
from types import EllipsisType
from typing import Annotated

import typer

from fleetpod.config import PodPaths, PodSettings
from fleetpod.errors import ImageError, PodError, StoreError
from fleetpod.fetch import fetch
from fleetpod.image import SHORT_IMAGE_ID, build_image
from fleetpod.image_manifest import MountPoint
from fleetpod.keys import generate_key_pair, load_private_key
from fleetpod.limits import MAX_KEY_FILE_BYTES, read_at_most, read_stream_at_most
from fleetpod.pods import PodState, PodStore
from fleetpod.signature import sign_image
from fleetpod.store import ImageRecord, ImageStore
from fleetpod.trust import TrustedKey, TrustStore

EXIT_FAILURE = 254

image_app = typer.Typer(
    name="image", help="Build, sign, list and remove images.", no_args_is_help=True
)
key_app = typer.Typer(name="key", help="Make signing keys.", no_args_is_help=True)


class Compression(StrEnum):
    NONE = "none"
    GZIP = "gzip"
    XZ = "xz"


def settings_of(ctx: typer.Context) -> PodSettings:
    """The root callback's settings, or the defaults (environment, then system paths)."""
    found = ctx.find_object(PodSettings)
    return found if found is not None else PodSettings(paths=PodPaths.resolve())


def store_of(settings: PodSettings) -> ImageStore:
    return ImageStore(settings.paths.images_dir)


def trust_of(settings: PodSettings) -> TrustStore:
    return TrustStore(settings.paths.trust_dir)


def warn(message: str) -> None:
    typer.echo(f"fleet-pod: {message}", err=True)


@contextmanager
def reported() -> Iterator[None]:
    """Turn a `PodError` into `fleet-pod: <message>` on stderr and exit code 254."""
    try:
        yield
    except PodError as error:
        typer.echo(f"fleet-pod: {error}", err=True)
        raise typer.Exit(EXIT_FAILURE) from None


@image_app.command("build")
def build_command(
    directory: Annotated[Path, typer.Argument(help="The directory that becomes rootfs/.")],
    *,
    name: Annotated[str, typer.Option("--name", help="Image name, e.g. example.com/app.")],
    version: Annotated[str, typer.Option("--version", help="The version label.")],
    exec_: Annotated[
        list[str], typer.Option("--exec", help="argv, repeated; one value is split like a shell.")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="The image file to write.")],
    user: Annotated[str, typer.Option("--user")] = "0",
    group: Annotated[str, typer.Option("--group")] = "0",
    env: Annotated[list[str] | None, typer.Option("--env", help="K=V, repeatable.")] = None,
    working_dir: Annotated[str, typer.Option("--working-dir")] = "/",
    mount_point: Annotated[
        list[str] | None, typer.Option("--mount-point", help="NAME:PATH[:ro], repeatable.")
    ] = None,
    compression: Annotated[Compression, typer.Option("--compression")] = Compression.GZIP,
) -> None:
    """Build an image file from a directory; prints the image id."""
    with reported():
        image_id = build_image(
            directory,
            output,
            name=name,
            version=version,
            exec_=exec_argv(exec_),
            user=user,
            group=group,
            environment=[_env_pair(item) for item in env or []],
            working_directory=working_dir,
            mount_points=[_mount_point(item) for item in mount_point or []],
            compression=compression.value,
        )
        typer.echo(image_id)


def exec_argv(values: Sequence[str]) -> list[str]:
    """`--exec` values: several are the argv as given, a single one is split like a shell."""
    if len(values) != 1:
        return list(values)
    try:
        return shlex.split(values[0])
    except ValueError as error:
        raise ImageError(f"cannot split --exec {values[0]!r}: {error}") from None


def _env_pair(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ImageError(f"--env {item!r} is not KEY=VALUE")
    return key, value


def _mount_point(item: str) -> MountPoint:
    parts = item.split(":")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
        raise ImageError(f"--mount-point {item!r} is not NAME:PATH[:ro]")
    return MountPoint(name=parts[0], path=parts[1], read_only=parts[2:] == ["ro"])


@image_app.command("sign")
def sign_command(
    image: Annotated[Path, typer.Argument(help="The image file; writes IMAGE.sig next to it.")],
    key: Annotated[Path, typer.Option("--key", help="Ed25519 private key (PEM or OpenSSH).")],
) -> None:
    """Sign an image file with an Ed25519 key."""
    with reported():
        private = load_private_key(key)
        if not image.is_file():
            raise ImageError(f"no image file {str(image)!r}")
        typer.echo(str(sign_image(image, private)))


@image_app.command("list")
def list_command(ctx: typer.Context) -> None:
    """List the images in the store."""
    with reported():
        records = store_of(settings_of(ctx)).list()
        rows: list[tuple[str, ...]] = [("ID", "NAME", "VERSION", "SIZE", "IMPORTED", "SIGNED BY")]
        rows += [_image_row(record) for record in records]
        _print_table(rows)


def _image_row(record: ImageRecord) -> tuple[str, ...]:
    signer = record.signed_by[:16] if record.signed_by else "unverified"
    imported = record.imported.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    version = record.version or "-"
    size = human_size(record.size)
    return (record.id[:SHORT_IMAGE_ID], record.name, version, size, imported, signer)


def human_size(size: int) -> str:
    """`512 B`, `1.5 KiB`, `12.0 MiB`, ... (binary units)."""
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    value, index = float(size), 0
    while value >= 1024 and index < len(units) - 1:
        value, index = value / 1024, index + 1
    return f"{size} B" if index == 0 else f"{value:.1f} {units[index]}"


def _print_table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        typer.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


@image_app.command("rm")
def rm_command(ctx: typer.Context, refs: Annotated[list[str], typer.Argument()]) -> None:
    """Remove images (by id, id prefix, name or name:version) and their rendered trees; an
    image a running pod uses is kept (its tree is the pod's root, or the root's lower layer)."""
    settings = settings_of(ctx)
    store = store_of(settings)
    failed = False
    for ref in refs:
        try:
            record = store.resolve(ref)
            users = [
                pod.uuid
                for pod in PodStore(settings.paths.pods_dir).list()
                if pod.image_id == record.id and pod.state is PodState.RUNNING
            ]
            if users:
                raise StoreError(
                    f"image {record.name} {record.id[:39]} is used by running pod"
                    f" {', '.join(users)}; stop it first"
                )
            typer.echo(f"removed {store.remove(record.id).id}")
        except PodError as error:
            typer.echo(f"fleet-pod: {error}", err=True)
            failed = True
    if failed:
        raise typer.Exit(EXIT_FAILURE)


@image_app.command("export")
def export_command(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument()],
    output: Annotated[Path, typer.Option("--output", "-o")],
) -> None:
    """Write an image's uncompressed archive to a file."""
    with reported():
        store_of(settings_of(ctx)).export(ref, output)


@image_app.command("cat-manifest")
def cat_manifest_command(ctx: typer.Context, ref: Annotated[str, typer.Argument()]) -> None:
    """Print an image's manifest."""
    with reported():
        data = store_of(settings_of(ctx)).manifest_bytes(ref)
        typer.echo(json.dumps(json.loads(data), indent=2))


@key_app.command("generate")
def key_generate_command(
    out: Annotated[str, typer.Option("--out", help="Writes OUT.key (private) and OUT.pub.")],
) -> None:
    """Make an Ed25519 key pair for `image sign` and `trust`."""
    with reported():
        private, public = Path(out + ".key"), Path(out + ".pub")
        keyid = generate_key_pair(private, public, comment=Path(out).name)
        typer.echo(f"{keyid}  private key {private}, public key {public}")


def trust_command(
    ctx: typer.Context,
    args: Annotated[
        list[str] | None, typer.Argument(metavar="KEYFILE | list | rm KEYID", show_default=False)
    ] = None,
    prefix: Annotated[
        str | None, typer.Option("--prefix", help="Trust the key for names under this prefix.")
    ] = None,
    root: Annotated[bool, typer.Option("--root", help="Trust the key for every image.")] = False,
) -> None:
    """Trust a public key for an image name prefix (or all images), list or remove keys."""
    words = args or []
    with reported():
        trust = trust_of(settings_of(ctx))
        if prefix is not None and root:
            raise PodError("give --prefix or --root, not both")
        if words == ["list"]:
            _print_keys(trust.list())
        elif words[:1] == ["rm"]:
            if len(words) != 2:
                raise PodError("usage: fleet-pod trust rm KEYID [--prefix P | --root]")
            scope: str | EllipsisType | None = None if root else (... if prefix is None else prefix)
            removed = trust.remove(words[1], prefix=scope)
            for key in removed:
                typer.echo(f"removed {key.keyid} ({_scope(key.prefix)})")
        elif len(words) == 1:
            if prefix is None and not root:
                raise PodError("give --prefix NAME_PREFIX (or --root) to say what the key signs")
            data = (
                read_stream_at_most(sys.stdin.buffer, MAX_KEY_FILE_BYTES, what="key from stdin")
                if words[0] == "-"
                else read_at_most(Path(words[0]), MAX_KEY_FILE_BYTES, what="key file")
            )
            key = trust.add(data, prefix=prefix, source=f"key file {words[0]!r}")
            typer.echo(f"trusted {key.keyid} ({_scope(key.prefix)})")
        else:
            raise PodError(
                "usage: fleet-pod trust (--prefix P | --root) KEYFILE | trust list | trust rm KEYID"
            )


def _scope(prefix: str | None) -> str:
    return "every image" if prefix is None else f"prefix {prefix}"


def _print_keys(keys: Sequence[TrustedKey]) -> None:
    rows: list[tuple[str, ...]] = [("KEY ID", "PREFIX", "COMMENT")]
    rows += [(k.keyid, k.prefix or "(root)", k.comment or "-") for k in keys]
    _print_table(rows)


def fetch_command(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(help="A path, file:// or https:// URL.")],
    signature: Annotated[
        Path | None, typer.Option("--signature", help="Signature file (default SOURCE.sig).")
    ] = None,
) -> None:
    """Fetch an image into the store after verifying its signature; prints its id."""
    with reported():
        settings = settings_of(ctx)
        record = fetch(
            source,
            store=store_of(settings),
            trust=trust_of(settings),
            insecure=settings.insecure,
            warn=warn,
            signature=signature,
            max_bytes=settings.max_image_bytes,
        )
        typer.echo(record.id)
