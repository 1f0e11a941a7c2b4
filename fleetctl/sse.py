"""Server-Sent Events, read from lines: the parsing rules of the HTML standard that fleetd's
event stream uses (`id`, `event`, `data`, comments, a blank line ends an event).

Pure: `SSEParser.feed(line)` returns the event a blank line completes, or None.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class ServerEvent:
    """One event: its id (None when it carried none), kind, and data parsed as JSON."""

    id: str | None
    kind: str
    data: dict[str, Any]


@dataclass(slots=True)
class SSEParser:
    """Accumulates the fields of the event being read."""

    _id: str | None = None
    _kind: str = ""
    _data: list[str] = field(default_factory=list)

    def feed(self, line: str) -> ServerEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment (the stream's keep-alive)
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "id":
            self._id = value
        elif name == "event":
            self._kind = value
        elif name == "data":
            self._data.append(value)
        return None  # `retry` and unknown fields are ignored

    def _dispatch(self) -> ServerEvent | None:
        event_id, kind, data = self._id, self._kind or "message", self._data
        self._id, self._kind, self._data = None, "", []
        if not data:
            return None
        try:
            parsed = json.loads("\n".join(data))
        except ValueError:
            parsed = {"text": "\n".join(data)}
        if not isinstance(parsed, dict):
            parsed = {"value": parsed}
        return ServerEvent(event_id, kind, parsed)
