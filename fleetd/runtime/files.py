"""Writing a small file so that a reader sees the old bytes or the new, never half of them.

Shared by everything that keeps state in files: the agent's unit files, drop-ins and launch
intents, and fleet-pod's signatures, trusted keys, store index and pod records.

Invariants: the bytes go to a temporary file in the same directory (created if missing, mode
0755), which gets `mode` and is then renamed over `path`; on any failure the temporary file is
removed and `path` is untouched.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomically(path: Path, data: bytes, *, mode: int = 0o644) -> Path:
    """Replace `path` with `data` atomically; returns `path`."""
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
