"""The global settings: where state lives, the checks switched off, the image size limit."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetpod.config import (
    DEFAULT_CONFIG_DIR,
    DEFAULT_DATA_DIR,
    Insecure,
    PodPaths,
    parse_insecure_options,
    parse_max_image_size,
)
from fleetpod.errors import PodError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("none", set()),
        ("", set()),
        ("image", {Insecure.IMAGE}),
        ("image, http", {Insecure.IMAGE, Insecure.HTTP}),
        ("modes", {Insecure.MODES}),
        ("all-fetch", {Insecure.IMAGE, Insecure.HTTP, Insecure.TLS}),
        ("all-fetch,modes", set(Insecure)),
        ("all", set(Insecure)),
    ],
)
def test_insecure_options_in_rkt_words(text: str, expected: set[Insecure]) -> None:
    assert parse_insecure_options(text) == expected


def test_an_unknown_insecure_option_is_refused_by_name() -> None:
    with pytest.raises(PodError, match=r"unknown --insecure-options value 'setuid' \(known: "):
        parse_insecure_options("image,setuid")


@pytest.mark.parametrize(
    ("text", "size"),
    [("4Gi", 4 << 30), ("10G", 10 * 10**9), ("1Mi", 1 << 20), ("2097152", 2 << 20)],
)
def test_max_image_size_takes_bytes_or_quantities(text: str, size: int) -> None:
    assert parse_max_image_size(text) == size


@pytest.mark.parametrize(
    ("text", "message"),
    [("lots", "memory quantity 'lots' is not a number"), ("1000", "below the minimum of 1Mi")],
)
def test_a_bad_max_image_size_is_refused(text: str, message: str) -> None:
    with pytest.raises(PodError, match=f"invalid --max-image-size '{text}': {message}"):
        parse_max_image_size(text)


def test_paths_come_from_flags_then_the_environment_then_the_defaults(tmp_path: Path) -> None:
    environ = {"FLEET_POD_DATA_DIR": str(tmp_path / "env-data")}
    from_env = PodPaths.resolve(environ=environ)
    assert from_env.data_dir == tmp_path / "env-data"
    assert from_env.config_dir == DEFAULT_CONFIG_DIR
    from_flag = PodPaths.resolve(tmp_path / "flag-data", environ=environ)
    assert from_flag.images_dir == tmp_path / "flag-data" / "images"
    assert PodPaths.resolve(environ={}).data_dir == DEFAULT_DATA_DIR
