"""EtcdClient against a real etcd: KV, paging, txns, leases, errors and failover."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from contextlib import aclosing
from typing import Any

import pytest

from devtools.etcd_server import EtcdServer, free_port
from fleetd.registry.client import (
    ETCD_MAX_REQUEST_BYTES,
    FIRST_PAGE_KEYS,
    MAX_RECEIVE_BYTES,
    SAFE_PAGE_KEYS,
    Compare,
    Delete,
    EtcdClient,
    KeyValue,
    Put,
)
from fleetd.registry.errors import (
    EtcdCompacted,
    EtcdRequestTooLarge,
    EtcdResponseTooLarge,
    EtcdUnavailable,
    LeaseNotFound,
)
from fleetd.runtime.metrics import Metrics

GRPC_DEFAULT_RECEIVE = 4 * 1024 * 1024  # what a gRPC channel accepts unless told otherwise
BIG = 960_000  # under etcd's 1.5 MiB request limit; five of them are over GRPC_DEFAULT_RECEIVE


async def test_put_get_delete(etcd: EtcdClient, key_prefix: str) -> None:
    key = key_prefix + "unit"
    first = await etcd.put(key, b"one")
    assert await etcd.get(key) == KeyValue(key, b"one", first, first, 1, 0)

    second = await etcd.put(key, b"two")
    assert second > first
    assert await etcd.get(key) == KeyValue(key, b"two", first, second, 2, 0)

    assert await etcd.delete(key) == 1
    assert await etcd.get(key) is None
    assert await etcd.delete(key) == 0


async def test_keys_are_text_and_values_are_bytes(etcd: EtcdClient, key_prefix: str) -> None:
    key = key_prefix + "ünïcode/ключ"
    await etcd.put(key, b"\x00\xff")
    kv = await etcd.get(key)
    assert kv is not None
    assert (kv.key, kv.value) == (key, b"\x00\xff")


async def test_prefix_delete_removes_only_the_prefix(etcd: EtcdClient, key_prefix: str) -> None:
    await asyncio.gather(
        etcd.put(key_prefix + "d/1", b""),
        etcd.put(key_prefix + "d/2", b""),
        etcd.put(key_prefix + "d0", b""),  # shares "d" but not "d/"
    )
    assert await etcd.delete(key_prefix + "d/", prefix=True) == 2
    kvs, _ = await etcd.get_prefix(key_prefix)
    assert [kv.key for kv in kvs] == [key_prefix + "d0"]


async def test_get_prefix_pages_at_one_pinned_revision(
    etcd: EtcdClient, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = [f"{key_prefix}k{i:02}" for i in range(25)]
    await asyncio.gather(*(etcd.put(k, k.encode()) for k in keys))

    # Write between the first and the second page: the later pages must not see it.
    real_unary = etcd._unary
    ranges = 0

    async def write_after_first_page(method: str, *args: Any, **kwargs: Any) -> Any:
        nonlocal ranges
        response = await real_unary(method, *args, **kwargs)
        if method == "Range":
            ranges += 1
            if ranges == 1:
                await etcd.put(key_prefix + "k99-late", b"late")
                await etcd.delete(keys[-1])
        return response

    monkeypatch.setattr(etcd, "_unary", write_after_first_page)
    kvs, revision = await etcd.get_prefix(key_prefix, page_size=10)
    monkeypatch.undo()

    assert ranges == 3
    assert [kv.key for kv in kvs] == keys
    assert [kv.value for kv in kvs] == [k.encode() for k in keys]
    assert revision == max(kv.mod_revision for kv in kvs)

    # An explicit revision reads the past; without one, the present.
    again, pinned = await etcd.get_prefix(key_prefix, page_size=7, revision=revision)
    assert (again, pinned) == (kvs, revision)
    now, now_revision = await etcd.get_prefix(key_prefix, page_size=7)
    assert now_revision == revision + 2
    assert [kv.key for kv in now] == [*keys[:-1], key_prefix + "k99-late"]


def spy_on_range_limits(client: EtcdClient, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The `limit` of every Range the client sends (refused ones included), in order."""
    limits: list[int] = []
    real_unary = client._unary

    async def spy(method: str, request: Any, *args: Any, **kwargs: Any) -> Any:
        if method == "Range":
            limits.append(request.limit)
        return await real_unary(method, request, *args, **kwargs)

    monkeypatch.setattr(client, "_unary", spy)
    return limits


