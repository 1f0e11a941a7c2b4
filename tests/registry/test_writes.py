"""Guarded writes on a real etcd: one transaction, and a known outcome when etcd's answer is lost.

Lost answers are made two ways: a hook around the client's `txn` that applies the write and then
raises (or raises before sending) as a broken connection would, and a real etcd paused with
SIGSTOP while the request is in flight, so the call times out with the request unread.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from devtools.etcd_server import EtcdServer
from fleetd.registry.client import EtcdClient, Put
from fleetd.registry.errors import EtcdCompacted, EtcdUnavailable
from fleetd.registry.writes import (
    NEVER_SENT,
    Applied,
    GuardedWrite,
    Moved,
    WriteOutcomeUnknown,
    apply_guarded,
    deadline_in,
    read_keys,
)
from tests.registry.hooks import Txn, hook_txn, lost


async def seen_at(client: EtcdClient, key: str) -> tuple[int, int]:
    """(mod revision of `key`, 0 when absent; the revision it was read at)."""
    found, revision = await read_keys(client, [key], deadline=deadline_in(5))
    kv = found.get(key)
    return (0 if kv is None else kv.mod_revision), revision


async def put_write(client: EtcdClient, key: str, value: bytes) -> GuardedWrite:
    mod_revision, observed_at = await seen_at(client, key)
    return GuardedWrite({key: mod_revision}, {key: value}, observed_at)


async def apply(client: EtcdClient, write: GuardedWrite, resolve_for: float = 5.0) -> object:
    return await apply_guarded(client, write, deadline=deadline_in(5), resolve_for=resolve_for)


async def version(client: EtcdClient, key: str) -> int:
    """How many times `key` was written since it was created (0: absent)."""
    return (await stored(client, key))[1]


async def stored(client: EtcdClient, key: str) -> tuple[bytes | None, int]:
    """The value of `key` (None: absent) and how many times it was written since created."""
    kv = await client.get(key)
    return (None, 0) if kv is None else (kv.value, kv.version)


async def test_a_guarded_write_applies_or_moves(etcd: EtcdClient, key_prefix: str) -> None:
    key = key_prefix + "k"
    create = await put_write(etcd, key, b"1")
    created = await apply(etcd, create)
    assert isinstance(created, Applied)
    assert await stored(etcd, key) == (b"1", 1)
    assert await apply(etcd, create) == Moved()  # decided from "absent": the key exists now
    confirm = GuardedWrite({key: created.revision}, {}, created.revision)
    assert isinstance(await apply(etcd, confirm), Applied)
    assert await apply(etcd, GuardedWrite({key: 0}, {}, created.revision)) == Moved()
    delete = GuardedWrite({key: created.revision}, {key: None}, created.revision)
    assert isinstance(await apply(etcd, delete), Applied)
    assert await etcd.get(key) is None
    with pytest.raises(ValueError, match="without an expected revision"):
        GuardedWrite({}, {key: b"x"}, 0)


async def test_an_answer_lost_after_the_write_is_applied_once(
    etcd: EtcdClient, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = key_prefix + "k"
    write = await put_write(etcd, key, b"ours")

    async def applied_then_lost(real: Txn, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        await real(*args, **kwargs)
        raise lost()

    calls = hook_txn(monkeypatch, etcd, applied_then_lost)
    outcome = await apply(etcd, write)
    assert isinstance(outcome, Applied)
    kv = await etcd.get(key)
    assert kv is not None
    assert (kv.mod_revision, kv.version) == (outcome.revision, 1)
    assert calls == ["hooked"]  # found out, not sent again


async def test_a_request_lost_before_etcd_read_it_is_sent_again_once(
    etcd: EtcdClient, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = key_prefix + "k"
    await etcd.put(key, b"before")
    write = await put_write(etcd, key, b"ours")

    async def unsent(real: Txn, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        raise lost()

    calls = hook_txn(monkeypatch, etcd, unsent)
    assert isinstance(await apply(etcd, write), Applied)
    assert calls == ["hooked", "real"]
    assert await stored(etcd, key) == (b"ours", 2)


async def test_a_lost_write_overwritten_since_is_not_written_again(
    etcd: EtcdClient, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = key_prefix + "k"
    write = await put_write(etcd, key, b"ours")

    async def applied_overwritten_lost(
        real: Txn, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        await real(*args, **kwargs)
        await etcd.put(key, b"theirs")  # another writer, who saw ours, before the answer came
        raise lost()

    hook_txn(monkeypatch, etcd, applied_overwritten_lost)
    assert isinstance(await apply(etcd, write), Applied)
    assert await stored(etcd, key) == (b"theirs", 2)


async def test_a_lost_write_that_lost_the_race_has_moved(
    etcd: EtcdClient, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = key_prefix + "k"
    write = await put_write(etcd, key, b"ours")

    async def beaten_then_lost(real: Txn, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        await etcd.put(key, b"theirs")  # another writer got there first: our guard fails
        await real(*args, **kwargs)
        raise lost()

    hook_txn(monkeypatch, etcd, beaten_then_lost)
    assert await apply(etcd, write) == Moved()
    assert await stored(etcd, key) == (b"theirs", 1)


async def test_a_lost_batch_is_judged_as_a_whole(
    etcd: EtcdClient, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer set one key of the batch to the same value first: the batch did not apply."""
    a, b = key_prefix + "m/1/a", key_prefix + "m/2/b"
    found, observed_at = await read_keys(etcd, [a, b], deadline=deadline_in(5))
    assert found == {}
    write = GuardedWrite({a: 0, b: 0}, {a: b"x", b: b"y"}, observed_at)

    async def beaten_then_lost(real: Txn, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        await etcd.put(a, b"x")
        await real(*args, **kwargs)
        raise lost()

    hook_txn(monkeypatch, etcd, beaten_then_lost)
    assert await apply(etcd, write) == Moved()
    assert await etcd.get(b) is None


async def test_compacted_history_is_judged_by_the_current_values(
    etcd: EtcdClient, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = key_prefix + "k"
    write = await put_write(etcd, key, b"ours")

    async def applied_compacted_lost(
        real: Txn, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        result = await real(*args, **kwargs)
        await etcd.compact(await etcd.put(key_prefix + "other", b""), physical=True)
        assert result.succeeded
        raise lost()

    hook_txn(monkeypatch, etcd, applied_compacted_lost)
    assert isinstance(await apply(etcd, write), Applied)
    assert await version(etcd, key) == 1


async def test_a_confirmation_whose_answer_is_lost_is_just_unavailable(
    etcd: EtcdClient, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = key_prefix + "k"
    mod_revision, observed_at = await seen_at(etcd, key)

    async def unsent(real: Txn, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        raise lost()

    calls = hook_txn(monkeypatch, etcd, unsent)
    with pytest.raises(EtcdUnavailable):
        await apply(etcd, GuardedWrite({key: mod_revision}, {}, observed_at))
    assert calls == ["hooked"]


@pytest.fixture
async def private_client(private_etcd: EtcdServer) -> AsyncIterator[EtcdClient]:
    client = await EtcdClient.connect([private_etcd.endpoint], timeout=1.0)
    try:
        yield client
    finally:
        await client.close()


@pytest.mark.parametrize("existing", [None, b"before"], ids=["create", "update"])
async def test_a_write_sent_to_a_paused_etcd_is_found_out_once_it_answers(
    private_etcd: EtcdServer,
    private_client: EtcdClient,
    monkeypatch: pytest.MonkeyPatch,
    existing: bytes | None,
) -> None:
    """The request waits in etcd's socket while etcd is stopped and the call times out; then
    etcd goes on, and may apply it: either way the write ends up applied, once."""
    key = "/t/k"
    if existing is not None:
        await private_client.put(key, existing)
    write = await put_write(private_client, key, b"ours")

    async def paused(real: Txn, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        private_etcd.pause()
        try:
            return await real(*args, **kwargs)
        finally:
            private_etcd.resume()

    calls = hook_txn(monkeypatch, private_client, paused)
    outcome = await apply_guarded(private_client, write, deadline=deadline_in(0.5), resolve_for=10)
    assert isinstance(outcome, Applied)
    assert calls[0] == "hooked"
    kv = await private_client.get(key)
    assert kv is not None
    assert (kv.value, kv.mod_revision) == (b"ours", outcome.revision)
    assert kv.version == (1 if existing is None else 2)


async def test_an_etcd_silent_for_the_whole_resolution_gives_an_unknown_outcome(
    private_etcd: EtcdServer, private_client: EtcdClient
) -> None:
    write = await put_write(private_client, "/t/k", b"ours")
    private_etcd.pause()
    try:
        with pytest.raises(WriteOutcomeUnknown, match="may or may not have been applied"):
            await asyncio.wait_for(
                apply_guarded(private_client, write, deadline=deadline_in(0.5), resolve_for=1.0),
                30,
            )
    finally:
        private_etcd.resume()


async def test_the_keys_of_a_batch_are_read_in_one_snapshot(
    etcd: EtcdClient, key_prefix: str
) -> None:
    await etcd.txn([], [Put(key_prefix + "a/1", b"1"), Put(key_prefix + "b/2", b"2")])
    await etcd.put(key_prefix + "a/10", b"not asked for")
    found, revision = await read_keys(
        etcd, [key_prefix + "a/1", key_prefix + "b/2", key_prefix + "c"], deadline=deadline_in(5)
    )
    assert sorted(found) == [key_prefix + "a/1", key_prefix + "b/2"]
    assert revision >= max(kv.mod_revision for kv in found.values())


async def test_a_snapshot_compacted_between_its_pages_is_read_again(
    etcd: EtcdClient, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await etcd.put(key_prefix + "k", b"v")
    real = etcd.get_prefix
    calls = 0

    async def compacted_once(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:  # what get_prefix raises when a later page's revision is gone
            raise EtcdCompacted("Range: OUT_OF_RANGE: required revision has been compacted")
        return await real(*args, **kwargs)

    monkeypatch.setattr(etcd, "get_prefix", compacted_once)
    found, _ = await read_keys(etcd, [key_prefix + "k"], deadline=deadline_in(5))
    assert (list(found), calls) == ([key_prefix + "k"], 2)


async def test_a_write_with_no_connection_to_etcd_was_never_sent(
    private_etcd: EtcdServer, private_client: EtcdClient
) -> None:
    """etcd is down: gRPC finds no connection, so the write never left and nothing is resolved."""
    write = await put_write(private_client, "/t/k", b"ours")
    private_etcd.stop()
    with pytest.raises(EtcdUnavailable, match=NEVER_SENT):
        await apply_guarded(private_client, write, deadline=deadline_in(0.5), resolve_for=30)
    private_etcd.start()
    fresh = await EtcdClient.connect([private_etcd.endpoint])
    try:
        assert await fresh.get("/t/k") is None
    finally:
        await fresh.close()
