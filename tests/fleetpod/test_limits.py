"""Bounded reads of small files, and how limits are written in messages."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from fleetpod.errors import PodError, TrustError
from fleetpod.limits import read_at_most, read_stream_at_most, size_text


def test_a_file_within_the_limit_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "key.pub"
    path.write_bytes(b"x" * 1024)
    assert read_at_most(path, 1024, what="key file") == b"x" * 1024


@pytest.mark.timeout(60)
def test_an_endless_or_larger_file_is_refused_after_one_byte_more(tmp_path: Path) -> None:
    with pytest.raises(TrustError, match=r"^key file '/dev/zero' is larger than 64 KiB$"):
        read_at_most(Path("/dev/zero"), 64 << 10, what="key file", error=TrustError)
    stream = io.BytesIO(b"y" * 5000)
    with pytest.raises(PodError, match=r"^signature is larger than 4 KiB$"):
        read_stream_at_most(stream, 4096, what="signature")
    assert stream.tell() == 4097


def test_an_unreadable_file_names_the_cause(tmp_path: Path) -> None:
    with pytest.raises(PodError, match=r"^cannot read signature '.*/nope': No such file"):
        read_at_most(tmp_path / "nope", 10, what="signature")
    with pytest.raises(PodError, match="Is a directory"):
        read_at_most(tmp_path, 10, what="signature")


def test_size_text_uses_whole_binary_units() -> None:
    assert [size_text(n) for n in (1000, 1 << 10, 64 << 10, 1 << 20, 3 << 30, (1 << 20) + 1)] == [
        "1000 bytes",
        "1 KiB",
        "64 KiB",
        "1 MiB",
        "3 GiB",
        "1048577 bytes",
    ]
