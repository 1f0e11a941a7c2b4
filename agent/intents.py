"""The agent's launch intents: for each local unit, whether the agent started it at its hash.

systemd's states alone cannot tell "launched, then finished or failed" from "loaded, never
started": both are `inactive` or `failed`. Without the intent the agent would start a finished
oneshot again on every pass and retry a unit whose `ExecStart` fails in a loop. fleet kept this
in memory and lost it on restart (and then restarted everything); pyfleet keeps it in a small
JSON file beside the unit files (`<units directory>/.launched.json`, on tmpfs like them), so a
restarted fleetd knows what it started and starts nothing twice.

The executor records `launched=False` when it writes a unit or stops it, `True` when it starts
it, and forgets the unit when it unloads it.

Invariants: the file is replaced atomically after each change, or, inside `batched()`, after
every `every` changes and when the block ends (also when it raises): a pass that starts a
thousand units writes the file a few dozen times, not a thousand. An intent counts only for the
hash it was recorded at; a unit without a record for its hash gets `None`, and the planner then
infers from systemd's state. A missing or unreadable file means no records (logged when
unreadable).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import structlog

from fleetd.runtime.files import write_atomically

log = structlog.get_logger(__name__)

INTENTS_FILE = ".launched.json"


class LaunchIntents:
    """Unit name -> (hash, launched); persisted in `path` (None: in memory only)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._records: dict[str, tuple[str, bool]] = {}
        self._batch_every = 0  # inside `batched()`: save after this many changes (0: each one)
        self._unsaved = 0
        if path is not None:
            self._read(path)

    def _read(self, path: Path) -> None:
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("launch intents unreadable, ignoring them", path=str(path), error=str(exc))
            return
        records: dict[str, tuple[str, bool]] = {}
        for name, entry in raw.items() if isinstance(raw, dict) else ():
            if (
                isinstance(entry, dict)
                and isinstance(entry.get("hash"), str)
                and isinstance(entry.get("launched"), bool)
            ):
                records[name] = (entry["hash"], entry["launched"])
        if not isinstance(raw, dict) or len(records) != len(raw):
            log.warning("launch intents partly malformed, ignoring the bad ones", path=str(path))
        self._records = records

    def launched(self, name: str, hash_: str) -> bool | None:
        """Whether the agent started `name` at `hash_`; None when it has no record of it."""
        record = self._records.get(name)
        if record is None or record[0] != hash_:
            return None
        return record[1]

    def record(self, name: str, hash_: str, launched: bool) -> None:
        if self._records.get(name) != (hash_, launched):
            self._records[name] = (hash_, launched)
            self._save()

    def forget(self, name: str) -> None:
        if self._records.pop(name, None) is not None:
            self._save()

    @contextlib.contextmanager
    def batched(self, every: int = 64) -> Iterator[None]:
        """Within the block, save after every `every` changes; save what is left at its end."""
        if every < 1:
            raise ValueError("batched(every) needs every >= 1")
        outer = self._batch_every
        self._batch_every = every if outer == 0 else outer
        try:
            yield
        finally:
            self._batch_every = outer
            if outer == 0 and self._unsaved:
                self._write()

    def _save(self) -> None:
        self._unsaved += 1
        if self._batch_every == 0 or self._unsaved >= self._batch_every:
            self._write()

    def _write(self) -> None:
        self._unsaved = 0
        if self.path is None:
            return
        data = {name: {"hash": h, "launched": up} for name, (h, up) in self._records.items()}
        write_atomically(self.path, json.dumps(data, sort_keys=True).encode(), mode=0o600)