def test_a_safe_page_of_etcds_largest_values_fits_the_receive_limit() -> None:
    per_key_overhead = 1024  # the key and the revisions beside the value, generously
    assert SAFE_PAGE_KEYS * (ETCD_MAX_REQUEST_BYTES + per_key_overhead) < MAX_RECEIVE_BYTES


async def test_get_prefix_reads_large_records_with_the_default_client(
    private_etcd: EtcdServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Five 960 KB values: one page of them is over gRPC's default limit of 4 MiB."""
    client = await EtcdClient.connect([private_etcd.endpoint])
    try:
        values = {f"/big/{i}": bytes([ord("a") + i]) * BIG for i in range(5)}
        for key, value in values.items():
            await client.put(key, value)
        limits = spy_on_range_limits(client, monkeypatch)
        kvs, _ = await client.get_prefix("/big/")
        assert {kv.key: kv.value for kv in kvs} == values
        assert limits == [FIRST_PAGE_KEYS]  # fits the client's receive limit: one page
    finally:
        await client.close()


async def test_get_prefix_pages_many_small_records_by_bytes(
    private_etcd: EtcdServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1,000 records of 4.2 KB: one page of all of them is over gRPC's default 4 MiB."""
    keys = [f"/many/{i:04}" for i in range(1000)]
    client = await EtcdClient.connect([private_etcd.endpoint])
    try:
        for start in range(0, len(keys), 100):
            await client.txn([], [Put(k, b"x" * 4200) for k in keys[start : start + 100]])
        kvs, _ = await client.get_prefix("/many/")
        assert [kv.key for kv in kvs] == keys
    finally:
        await client.close()

    # With the receive limit at gRPC's default, pages aim at 512 KiB: 124 of these keys.
    client = await EtcdClient.connect(
        [private_etcd.endpoint], max_receive_bytes=GRPC_DEFAULT_RECEIVE
    )
    try:
        limits = spy_on_range_limits(client, monkeypatch)
        kvs, _ = await client.get_prefix("/many/")
        assert [kv.key for kv in kvs] == keys
        per_key = 4200 + len(keys[0])
        assert client.page_target_bytes // per_key == 124
        assert limits == [FIRST_PAGE_KEYS] + [124] * 8  # 100 + 8 * 124 >= 1,000, none refused
    finally:
        await client.close()


async def test_a_page_over_the_receive_limit_is_asked_again_with_fewer_keys(
    private_etcd: EtcdServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await EtcdClient.connect(
        [private_etcd.endpoint], max_receive_bytes=GRPC_DEFAULT_RECEIVE
    )
    try:
        values = {f"/big/{i}": bytes([ord("a") + i]) * BIG for i in range(6)}
        for key, value in values.items():
            await client.put(key, value)
        limits = spy_on_range_limits(client, monkeypatch)
        kvs, revision = await client.get_prefix("/big/")
        assert {kv.key: kv.value for kv in kvs} == values
        assert revision == max(kv.mod_revision for kv in kvs)
        # refused at 100, 16 and 8 keys (over 4 MiB); then 4 keys, and one key per page after
        # that, since a page aims at 512 KiB here
        assert limits == [FIRST_PAGE_KEYS, SAFE_PAGE_KEYS, 8, 4, 1, 1]
    finally:
        await client.close()


async def test_one_key_over_the_receive_limit_raises(private_etcd: EtcdServer) -> None:
    client = await EtcdClient.connect([private_etcd.endpoint], max_receive_bytes=BIG // 2)
    try:
        await client.put("/big/one", b"x" * BIG)
        with pytest.raises(EtcdResponseTooLarge, match="larger than max"):
            await client.get_prefix("/big/")
        with pytest.raises(EtcdResponseTooLarge):
            await client.get("/big/one")
    finally:
        await client.close()


async def test_a_write_over_etcds_request_limit_is_refused_and_not_stored(
    etcd: EtcdClient, key_prefix: str
) -> None:
    with pytest.raises(EtcdRequestTooLarge, match="request is too large"):
        await etcd.put(key_prefix + "huge", b"x" * 2_000_000)
    with pytest.raises(EtcdRequestTooLarge):
        await etcd.txn([], [Put(key_prefix + f"h{i}", b"x" * BIG) for i in range(2)])
    assert await etcd.get_prefix(key_prefix) == ([], await _revision(etcd))


async def test_watch_joins_a_batch_that_etcd_sends_in_fragments(private_etcd: EtcdServer) -> None:
    """A watch catching up over five 960 KB values: a batch over gRPC's default 4 MiB."""
    client = await EtcdClient.connect(
        [private_etcd.endpoint], max_receive_bytes=GRPC_DEFAULT_RECEIVE
    )
    try:
        values = {f"/big/{i}": bytes([ord("a") + i]) * BIG for i in range(5)}
        revisions = [await client.put(key, value) for key, value in values.items()]
        stream = client.watch("/big/", start_revision=revisions[0])
        events = []
        async with asyncio.timeout(10), aclosing(stream):
            async for changes in stream:
                events.extend(changes.events)
                if changes.events:
                    assert changes.revision == revisions[-1]  # one batch, joined
                    break
        assert [(e.kv.key, e.kv.value, e.kv.mod_revision) for e in events] == [
            (key, value, revision)
            for (key, value), revision in zip(values.items(), revisions, strict=True)
        ]
    finally:
        await client.close()


async def test_get_many_reads_the_keys_that_exist_in_one_call(
    etcd: EtcdClient, key_prefix: str
) -> None:
    keys = [f"{key_prefix}many/{i}" for i in range(EtcdClient.MAX_TXN_OPS)]
    for i, key in enumerate(keys[::2]):
        await etcd.put(key, f"v{i}".encode())
    missing = f"{key_prefix}many/absent"
    found = await etcd.get_many([*keys[:-1], missing])
    assert {key: kv.value for key, kv in found.items()} == {
        key: f"v{i}".encode() for i, key in enumerate(keys[::2])
    }
    assert await etcd.get_many([]) == {}
    with pytest.raises(ValueError, match="at most"):
        await etcd.get_many([*keys, missing])


async def test_get_many_over_the_receive_limit_is_asked_again_in_halves(
    private_etcd: EtcdServer,
) -> None:
    client = await EtcdClient.connect(
        [private_etcd.endpoint], max_receive_bytes=GRPC_DEFAULT_RECEIVE
    )
    small = await EtcdClient.connect([private_etcd.endpoint], max_receive_bytes=BIG // 2)
    try:
        values = {f"/many-big/{i}": bytes([ord("a") + i]) * BIG for i in range(6)}
        for key, value in values.items():
            await client.put(key, value)
        found = await client.get_many(list(values))  # 5.8 MB: over the 4 MiB limit at once
        assert {key: kv.value for key, kv in found.items()} == values
        with pytest.raises(EtcdResponseTooLarge):  # one key alone over the limit
            await small.get_many(list(values)[:3])
    finally:
        await client.close()
        await small.close()


async def test_get_prefix_of_nothing(etcd: EtcdClient, key_prefix: str) -> None:
    kvs, revision = await etcd.get_prefix(key_prefix)
    assert kvs == []
    assert revision > 0


# Each case: (compare that holds, compare that does not) for a key put once with b"v1".
COMPARE_CASES: dict[str, Callable[[str, KeyValue], tuple[Compare, Compare]]] = {
    "create_revision": lambda k, kv: (
        Compare.create_revision(k, "==", kv.create_revision),
        Compare.create_revision(k, "==", 0),
    ),
    "mod_revision": lambda k, kv: (
        Compare.mod_revision(k, "<", kv.mod_revision + 1),
        Compare.mod_revision(k, ">", kv.mod_revision),
    ),
    "value": lambda k, kv: (Compare.value(k, "==", b"v1"), Compare.value(k, "!=", b"v1")),
    "version": lambda k, kv: (Compare.version(k, "==", 1), Compare.version(k, ">", 1)),
}


@pytest.mark.parametrize("kind", sorted(COMPARE_CASES))
async def test_txn_takes_the_branch_its_compare_picks(
    etcd: EtcdClient, key_prefix: str, kind: str
) -> None:
    key = key_prefix + "guard"
    await etcd.put(key, b"v1")
    current = await etcd.get(key)
    assert current is not None
    holds, fails = COMPARE_CASES[kind](key, current)

    won = await etcd.txn([holds], [Put(key_prefix + "won", b"1")], [Put(key_prefix + "lost", b"1")])
    assert won.succeeded
    lost = await etcd.txn([fails], [Put(key_prefix + "won", b"2")], [Delete(key_prefix + "won")])
    assert not lost.succeeded
    assert lost.revision > won.revision

    kvs, _ = await etcd.get_prefix(key_prefix)
    assert [kv.key for kv in kvs] == [key]  # "won" written by the first, deleted by the second


async def test_txn_create_if_absent_is_atomic(etcd: EtcdClient, key_prefix: str) -> None:
    key = key_prefix + "leader"
    absent = Compare.create_revision(key, "==", 0)
    results = await asyncio.gather(
        *(etcd.txn([absent], [Put(key, str(i).encode())]) for i in range(8))
    )
    assert sum(r.succeeded for r in results) == 1


async def test_txn_with_max_ops_succeeds_and_more_is_refused(
    etcd: EtcdClient, key_prefix: str
) -> None:
    puts = [Put(f"{key_prefix}{i:03}", b"x") for i in range(EtcdClient.MAX_TXN_OPS + 1)]
    with pytest.raises(ValueError, match="at most 128"):
        await etcd.txn([], puts)
    with pytest.raises(ValueError, match="compares has 129"):
        await etcd.txn([Compare.version(key_prefix, "==", 0)] * 129, [])
    assert (await etcd.get_prefix(key_prefix))[0] == []

    result = await etcd.txn([], puts[:128], [])
    assert result.succeeded
    kvs, revision = await etcd.get_prefix(key_prefix, page_size=50)
    assert len(kvs) == 128
    assert {kv.mod_revision for kv in kvs} == {revision}  # one txn, one revision


async def test_lease_grant_ttl_and_revoke_removes_keys(etcd: EtcdClient, key_prefix: str) -> None:
    lease = await etcd.lease_grant(30)
    assert 0 < await etcd.lease_ttl(lease) <= 30
    await etcd.put(key_prefix + "a", b"", lease=lease)
    await etcd.txn([], [Put(key_prefix + "b", b"", lease=lease)])
    kv = await etcd.get(key_prefix + "a")
    assert kv is not None
    assert kv.lease == lease

    await etcd.lease_revoke(lease)
    assert await etcd.get_prefix(key_prefix) == ([], await _revision(etcd))
    assert await etcd.lease_ttl(lease) == -1
    with pytest.raises(LeaseNotFound):
        await etcd.lease_revoke(lease)


async def test_compacted_revision_raises(private_etcd: EtcdServer) -> None:
    client = await EtcdClient.connect([private_etcd.endpoint])
    try:
        old = await client.put("/a", b"1")
        latest = await client.put("/a", b"2")
        await client.compact(latest)
        with pytest.raises(EtcdCompacted):
            await client.get_prefix("/", revision=old)
        assert (await client.get_prefix("/", revision=latest))[0][0].value == b"2"
    finally:
        await client.close()


async def test_connect_to_a_closed_port_fails_within_the_timeout() -> None:
    started = time.monotonic()
    with pytest.raises(EtcdUnavailable):
        await EtcdClient.connect([f"127.0.0.1:{free_port()}"], timeout=0.5)
    assert time.monotonic() - started < 1.5


async def test_connect_to_a_silent_server_fails_within_the_timeout() -> None:
    with socket.socket() as silent:  # accepts TCP, never speaks HTTP/2
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        started = time.monotonic()
        with pytest.raises(EtcdUnavailable):
            await EtcdClient.connect([f"http://127.0.0.1:{silent.getsockname()[1]}"], timeout=0.5)
        assert time.monotonic() - started < 1.5


async def test_calls_fail_fast_when_etcd_is_down_or_hung(private_etcd: EtcdServer) -> None:
    client = await EtcdClient.connect([private_etcd.endpoint], timeout=0.5)
    try:
        await client.put("/k", b"v")

        private_etcd.pause()  # a hung etcd: only the deadline ends the call
        started = time.monotonic()
        with pytest.raises(EtcdUnavailable, match="DEADLINE_EXCEEDED"):
            await client.get("/k")
        with pytest.raises(EtcdUnavailable):
            await client.put("/k", b"w", timeout=0.2)
        assert time.monotonic() - started < 0.5 + 0.2 + 1.0

        private_etcd.stop()  # etcd gone: connection refused
        started = time.monotonic()
        with pytest.raises(EtcdUnavailable):
            await client.get("/k")
        assert time.monotonic() - started < 1.5
    finally:
        await client.close()


async def test_reads_fail_over_to_the_next_endpoint(
    private_etcd: EtcdServer, etcd_server: EtcdServer, etcd: EtcdClient, key_prefix: str
) -> None:
    await etcd.put(key_prefix + "k", b"on-shared")
    client = await EtcdClient.connect([private_etcd.endpoint, etcd_server.endpoint], timeout=1.0)
    try:
        assert client.endpoint == private_etcd.endpoint.removeprefix("http://")
        assert await client.get(key_prefix + "k") is None  # the private etcd has no such key

        private_etcd.stop()
        kv = await client.get(key_prefix + "k")  # fails on the first, retried on the second
        assert kv is not None
        assert kv.value == b"on-shared"
        assert client.endpoint == etcd_server.endpoint.removeprefix("http://")
    finally:
        await client.close()


async def test_writes_are_not_retried_on_failover(private_etcd: EtcdServer) -> None:
    other = free_port()
    client = await EtcdClient.connect([private_etcd.endpoint, f"127.0.0.1:{other}"], timeout=1.0)
    try:
        private_etcd.stop()
        with pytest.raises(EtcdUnavailable):
            await client.put("/k", b"v")
        assert client.endpoint == f"127.0.0.1:{other}"  # the next call goes elsewhere
    finally:
        await client.close()


async def test_closed_client_refuses_calls_loudly(etcd_server: EtcdServer) -> None:
    client = await EtcdClient.connect([etcd_server.endpoint])
    await client.close()
    with pytest.raises(RuntimeError, match="closed"):
        await client.get("/k")


async def _revision(etcd: EtcdClient) -> int:
    return (await etcd.get_prefix("/no-such-prefix/"))[1]


async def test_a_write_over_etcds_grpc_receive_limit_is_a_request_too_large(
    etcd: EtcdClient, key_prefix: str
) -> None:
    """etcd's gRPC server refuses a message over --max-request-bytes + 512 KiB by itself."""
    with pytest.raises(EtcdRequestTooLarge, match="received message larger than max"):
        await etcd.put(key_prefix + "huge", b"x" * 3_000_000)
    assert await etcd.get(key_prefix + "huge") is None


async def test_requests_are_timed_and_failures_counted(private_etcd: EtcdServer) -> None:
    metrics = Metrics()
    client = await EtcdClient.connect([private_etcd.endpoint], timeout=0.5, metrics=metrics)
    try:
        await client.put("/k", b"v")
        await client.get("/k")
        assert timed(metrics, "Put") == 1
        assert timed(metrics, "Range") == 1
        private_etcd.pause()
        with pytest.raises(EtcdUnavailable):
            await client.get("/k")
    finally:
        await client.close()
    errors = metrics.etcd_request_errors.labels("Range", "EtcdUnavailable")._value.get()
    assert errors == 1
    assert timed(metrics, "Range") == 2  # a failed call is timed too


def timed(metrics: Metrics, method: str) -> float:
    """How many `method` calls the latency histogram holds."""
    value = metrics.registry.get_sample_value(
        "fleet_etcd_request_duration_seconds_count", {"method": method}
    )
    return value or 0.0
