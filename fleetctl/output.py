"""Everything fleetctl prints: fleet's legends and tables, messages, and the JSON document.

Role: commands never write to a stream themselves; they call an `Output`, which knows the format
(`--output text|json`) and where each kind of message goes:
* `say`: a result line on stdout (`Unit hello.service launched on 113f16a7.../172.17.8.103`);
* `warn` and `error`: stderr, always, in both formats (errors are also listed in the JSON);
* `table`: fleet's tab-padded table (text) or a list of row objects (JSON);
* `unit` and `put`: the JSON document's content (ignored in text mode).

Invariants:
* Text output is plain text: no colour, no markup, whatever the terminal.
* With `--output json`, stdout carries exactly one JSON document per command, written by
  `finish`: `{"command", "ok", ..., "errors", "warnings"}`; nothing else goes to stdout.
* The progress bar is drawn on stderr, only in text mode, only when stdout and stderr are both
  terminals and more than `PROGRESS_MIN_UNITS` units are waited for.
* Streams are looked up at each write (`sys.stdout` may be swapped by tests or by rich).
* Only `debug` is called from worker threads (the client's request log during `fleetctl.bulk`
  calls); stderr lines are written whole, one at a time.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from enum import StrEnum
from typing import Any, TextIO

from fleetctl.models import Machine
from fleetctl.tabwriter import render

EMPTY = "-"
SHORT_ID_LENGTH = 8
SHORT_HASH_LENGTH = 7
PROGRESS_MIN_UNITS = 11
"""A progress bar appears when at least this many units are waited for (fleet printed none)."""


_STDERR_LOCK = threading.Lock()


class OutputFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


def or_empty(value: str) -> str:
    """`value`, or fleet's `-` for an empty cell."""
    return value or EMPTY


def machine_id_legend(machine_id: str, full: bool) -> str:
    """`113f16a7...`, or the whole id with `--full`."""
    return machine_id if full else machine_id[:SHORT_ID_LENGTH] + "..."


def machine_legend(machine: Machine, full: bool) -> str:
    """`113f16a7.../172.17.8.103`: the id legend, then `/IP` when the IP is known."""
    legend = machine_id_legend(machine.id, full)
    return f"{legend}/{machine.primary_ip}" if machine.primary_ip else legend


def hash_legend(unit_hash: str, full: bool) -> str:
    """7 hex digits of a unit hash, or all 40 with `--full`; `-` when unknown."""
    if not unit_hash:
        return EMPTY
    return unit_hash if full else unit_hash[:SHORT_HASH_LENGTH]


def metadata_legend(metadata: Mapping[str, str]) -> str:
    """`k=v` pairs sorted by key and joined by commas, or `-`."""
    return ",".join(f"{key}={metadata[key]}" for key in sorted(metadata)) or EMPTY


def go_list(names: Sequence[str]) -> str:
    """A list of names as Go's `%v` prints a `[]string`: `[a b]`."""
    return "[" + " ".join(names) + "]"


def is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class Output:
    """The printer for one command run."""

    def __init__(
        self, output_format: OutputFormat = OutputFormat.TEXT, debug: bool = False
    ) -> None:
        self.format = output_format
        self.debug_enabled = debug
        self.command = ""
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self.units: dict[str, dict[str, Any]] = {}
        self.document: dict[str, Any] = {}

    @property
    def json(self) -> bool:
        return self.format is OutputFormat.JSON

    def say(self, text: str) -> None:
        """A result line on stdout (text mode only)."""
        if not self.json:
            self.write(text + "\n")

    def write(self, text: str) -> None:
        """Raw text on stdout (text mode only): `cat` prints a unit file without a newline."""
        if not self.json:
            sys.stdout.write(text)
            sys.stdout.flush()

    def warn(self, text: str) -> None:
        self.warnings.append(text)
        self._stderr(text)

    def error(self, text: str) -> None:
        self.errors.append(text)
        self._stderr(text)

    def note(self, text: str) -> None:
        """A message for stderr that is neither a warning nor an error (`Successfully ...`)."""
        self._stderr(text)

    def debug(self, text: str) -> None:
        if self.debug_enabled:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
            self._stderr(f"{stamp} DEBUG {text}")

    def _stderr(self, text: str) -> None:
        with _STDERR_LOCK:
            sys.stderr.write(text + "\n")
            sys.stderr.flush()

    def table(self, header: Sequence[str], rows: Sequence[Sequence[str]], legend: bool) -> None:
        """Text: fleet's table (header upper-cased unless `legend` is false)."""
        lines = ([[name.upper() for name in header]] if legend else []) + [list(r) for r in rows]
        if lines and not self.json:
            self.write(render(lines))

    def put(self, key: str, value: Any) -> None:
        """Set a top-level field of the JSON document."""
        self.document[key] = value

    def unit(self, name: str, **fields: Any) -> None:
        """Merge `fields` into the JSON record of unit `name` (records keep first-seen order)."""
        record = self.units.setdefault(name, {"name": name})
        record.update(fields)

    def finish(self, exit_code: int) -> None:
        """In JSON mode, write the command's one document."""
        if not self.json:
            return
        document: dict[str, Any] = {"command": self.command, "ok": exit_code == 0}
        if self.units:
            document["units"] = list(self.units.values())
        document.update(self.document)
        document["errors"] = self.errors
        document["warnings"] = self.warnings
        sys.stdout.write(json.dumps(document, indent=2, sort_keys=False) + "\n")
        sys.stdout.flush()

    @contextmanager
    def progress(self, total: int, description: str) -> Iterator[Callable[[], None]]:
        """A callable that advances a progress bar on stderr, when one is worth drawing."""
        wanted = (
            not self.json
            and total >= PROGRESS_MIN_UNITS
            and is_terminal(sys.stdout)
            and is_terminal(sys.stderr)
        )
        if not wanted:
            yield lambda: None
            return
        # rich costs a command about 60 ms to import: only a command that draws a bar pays it
        from rich.console import Console  # noqa: PLC0415
        from rich.progress import Progress  # noqa: PLC0415

        console = Console(file=sys.stderr, force_terminal=True)
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task(description, total=total)
            yield lambda: bar.advance(task)
