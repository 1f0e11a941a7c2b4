"""appc quantities: memory sizes and CPU amounts, and their refusals."""

from __future__ import annotations

import pytest

from fleetd.core.quantity import QuantityError, cpu_quota, parse_cpu, parse_memory


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("256", 256),
        ("64M", 64_000_000),
        ("512k", 512_000),
        ("1Gi", 2**30),
        ("1.5Gi", 3 * 2**29),
        ("512Ki", 512 * 1024),
        (" 2G ", 2 * 10**9),
    ],
)
def test_memory_sizes(text: str, size: int) -> None:
    assert parse_memory(text) == size


@pytest.mark.parametrize(("text", "millis"), [("500m", 500), ("2", 2000), ("1.5", 1500)])
def test_cpu_amounts(text: str, millis: int) -> None:
    assert parse_cpu(text) == millis


@pytest.mark.parametrize(
    ("parse", "text", "message"),
    [
        (parse_memory, "lots", "memory quantity 'lots' is not a number"),
        (parse_memory, "1Xi", "memory quantity '1Xi' is not a number"),
        (parse_memory, "1ki", "unknown suffix 'ki'"),
        (parse_cpu, "fast", "CPU quantity 'fast' is not a number"),
        (parse_cpu, "0.0005", "finer than one millicore"),
    ],
)
def test_refusals_name_the_value(parse: object, text: str, message: str) -> None:
    with pytest.raises(QuantityError, match=message):
        parse(text)  # type: ignore[operator]


@pytest.mark.parametrize(("millis", "quota"), [(500, "50%"), (2000, "200%"), (1505, "150.5%")])
def test_cpu_quota(millis: int, quota: str) -> None:
    assert cpu_quota(millis) == quota
