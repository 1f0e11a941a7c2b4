"""Guarded writes whose outcome the writer always learns, even when etcd's answer is lost.

A `GuardedWrite` sets or deletes some keys in one transaction, only if every key is still at the
mod revision the decision was made from (0: absent); with no changes it only confirms those
revisions. `apply_guarded` sends it and returns `Applied(revision)`, or `Moved()` when a guard
failed: nothing was written, and the caller decides again from a fresh `read_keys`.

When the answer is lost (the call timed out, or the connection broke after the request may have
left), the write may have been applied, or may still be applied once etcd reads it. Then
`apply_guarded` finds out before it returns:

* It reads the keys back in one snapshot. Keys still at their expected revisions: the write has
  not been applied, so it sends the same guarded write again. Every copy carries the same guard,
  so at most one can apply; once one has, the others never will, however late they arrive.
* Keys that moved: the write can no longer apply (a mod revision never comes back). It was
  applied if the first change to its keys after the decision is exactly this write (etcd's
  history, read with a watch); then `Applied` with that change's revision, else `Moved`. When
  that history has been compacted, the keys' current values decide.
* While etcd does not answer it keeps trying, for at most `resolve_for` seconds, then raises
  `WriteOutcomeUnknown`: the only case in which the caller cannot tell what happened.

Invariants: a write is never applied twice and nothing else is written. `EtcdUnavailable`
leaves `apply_guarded` only when nothing was written: the write carried no changes, or gRPC
found no connection to send it on (etcd down or unreachable: `NEVER_SENT`), which needs no
resolving. Every etcd call is bounded by a gRPC deadline, which etcd's answer
beats or not in real time: a busy event loop that resumes late never turns an answer into a
timeout.

Limit: a key expected absent (revision 0) that this write created and someone else deleted
again, both while etcd's answer was lost, reads back as "not applied" and is written again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Final

import structlog

from fleetd.registry.client import Compare, Delete, EtcdClient, Event, KeyValue, Put
from fleetd.registry.errors import EtcdCompacted, EtcdError, EtcdUnavailable

log = structlog.get_logger(__name__)

MIN_CALL_TIMEOUT: Final = 0.5  # seconds: every call gets at least this long, even late
# gRPC's words for a call that found no connection to send on: it never left this process
NEVER_SENT: Final = "failed to connect to all addresses"
_RETRY_PAUSE: Final = (0.05, 0.5)  # first and longest pause between tries while etcd is silent


class WriteOutcomeUnknown(EtcdError):
    """etcd did not answer in time, so nobody can say whether the write was applied."""


@dataclass(frozen=True, slots=True)
class GuardedWrite:
    """Changes to apply only if each key of `expected` is still at its revision (0: absent).

    `changes` maps a key of `expected` to its new value (None: delete); empty, the write only
    confirms the revisions. `observed_at` is an etcd revision at which every expected revision
    held (the view's or the read's): the write's history starts after it.
    """

    expected: Mapping[str, int]
    changes: Mapping[str, bytes | None]
    observed_at: int

    def __post_init__(self) -> None:
        stray = set(self.changes) - set(self.expected)
        if stray:
            raise ValueError(f"changes to keys without an expected revision: {sorted(stray)}")

    def compares(self) -> list[Compare]:
        return [Compare.mod_revision(key, "==", rev) for key, rev in self.expected.items()]

    def operations(self) -> list[Put | Delete]:
        return [
            Delete(key) if value is None else Put(key, value) for key, value in self.changes.items()
        ]

    def is_this(self, events: Sequence[Event]) -> bool:
        """Whether `events` (all at one revision) made exactly these changes to these keys."""
        made = {e.kv.key: (None if e.kind == "delete" else e.kv.value) for e in events}
        return all(key in made and made[key] == value for key, value in self.changes.items())

    def holds_in(self, current: Mapping[str, KeyValue]) -> bool:
        """Whether the keys currently hold these changes (by value: who wrote them is unknown)."""
        return all(_value(current.get(key)) == value for key, value in self.changes.items())


@dataclass(frozen=True, slots=True)
class Applied:
    """The write was applied (or, with no changes, its revisions confirmed) at `revision`."""

    revision: int


@dataclass(frozen=True, slots=True)
class Moved:
    """A key was no longer at its expected revision: nothing was written."""


def deadline_in(seconds: float) -> float:
    """A deadline `seconds` from now, on the clock `apply_guarded` uses (time.monotonic)."""
    return time.monotonic() + seconds


def _left(deadline: float) -> float:
    return max(deadline - time.monotonic(), MIN_CALL_TIMEOUT)


def _common_prefix(keys: Iterable[str]) -> str:
    """The longest string every key starts with: the range one read or watch covers them with."""
    ordered = sorted(keys)
    first, last = ordered[0], ordered[-1]
    length = 0
    while length < min(len(first), len(last)) and first[length] == last[length]:
        length += 1
    return first[:length]


def _value(kv: KeyValue | None) -> bytes | None:
    return None if kv is None else kv.value


async def read_keys(
    client: EtcdClient, keys: Sequence[str], *, deadline: float
) -> tuple[dict[str, KeyValue], int]:
    """The present ones among `keys`, read in one snapshot, and the snapshot's revision.

    A snapshot compacted away between its pages is read again, until `deadline`.
    """
    wanted = set(keys)
    while True:
        try:
            kvs, revision = await client.get_prefix(_common_prefix(wanted), timeout=_left(deadline))
        except EtcdCompacted as err:
            if time.monotonic() >= deadline:
                raise EtcdUnavailable(f"no snapshot of {sorted(wanted)} in time: {err}") from None
            continue
        return {kv.key: kv for kv in kvs if kv.key in wanted}, revision


async def apply_guarded(
    client: EtcdClient, write: GuardedWrite, *, deadline: float, resolve_for: float
) -> Applied | Moved:
    """Send `write` once (its call bounded by `deadline`); see the module docstring."""
    try:
        result = await client.txn(write.compares(), write.operations(), timeout=_left(deadline))
    except EtcdUnavailable as lost:
        if not write.changes or NEVER_SENT in str(lost):
            raise
        log.warning(
            "etcd's answer to a write was lost; finding out whether it was applied",
            keys=sorted(write.changes),
            error=str(lost),
        )
        return await _resolve(client, write, deadline_in(resolve_for), lost)
    return Applied(result.revision) if result.succeeded else Moved()


async def _resolve(
    client: EtcdClient, write: GuardedWrite, until: float, lost: EtcdUnavailable
) -> Applied | Moved:
    pause = _RETRY_PAUSE[0]
    last: EtcdError = lost
    while time.monotonic() < until:
        try:
            current, read_at = await read_keys(client, list(write.expected), deadline=until)
            if all(_revision(current.get(k)) == rev for k, rev in write.expected.items()):
                result = await client.txn(
                    write.compares(), write.operations(), timeout=_left(until)
                )
                if result.succeeded:
                    log.info("write applied on a second try", keys=sorted(write.changes))
                    return Applied(result.revision)
                continue  # it moved between the read and the try: look again
            outcome = await _first_change(client, write, current, read_at, until)
            log.info(
                "the lost write's outcome is known",
                keys=sorted(write.changes),
                applied=isinstance(outcome, Applied),
            )
            return outcome
        except EtcdError as err:  # unreachable, or a watch cancelled: still not known
            last = err
        await asyncio.sleep(min(pause, max(until - time.monotonic(), 0)))
        pause = min(pause * 2, _RETRY_PAUSE[1])
    raise WriteOutcomeUnknown(
        f"etcd did not answer in time; the write to {sorted(write.changes)} may or may not "
        f"have been applied ({last})"
    )


def _revision(kv: KeyValue | None) -> int:
    return 0 if kv is None else kv.mod_revision


async def _first_change(
    client: EtcdClient,
    write: GuardedWrite,
    current: Mapping[str, KeyValue],
    read_at: int,
    until: float,
) -> Applied | Moved:
    """Whether the first change to the write's keys after `observed_at` was this write.

    Some key has moved by `read_at`, so that change exists and the watch reaches it. If etcd
    has compacted that history, the values `current` read at `read_at` decide.
    """
    prefix = _common_prefix(write.expected)
    stream = client.watch(prefix, start_revision=write.observed_at + 1, progress_notify=False)
    try:
        async with asyncio.timeout(max(until - time.monotonic(), 0)), aclosing(stream):
            async for changes in stream:
                ours = [e for e in changes.events if e.kv.key in write.expected]
                if ours:
                    first = ours[0].kv.mod_revision
                    at_first = [e for e in ours if e.kv.mod_revision == first]
                    return Applied(first) if write.is_this(at_first) else Moved()
    except EtcdCompacted:
        if write.holds_in(current):
            return Applied(read_at)
        return Moved()
    except TimeoutError:
        raise EtcdUnavailable("Watch: no answer in time while reading a write's history") from None
    raise EtcdUnavailable("Watch: the stream ended")  # a watch never ends by itself
