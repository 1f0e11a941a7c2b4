"""The asyncio etcd v3 client: typed values in, typed values out, no gRPC beyond this module.

`EtcdClient` wraps grpc.aio channels to one or more etcd endpoints and speaks
the proto subset in `proto/etcd.proto`. Invariants:

- Every gRPC error is translated to `fleetd.registry.errors` before it leaves
  this module; callers never see a grpc exception.
- Every unary call has a deadline (the client's `timeout`, overridable per
  call). Long-lived streams (watch, lease keep-alive) have none; keep-alive
  pings time out individually and the HTTP/2 keepalive catches dead peers.
- Only idempotent reads (`get`, `get_prefix`) are retried, once, and only
  after failing over to another endpoint. Writes are never retried: a write
  that raised `EtcdUnavailable` may or may not have been applied.
- Keys are `str` (UTF-8; undecodable bytes round-trip via surrogateescape);
  values are `bytes`.
- Channels are created inside the running loop and closed by `close()`.
- A reply may be up to `max_receive_bytes` (MAX_RECEIVE_BYTES by default, far above etcd's
  largest value, ETCD_MAX_REQUEST_BYTES by default). Range reads are paged by count and by
  bytes, so no page outgrows that limit however large the records are; watches ask etcd to
  split a large batch of events into fragments and join them again.
"""

# ruff: noqa: ASYNC109 -- `timeout` parameters here are gRPC call deadlines, sent to etcd.

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Literal, TypeVar

import grpc
import grpc.aio
import structlog

from fleetd.registry._pb import etcd_pb2 as pb
from fleetd.registry._pb import etcd_pb2_grpc as pb_grpc
from fleetd.registry.errors import (
    GRPC_ERRORS,
    EtcdCompacted,
    EtcdError,
    EtcdResponseTooLarge,
    EtcdUnavailable,
    LeaseNotFound,
    translate_error,
)
from fleetd.runtime.metrics import Metrics, unserved

log = structlog.get_logger(__name__)

ETCD_MAX_REQUEST_BYTES: Final = 3 * 512 * 1024
"""etcd's default `--max-request-bytes` (1.5 MiB): no write, hence no stored value, is larger."""

MAX_RECEIVE_BYTES: Final = 32 * 1024 * 1024
"""The largest reply the client accepts (gRPC's default is 4 MiB): a page of SAFE_PAGE_KEYS
values of etcd's largest size, or one value even where etcd's request limit is raised to 30 MiB."""

SAFE_PAGE_KEYS: Final = 16
"""Keys per page that always fit MAX_RECEIVE_BYTES at etcd's default request limit."""

FIRST_PAGE_KEYS: Final = 100
"""A range read's first page asks for this many keys (or `page_size`, if smaller)."""

PAGE_TARGET_FRACTION: Final = 8
"""Each later page asks for as many keys as 1/8 of the receive limit holds (4 MiB by default) at
the previous page's size per key: keys may grow eightfold within a page before it is refused."""

CHANNEL_OPTIONS: Final = (
    ("grpc.keepalive_time_ms", 10_000),  # etcd refuses pings more often than every 5 s
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # Reconnect quickly after an etcd restart (gRPC's default backoff grows to 120 s).
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1_000),
)

_R = TypeVar("_R")


# ------------------------------------------------------------------ values


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int


@dataclass(frozen=True, slots=True)
class Event:
    """One change. For a delete, `kv` holds the key, an empty value and the delete's revision."""

    kind: Literal["put", "delete"]
    kv: KeyValue
    prev: KeyValue | None = None
    """The key's value before this change, if the watch asked for it (`prev_kv`) and it had one."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The whole prefix as of `revision` (kvs sorted by key)."""

    revision: int
    kvs: list[KeyValue]


@dataclass(frozen=True, slots=True)
class Changes:
    """Events in revision order up to `revision`; no events means a progress notification."""

    revision: int
    events: list[Event]


WatchBatch = Snapshot | Changes

CompareOp = Literal["==", "!=", "<", ">"]
CompareTarget = Literal["version", "create_revision", "mod_revision", "value"]

