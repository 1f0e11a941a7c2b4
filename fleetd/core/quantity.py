"""appc (Kubernetes-style) quantities: memory sizes and CPU amounts, as containers give them.

Shared by the `[X-Container]` section (checked at submission) and fleet-pod (its flags and the
image's isolators), so a value one accepts the other accepts too.

* Memory: a number with an optional suffix, `k`/`K`, `M`, `G`, `T`, `P`, `E` (powers of 1000) or
  `Ki`, `Mi`, `Gi`, `Ti`, `Pi`, `Ei` (powers of 1024): `256M` = 256 000 000, `1.5Gi`, `1048576`.
* CPU: cores (`2`, `1.5`) or millicores (`500m`), in whole millicores.
"""

from __future__ import annotations

import re
from decimal import Decimal

_MEMORY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([kKMGTPE]i?)?$")
_DECIMAL = {"k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_CPU = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m?)$")


class QuantityError(ValueError):
    """A quantity that cannot be read; the message names it."""


def parse_memory(text: str) -> int:
    """A memory quantity in bytes."""
    match = _MEMORY.match(text.strip())
    if match is None:
        raise QuantityError(
            f"memory quantity {text!r} is not a number with an optional K/M/G/T "
            "(powers of 1000) or Ki/Mi/Gi/Ti (powers of 1024) suffix"
        )
    number, suffix = match.groups()
    factor = 1 if suffix is None else (_BINARY.get(suffix) or _DECIMAL.get(suffix))
    if factor is None:
        raise QuantityError(f"memory quantity {text!r} has an unknown suffix {suffix!r}")
    return int(Decimal(number) * factor)


def parse_cpu(text: str) -> int:
    """A CPU quantity in millicores: `500m` -> 500, `2` -> 2000, `1.5` -> 1500."""
    match = _CPU.match(text.strip())
    if match is None:
        raise QuantityError(
            f"CPU quantity {text!r} is not a number of cores (`1.5`) or millicores (`500m`)"
        )
    number, milli = match.groups()
    value = Decimal(number) * (1 if milli else 1000)
    if value != value.to_integral_value():
        raise QuantityError(f"CPU quantity {text!r} is finer than one millicore")
    return int(value)


def cpu_quota(millicores: int) -> str:
    """systemd's `CPUQuota=` for an amount of CPU: 500 -> `50%`, 1505 -> `150.5%`."""
    whole, tenth = divmod(millicores, 10)
    return f"{whole}%" if tenth == 0 else f"{whole}.{tenth}%"
