"""Where fleet-pod keeps its state, and which safety checks the caller switched off.

Invariants:
* The data directory (images, rendered trees, pods) defaults to `/var/lib/pyfleet` and
  the config directory (trusted keys) to `/etc/pyfleet`; `FLEET_POD_DATA_DIR` and
  `FLEET_POD_CONFIG_DIR`, or the CLI's `--dir` and `--config`, move them (tests, unprivileged use).
* `--insecure-options` keeps rkt's vocabulary: a comma list of `none`, `image` (accept unsigned
  or untrusted images), `http` (plain-HTTP fetches), `tls` (any certificate), `modes` (keep the
  set-user-ID, set-group-ID and world-write bits of the files of an image imported with it),
  `all-fetch` (image, http, tls) and `all`; any other word is refused by name.
* `--max-image-size` bounds an image's download and its decompressed tar (`fleetpod.limits`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from fleetd.core.quantity import QuantityError, parse_memory
from fleetpod.errors import PodError
from fleetpod.limits import DEFAULT_MAX_IMAGE_BYTES

DEFAULT_DATA_DIR = Path("/var/lib/pyfleet")
DEFAULT_CONFIG_DIR = Path("/etc/pyfleet")
DATA_DIR_ENV = "FLEET_POD_DATA_DIR"
CONFIG_DIR_ENV = "FLEET_POD_CONFIG_DIR"
MIN_MAX_IMAGE_BYTES = 1 << 20


@dataclass(frozen=True)
class PodPaths:
    """The two roots of fleet-pod's state and the directories under them."""

    data_dir: Path
    config_dir: Path

    @classmethod
    def resolve(
        cls,
        data_dir: Path | None = None,
        config_dir: Path | None = None,
        environ: Mapping[str, str] = os.environ,
    ) -> PodPaths:
        """Flags first, then the environment, then the system defaults."""
        data = data_dir or Path(environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR)
        config = config_dir or Path(environ.get(CONFIG_DIR_ENV) or DEFAULT_CONFIG_DIR)
        return cls(data_dir=data.absolute(), config_dir=config.absolute())

    @property
    def images_dir(self) -> Path:
        """The content-addressed image store and its rendered trees."""
        return self.data_dir / "images"

    @property
    def pods_dir(self) -> Path:
        """Pod directories, one subdirectory per lifecycle state."""
        return self.data_dir / "pods"

    @property
    def trust_dir(self) -> Path:
        """Trusted keys: `root.d/<keyid>` and `prefix.d/<name prefix>/<keyid>`."""
        return self.config_dir / "trustedkeys"


class Insecure(StrEnum):
    """One check the caller may switch off."""

    IMAGE = "image"
    HTTP = "http"
    TLS = "tls"
    MODES = "modes"


_GROUPS: dict[str, frozenset[Insecure]] = {
    "none": frozenset(),
    "image": frozenset({Insecure.IMAGE}),
    "http": frozenset({Insecure.HTTP}),
    "tls": frozenset({Insecure.TLS}),
    "modes": frozenset({Insecure.MODES}),
    "all-fetch": frozenset({Insecure.IMAGE, Insecure.HTTP, Insecure.TLS}),
    "all": frozenset(Insecure),
}


def parse_insecure_options(text: str) -> frozenset[Insecure]:
    """`image,http` -> the checks switched off; an unknown word raises `PodError` naming it."""
    chosen: set[Insecure] = set()
    for word in (part.strip() for part in text.split(",")):
        if not word:
            continue
        if word not in _GROUPS:
            known = ", ".join(_GROUPS)
            raise PodError(f"unknown --insecure-options value {word!r} (known: {known})")
        chosen |= _GROUPS[word]
    return frozenset(chosen)


def parse_max_image_size(text: str) -> int:
    """`--max-image-size`: bytes, or a quantity such as `8Gi` or `10G`; at least 1 MiB."""
    try:
        size = parse_memory(text)
    except QuantityError as error:
        raise PodError(f"invalid --max-image-size {text!r}: {error}") from None
    if size < MIN_MAX_IMAGE_BYTES:
        raise PodError(f"invalid --max-image-size {text!r}: below the minimum of 1Mi")
    return size


@dataclass(frozen=True)
class PodSettings:
    """What every fleet-pod command gets from the global flags (typer's `ctx.obj`)."""

    paths: PodPaths
    insecure: frozenset[Insecure] = frozenset()
    debug: bool = False
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
