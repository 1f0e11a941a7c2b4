"""A hook around a real client's transactions, for tests that lose etcd's answer on purpose."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from fleetd.registry.client import EtcdClient, TxnResult
from fleetd.registry.errors import EtcdUnavailable

Txn = Callable[..., Awaitable[TxnResult]]
First = Callable[[Txn, tuple[Any, ...], dict[str, Any]], Awaitable[TxnResult]]


def lost() -> EtcdUnavailable:
    """What the client raises when the connection breaks after a request was sent."""
    return EtcdUnavailable("Txn: UNAVAILABLE: Socket closed")


def hook_txn(
    monkeypatch: pytest.MonkeyPatch,
    client: EtcdClient,
    first: First,
    *,
    writes_only: bool = False,
) -> list[str]:
    """Run `first(real_txn, args, kwargs)` in place of the client's first txn (with
    `writes_only`, its first txn that changes something); the others are real. Returns a log of
    the calls: "hooked", then "real" for each later one."""
    real: Txn = client.txn
    calls: list[str] = []

    async def txn(*args: Any, **kwargs: Any) -> TxnResult:
        changes = args[1] if len(args) > 1 else kwargs.get("success", ())
        if "hooked" not in calls and (changes or not writes_only):
            calls.append("hooked")
            return await first(real, args, kwargs)
        calls.append("real")
        return await real(*args, **kwargs)

    monkeypatch.setattr(client, "txn", txn)
    return calls