_COMPARE_RESULTS: Final = {
    "==": pb.Compare.EQUAL,
    "!=": pb.Compare.NOT_EQUAL,
    "<": pb.Compare.LESS,
    ">": pb.Compare.GREATER,
}
_COMPARE_TARGETS: Final = {
    "version": pb.Compare.VERSION,
    "create_revision": pb.Compare.CREATE,
    "mod_revision": pb.Compare.MOD,
    "value": pb.Compare.VALUE,
}


@dataclass(frozen=True, slots=True)
class Compare:
    """One txn guard: `<target of key> <op> <operand>`. Build it with the class helpers.

    A missing key has version, create_revision and mod_revision 0, so
    `Compare.create_revision(key, "==", 0)` means "key does not exist".
    """

    key: str
    target: CompareTarget
    op: CompareOp
    operand: int | bytes

    def __post_init__(self) -> None:
        if self.op not in _COMPARE_RESULTS:
            raise ValueError(f"unknown compare operator {self.op!r}")
        wants_bytes = self.target == "value"
        if isinstance(self.operand, bytes) != wants_bytes:
            kind = "bytes" if wants_bytes else "int"
            raise TypeError(f"Compare.{self.target} needs a {kind} operand")

    @classmethod
    def create_revision(cls, key: str, op: CompareOp, revision: int) -> Compare:
        return cls(key, "create_revision", op, revision)

    @classmethod
    def mod_revision(cls, key: str, op: CompareOp, revision: int) -> Compare:
        return cls(key, "mod_revision", op, revision)

    @classmethod
    def value(cls, key: str, op: CompareOp, value: bytes) -> Compare:
        return cls(key, "value", op, value)

    @classmethod
    def version(cls, key: str, op: CompareOp, version: int) -> Compare:
        return cls(key, "version", op, version)


@dataclass(frozen=True, slots=True)
class Put:
    key: str
    value: bytes
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Delete:
    key: str
    prefix: bool = False


@dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool
    revision: int


# -------------------------------------------------------------- conversion


def _key_bytes(key: str) -> bytes:
    return key.encode("utf-8", "surrogateescape")


def _key_str(key: bytes) -> str:
    return key.decode("utf-8", "surrogateescape")


def prefix_range(prefix: str) -> tuple[bytes, bytes]:
    """[start, end) covering every key that starts with `prefix` ("" covers all keys)."""
    start = _key_bytes(prefix)
    end = bytearray(start)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return start, bytes(end)
        end.pop()
    return start or b"\0", b"\0"  # no upper bound


def _kv(msg: pb.KeyValue) -> KeyValue:
    return KeyValue(
        key=_key_str(msg.key),
        value=msg.value,
        create_revision=msg.create_revision,
        mod_revision=msg.mod_revision,
        version=msg.version,
        lease=msg.lease,
    )


def _event(msg: pb.Event) -> Event:
    prev = _kv(msg.prev_kv) if msg.HasField("prev_kv") else None
    return Event("delete" if msg.type == pb.Event.DELETE else "put", _kv(msg.kv), prev)


def _compare_pb(compare: Compare) -> pb.Compare:
    msg = pb.Compare(
        key=_key_bytes(compare.key),
        result=_COMPARE_RESULTS[compare.op],
        target=_COMPARE_TARGETS[compare.target],
    )
    setattr(msg, compare.target, compare.operand)  # the target names the oneof field
    return msg


def _op_pb(op: Put | Delete) -> pb.RequestOp:
    if isinstance(op, Put):
        put = pb.PutRequest(key=_key_bytes(op.key), value=op.value, lease=op.lease)
        return pb.RequestOp(request_put=put)
    if op.prefix:
        start, end = prefix_range(op.key)
    else:
        start, end = _key_bytes(op.key), b""
    return pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=start, range_end=end))


def _target(endpoint: str) -> str:
    if endpoint.startswith("https://"):
        raise ValueError(f"TLS endpoints are not supported: {endpoint}")
    target = endpoint.removeprefix("http://").rstrip("/")
    if not target:
        raise ValueError(f"empty etcd endpoint: {endpoint!r}")
    return target


# ------------------------------------------------------------------ client

