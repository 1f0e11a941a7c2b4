"""The registry's exceptions: the only errors that leave fleetd/registry.

Every gRPC failure is translated into one of these at the client boundary, so
no caller ever handles a grpc exception. The split that matters to callers:

- `EtcdUnavailable` is transient (etcd down, restarting, unreachable, or the
  call ran out of time). The caller retries with backoff. A write that failed
  this way may or may not have been applied.
- `EtcdCompacted` means the requested revision is gone; re-read the state.
- `LeaseNotFound` means the lease expired or was revoked.
- `EtcdResponseTooLarge`: a reply over the client's receive limit (ask for less);
  `EtcdRequestTooLarge`: a write over etcd's `--max-request-bytes` (nothing was written).
- anything else is an `EtcdError` that retrying will not fix.

`translate_error` is the one place that maps a gRPC failure to these.
"""

from __future__ import annotations

import asyncio
from typing import Final

import grpc
import grpc.aio


class EtcdError(Exception):
    """Base of every error raised by fleetd.registry."""


class EtcdUnavailable(EtcdError):
    """etcd could not be reached or did not answer in time (transient)."""


class EtcdCompacted(EtcdError):
    """The requested revision has been compacted away.

    `compact_revision` is the oldest revision etcd still keeps when etcd says
    so (a cancelled watch does); 0 when it did not (a Range error does not).
    """

    def __init__(self, message: str, *, compact_revision: int = 0) -> None:
        super().__init__(message)
        self.compact_revision = compact_revision


class LeaseNotFound(EtcdError):
    """The lease does not exist: it expired or was revoked."""


class EtcdResponseTooLarge(EtcdError):
    """etcd's reply is larger than the client's receive limit; a smaller read may fit."""


class EtcdRequestTooLarge(EtcdError):
    """etcd refused a write larger than its `--max-request-bytes`; nothing was written."""


# Exceptions a grpc.aio call or stream can raise (besides CancelledError).
GRPC_ERRORS: Final = (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError)

_TRANSIENT_CODES: Final = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
)


def _request_too_large(code: grpc.StatusCode, details: str) -> bool:
    """etcd refused a request for its size: by its own check (a little over --max-request-bytes,
    "request is too large"), or by its gRPC server's receive limit, 512 KiB above that."""
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return "request is too large" in details
    return code == grpc.StatusCode.RESOURCE_EXHAUSTED and (
        "grpc: received message larger than max" in details  # etcd's (Go) wording, not ours
    )


def translate_error(err: BaseException, what: str) -> EtcdError:
    """The registry exception for a failure of the gRPC call `what`.

    `err` is one of GRPC_ERRORS or a TimeoutError from a client-side wait.
    """
    if isinstance(err, grpc.aio.AioRpcError):
        code, details = err.code(), err.details() or ""
        message = f"{what}: {code.name}: {details}"
        if code in _TRANSIENT_CODES:
            return EtcdUnavailable(message)
        if code == grpc.StatusCode.OUT_OF_RANGE and "compacted" in details:
            return EtcdCompacted(message)
        if code == grpc.StatusCode.NOT_FOUND and "lease not found" in details:
            return LeaseNotFound(message)
        if _request_too_large(code, details):
            return EtcdRequestTooLarge(
                f"{what}: the write is larger than etcd accepts (its --max-request-bytes): "
                f"{details}"
            )
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details:
            return EtcdResponseTooLarge(message)  # the receive limit on this side
        return EtcdError(message)
    if isinstance(err, TimeoutError):
        return EtcdUnavailable(f"{what}: no answer in time")
    if isinstance(err, asyncio.InvalidStateError):  # the call already ended
        return EtcdUnavailable(f"{what}: stream closed: {err}")
    return EtcdError(f"{what}: {err!r}")
