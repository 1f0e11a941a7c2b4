"""The sizes fleet-pod reads or writes at most, and a bounded read of a small file.

Each limit has its home here; the modules that enforce them import them, and
`docs/containers.md` states them (*Limits*).

Invariants:
* A key file or a signature is read with `read_at_most`, which never reads more than one byte
  past its limit, whatever the file is (`/dev/zero`, a FIFO that never ends, a huge file whose
  `stat` size says 0): too much is a refusal naming the file and the limit.
* The expanded size of an image (its uncompressed tar) is bounded by `DEFAULT_MAX_IMAGE_BYTES`
  unless the caller raises it (`--max-image-size`); the same bound applies to a download.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from fleetpod.errors import PodError

MAX_KEY_FILE_BYTES = 64 << 10
MAX_SIGNATURE_BYTES = 1 << 20
DEFAULT_MAX_IMAGE_BYTES = 4 << 30


def size_text(size: int) -> str:
    """`64 KiB`, `1 MiB`, `4 GiB` for whole binary units; otherwise `N bytes`."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift} {unit}"
    return f"{size} bytes"


def read_stream_at_most(
    stream: BinaryIO, limit: int, *, what: str, error: type[PodError] = PodError
) -> bytes:
    """Up to `limit` bytes of `stream`; more is `error` saying `what` is too large."""
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise error(f"{what} is larger than {size_text(limit)}")
    return data


def read_at_most(path: Path, limit: int, *, what: str, error: type[PodError] = PodError) -> bytes:
    """The bytes of the file `path` (`what` names it in errors), refused beyond `limit`."""
    named = f"{what} {str(path)!r}"
    try:
        with open(path, "rb") as file:
            return read_stream_at_most(file, limit, what=named, error=error)
    except OSError as problem:
        raise error(f"cannot read {named}: {problem.strerror}") from None