_METHODS: Final = {  # gRPC method name -> index of its stub in _Endpoint.stubs
    **dict.fromkeys(("Range", "Put", "DeleteRange", "Txn", "Compact"), 0),
    "Watch": 1,
    **dict.fromkeys(("LeaseGrant", "LeaseRevoke", "LeaseKeepAlive", "LeaseTimeToLive"), 2),
}


class _Endpoint:
    """One channel to one etcd member and its service stubs."""

    def __init__(self, target: str, max_receive_bytes: int) -> None:
        options = (*CHANNEL_OPTIONS, ("grpc.max_receive_message_length", max_receive_bytes))
        self.channel = grpc.aio.insecure_channel(target, options=options)
        stub_classes = (pb_grpc.KVStub, pb_grpc.WatchStub, pb_grpc.LeaseStub)
        self.stubs: tuple[Any, ...] = tuple(stub(self.channel) for stub in stub_classes)

    def method(self, name: str) -> Any:
        return getattr(self.stubs[_METHODS[name]], name)


class EtcdClient:
    """An asyncio client for a set of etcd endpoints; build it with `connect`."""

    MAX_TXN_OPS: ClassVar[int] = 128  # etcd's default --max-txn-ops, per branch

    def __init__(
        self,
        targets: Sequence[str],
        *,
        timeout: float,
        max_receive_bytes: int = MAX_RECEIVE_BYTES,
        metrics: Metrics | None = None,
    ) -> None:
        if max_receive_bytes <= 0:
            raise ValueError("max_receive_bytes must be positive")
        self._targets = list(targets)
        self._timeout = timeout
        self._max_receive_bytes = max_receive_bytes
        self._endpoints: dict[int, _Endpoint] = {}
        self._current = 0
        self._closed = False
        self.metrics = metrics if metrics is not None else unserved()

    @classmethod
    async def connect(
        cls,
        endpoints: Sequence[str],
        *,
        timeout: float = 5.0,
        max_receive_bytes: int = MAX_RECEIVE_BYTES,
        metrics: Metrics | None = None,
    ) -> EtcdClient:
        """Connect to the first endpoint (in order) that answers within `timeout`.

        Raises EtcdUnavailable when none does; the caller retries with backoff.
        """
        if isinstance(endpoints, str) or not endpoints:
            raise ValueError("connect() needs a non-empty sequence of endpoints")
        targets = [_target(e) for e in endpoints]
        client = cls(targets, timeout=timeout, max_receive_bytes=max_receive_bytes, metrics=metrics)
        for index in range(len(client._targets)):
            try:
                await asyncio.wait_for(client._endpoint(index).channel.channel_ready(), timeout)
            except TimeoutError:
                continue
            client._current = index
            return client
        await client.close()
        raise EtcdUnavailable(f"no etcd endpoint answered within {timeout}s: {list(endpoints)}")

    async def close(self) -> None:
        self._closed = True
        endpoints, self._endpoints = self._endpoints, {}
        for endpoint in endpoints.values():
            await endpoint.channel.close()

    @property
    def endpoint(self) -> str:
        """The endpoint (host:port) calls go to now."""
        return self._targets[self._current]

    @property
    def timeout(self) -> float:
        return self._timeout

    @property
    def page_target_bytes(self) -> int:
        """The size a range read's pages aim at (see `get_prefix`)."""
        return max(self._max_receive_bytes // PAGE_TARGET_FRACTION, 1)

    def _endpoint(self, index: int) -> _Endpoint:
        if index not in self._endpoints:
            self._endpoints[index] = _Endpoint(self._targets[index], self._max_receive_bytes)
        return self._endpoints[index]

    def _active(self) -> tuple[int, _Endpoint]:
        if self._closed:  # a usage bug, not an etcd failure: nobody should retry it
            raise RuntimeError("the etcd client is closed")
        return self._current, self._endpoint(self._current)

    def _failed(self, index: int, error: EtcdError) -> bool:
        """Fail over from endpoint `index` if `error` is transient; True if another one is next."""
        if not isinstance(error, EtcdUnavailable) or len(self._targets) == 1:
            return False
        if index == self._current:
            self._current = (index + 1) % len(self._targets)
            log.warning(
                "etcd endpoint failed, switching",
                failed=self._targets[index],
                next=self._targets[self._current],
                error=str(error),
            )
        return True

    async def _unary(
        self, method: str, request: Any, reply: type[_R], deadline: float | None, read: bool = False
    ) -> _R:
        retries = 1 if read and len(self._targets) > 1 else 0
        latency = self.metrics.etcd_request_seconds.labels(method)
        while True:
            index, endpoint = self._active()
            started = time.perf_counter()
            try:
                response = await endpoint.method(method)(request, timeout=deadline or self._timeout)
            except GRPC_ERRORS as err:
                error = translate_error(err, method)
                latency.observe(time.perf_counter() - started)
                self.metrics.etcd_request_errors.labels(method, type(error).__name__).inc()
                if self._failed(index, error) and retries > 0:
                    retries -= 1
                    continue
                raise error from None
            latency.observe(time.perf_counter() - started)
            if not isinstance(response, reply):
                raise EtcdError(f"{method}: unexpected reply {type(response).__name__}")
            return response

    # ---- KV

    async def get(self, key: str, *, timeout: float | None = None) -> KeyValue | None:
        request = pb.RangeRequest(key=_key_bytes(key))
        response = await self._unary("Range", request, pb.RangeResponse, timeout, read=True)
        return _kv(response.kvs[0]) if response.kvs else None

    async def get_many(
        self, keys: Sequence[str], *, timeout: float | None = None
    ) -> dict[str, KeyValue]:
        """The keys of `keys` that exist (key -> KeyValue), read at one revision in one call.

        At most MAX_TXN_OPS keys (etcd's limit on a transaction's operations; more raises
        ValueError before anything is sent). A reply over the receive limit is asked again in
        halves; EtcdResponseTooLarge only if one key alone is over it.
        """
        if len(keys) > self.MAX_TXN_OPS:
            raise ValueError(f"get_many of {len(keys)} keys; at most {self.MAX_TXN_OPS}")
        if not keys:
            return {}
        ranges = [pb.RequestOp(request_range=pb.RangeRequest(key=_key_bytes(k))) for k in keys]
        try:
            response = await self._unary(
                "Txn", pb.TxnRequest(success=ranges), pb.TxnResponse, timeout, read=True
            )
        except EtcdResponseTooLarge:
            if len(keys) == 1:
                raise
            half = len(keys) // 2
            first = await self.get_many(keys[:half], timeout=timeout)
            return first | await self.get_many(keys[half:], timeout=timeout)
        found: dict[str, KeyValue] = {}
        for op in response.responses:
            for kv in op.response_range.kvs:
                value = _kv(kv)
                found[value.key] = value
        return found

    async def get_prefix(
        self, prefix: str, *, page_size: int = 1000, revision: int = 0, timeout: float | None = None
    ) -> tuple[list[KeyValue], int]:
        """Every key under `prefix` at one revision, read in pages; returns (kvs by key, revision).

        A page holds at most `page_size` keys, and fewer when they are large: the first asks for
        FIRST_PAGE_KEYS, each later one for as many as `page_target_bytes` hold at the previous
        page's size per key, and a page over the receive limit is asked again with fewer keys
        (SAFE_PAGE_KEYS, then halving). EtcdResponseTooLarge only if one key alone is over it.

        The revision is `revision` if given, else the first page's. Raises
        EtcdCompacted if that revision is compacted away before the last page.
        """
        if page_size <= 0:
            raise ValueError("page_size must be positive")
        start, end = prefix_range(prefix)
        kvs: list[KeyValue] = []
        limit = min(page_size, FIRST_PAGE_KEYS)
        while True:
            request = pb.RangeRequest(key=start, range_end=end, limit=limit, revision=revision)
            try:
                response = await self._unary("Range", request, pb.RangeResponse, timeout, read=True)
            except EtcdResponseTooLarge:
                if limit == 1:
                    raise
                fewer = SAFE_PAGE_KEYS if limit > SAFE_PAGE_KEYS else limit // 2
                log.info("etcd page too large, asking for fewer keys", keys=limit, next=fewer)
                limit = fewer
                continue
            revision = revision if revision > 0 else response.header.revision
            page_bytes = 0
            for kv in response.kvs:
                page_bytes += len(kv.key) + len(kv.value)
                kvs.append(_kv(kv))
            if not response.more or not response.kvs:
                return kvs, revision
            start = response.kvs[-1].key + b"\0"
            per_key = max(page_bytes // len(response.kvs), 1)
            limit = max(1, min(page_size, self.page_target_bytes // per_key))

    async def put(
        self, key: str, value: bytes, *, lease: int = 0, timeout: float | None = None
    ) -> int:
        """Store `value` at `key`; returns the new revision."""
        request = pb.PutRequest(key=_key_bytes(key), value=value, lease=lease)
        return (await self._unary("Put", request, pb.PutResponse, timeout)).header.revision

    async def delete(self, key: str, *, prefix: bool = False, timeout: float | None = None) -> int:
        """Delete `key` (or every key under it with prefix=True); returns how many went."""
        start, end = prefix_range(key) if prefix else (_key_bytes(key), b"")
        request = pb.DeleteRangeRequest(key=start, range_end=end)
        return (await self._unary("DeleteRange", request, pb.DeleteRangeResponse, timeout)).deleted

    async def txn(
        self,
        compares: Sequence[Compare],
        success: Sequence[Put | Delete],
        failure: Sequence[Put | Delete] = (),
        *,
        timeout: float | None = None,
    ) -> TxnResult:
        """Apply `success` if every compare holds, else `failure`, atomically.

        compares, success and failure may each hold at most MAX_TXN_OPS entries
        (etcd's limit); a longer list raises ValueError before anything is sent.
        """
        for name, items in (("compares", compares), ("success", success), ("failure", failure)):
            if len(items) > self.MAX_TXN_OPS:
                raise ValueError(
                    f"txn {name} has {len(items)} entries; etcd allows at most "
                    f"{self.MAX_TXN_OPS} (EtcdClient.MAX_TXN_OPS): split the write"
                )
        request = pb.TxnRequest(
            compare=[_compare_pb(c) for c in compares],
            success=[_op_pb(op) for op in success],
            failure=[_op_pb(op) for op in failure],
        )
        response = await self._unary("Txn", request, pb.TxnResponse, timeout)
        return TxnResult(succeeded=response.succeeded, revision=response.header.revision)

    async def compact(
        self, revision: int, *, physical: bool = False, timeout: float | None = None
    ) -> None:
        """Drop history before `revision` (physical=True waits for the backend to apply it)."""
        request = pb.CompactionRequest(revision=revision, physical=physical)
        await self._unary("Compact", request, pb.CompactionResponse, timeout)

    # ---- leases

    async def lease_grant(self, ttl: int, *, timeout: float | None = None) -> int:
        """Grant a lease of `ttl` seconds; returns its id."""
        request = pb.LeaseGrantRequest(TTL=ttl)
        response = await self._unary("LeaseGrant", request, pb.LeaseGrantResponse, timeout)
        if response.error:
            raise EtcdError(f"LeaseGrant: {response.error}")
        return response.ID

    async def lease_revoke(self, lease_id: int, *, timeout: float | None = None) -> None:
        """Revoke a lease, deleting its keys. Raises LeaseNotFound if it is already gone."""
        request = pb.LeaseRevokeRequest(ID=lease_id)
        await self._unary("LeaseRevoke", request, pb.LeaseRevokeResponse, timeout)

    async def lease_ttl(self, lease_id: int, *, timeout: float | None = None) -> int:
        """Seconds the lease has left; -1 if it has expired or never existed."""
        request = pb.LeaseTimeToLiveRequest(ID=lease_id)
        try:
            reply = await self._unary(
                "LeaseTimeToLive", request, pb.LeaseTimeToLiveResponse, timeout
            )
        except LeaseNotFound:
            return -1
        return reply.TTL

    def lease_keepalive(self) -> LeaseKeepAliveStream:
        """A raw LeaseKeepAlive stream, opened on the first ping (see fleetd.registry.lease)."""
        return LeaseKeepAliveStream(self)

    # ---- watch

    async def watch(
        self,
        prefix: str,
        *,
        start_revision: int,
        progress_notify: bool = True,
        prev_kv: bool = False,
    ) -> AsyncGenerator[Changes, None]:
        """One raw Watch stream on `prefix` from `start_revision`; it does not resume.

        The first item is an empty Changes at start_revision - 1, once etcd has
        confirmed the watch (within the client timeout). Each later Changes has
        `revision` = the newest revision fully delivered: the last event's, or a
        progress notification's header revision (etcd sends those only to a
        caught-up watcher). An event reply's header revision is not used: while
        catching up, etcd stamps it with the current revision before all
        events are out. A batch that etcd sends in fragments comes out whole.
        With `prev_kv`, each event carries the key's previous value (`Event.prev`).
        Raises EtcdCompacted or EtcdUnavailable; never ends by itself; close it
        with `contextlib.aclosing`. PrefixWatcher resumes.
        """
        start, end = prefix_range(prefix)
        create = pb.WatchCreateRequest(
            key=start,
            range_end=end,
            start_revision=start_revision,
            progress_notify=progress_notify,
            prev_kv=prev_kv,
            fragment=True,  # a catch-up batch can hold far more than the receive limit
        )
        stream = _Stream(self, "Watch")
        fragments: list[Event] = []  # the events of a batch etcd is still sending in pieces
        try:
            await stream.send(pb.WatchRequest(create_request=create))
            timeout: float | None = self._timeout  # for the confirmation only
            while True:
                response = await stream.recv(timeout)
                if response.compact_revision > 0:
                    raise EtcdCompacted(
                        f"Watch: revision compacted (oldest kept: {response.compact_revision})",
                        compact_revision=response.compact_revision,
                    )
                if response.canceled:
                    reason = response.cancel_reason or "no reason given"
                    raise EtcdError(f"Watch: canceled by etcd: {reason}")
                if response.created:
                    timeout = None
                    yield Changes(revision=start_revision - 1, events=[])
                elif response.events:
                    fragments.extend(_event(e) for e in response.events)
                    if response.fragment:
                        continue
                    events, fragments = fragments, []
                    yield Changes(revision=events[-1].kv.mod_revision, events=events)
                else:
                    yield Changes(revision=response.header.revision, events=[])
        finally:
            stream.cancel()


# ----------------------------------------------------------------- streams


class _Stream:
    """One bidirectional call on the client's current endpoint; errors come out translated.

    Any failure cancels the call: a failed stream is never reused.
    """

    def __init__(self, client: EtcdClient, method: str) -> None:
        self._client = client
        self._method = method
        self._index, endpoint = client._active()
        self._call: Any = endpoint.method(method)()

    async def send(self, request: Any) -> None:
        try:
            await self._call.write(request)
        except GRPC_ERRORS as err:
            raise self._fail(translate_error(err, self._method)) from None

    async def recv(self, timeout: float | None = None) -> Any:
        """The next reply; EtcdUnavailable if none comes within `timeout` (None: wait)."""
        try:
            async with asyncio.timeout(timeout):
                response = await self._call.read()
        except (*GRPC_ERRORS, TimeoutError) as err:
            raise self._fail(translate_error(err, self._method)) from None
        if response is grpc.aio.EOF:
            raise self._fail(EtcdUnavailable(f"{self._method}: etcd closed the stream"))
        return response

    def cancel(self) -> None:
        self._call.cancel()

    def _fail(self, error: EtcdError) -> EtcdError:
        self.cancel()
        self._client._failed(self._index, error)
        return error


class LeaseKeepAliveStream:
    """One LeaseKeepAlive stream; each `ping` refreshes a lease and returns etcd's TTL."""

    def __init__(self, client: EtcdClient) -> None:
        self._client = client
        self._stream: _Stream | None = None

    async def ping(self, lease_id: int, *, timeout: float | None = None) -> int:
        """Refresh `lease_id` once; returns the TTL etcd reports (<= 0: the lease is gone).

        Raises EtcdUnavailable on a broken stream or no reply within `timeout`
        (default: the client timeout); the next ping then opens a new stream.
        """
        if self._stream is None:
            self._stream = _Stream(self._client, "LeaseKeepAlive")
        try:
            await self._stream.send(pb.LeaseKeepAliveRequest(ID=lease_id))
            response = await self._stream.recv(timeout or self._client.timeout)
        except EtcdError:
            self._stream = None
            raise
        ttl: int = response.TTL
        return ttl

    def close(self) -> None:
        if self._stream is not None:
            self._stream.cancel()
            self._stream = None
