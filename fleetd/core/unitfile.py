r"""systemd unit files as fleet sees them: parsed like go-systemd's `unit.Deserialize`, written
like its `unit.Serialize`, and identified by the SHA-1 of the written form.

Role: turn unit-file text into an ordered tuple of `UnitOption`s and back, so that a unit's hash
equals the hash fleet computes for the same file.

Parsing rules (go-systemd's lexer):
* Leading whitespace on a line is skipped.  Blank lines are ignored.
* `#` and `;` start a comment.  A comment line ending in `\` (one trailing space allowed)
  swallows the next line as well.
* `[Section]` opens a section.  The name is kept verbatim up to the first `]`; anything but
  whitespace after the `]` is an error.
* `Name=Value`: the name is everything before the first `=`, the value everything after it;
  both are whitespace-trimmed.  A line without `=` is an error.
* A value line ending in `\` continues onto the next line.  The value keeps the backslash and
  the newline: lines `A=x \` and `  y` give the value `x \`, newline, `  y`.  A blank line ends
  the value and leaves the newline at its end; end of file after the backslash leaves just the
  backslash.
* Continuation lines are taken raw: `#` or `[` at their start means nothing special.
* Whitespace means Go's `unicode.IsSpace` (`WHITESPACE`), not Python's `str.isspace`.
* Lines end at `\n` only.  A `\r` before it stays in the line (it is whitespace, so trimming
  usually removes it), which means that `\` followed by CRLF does not continue a line.
* A physical line of `LINE_MAX` (2048) bytes or more, counted in UTF-8 between line breaks
  (`\r` included), is an error: `line too long (max 2048 bytes)`.

Decisions where go-systemd is looser (each is an error here, with its line number):
* text before the first section header other than comments and blank lines (go-systemd skips
  it silently; `[` inside such text would even open a section);
* a section header whose `]` is not on the same line (go-systemd reads on across lines);
* empty input is *not* an error: it gives a unit with no options, as in fleet (the API refuses
  to create a unit without options, with its own message).

Serialization: sections in first-seen order, each as `[Sec]\n` followed by its `Name=Value\n`
lines in order, one blank line between sections, none at the end; comments, blank lines and
sections without options are lost.  A value that ends in a backslash serializes to text that
re-parses differently (it swallows the next line): go-systemd does the same, and the hash is
taken over the serialized options, so this is kept for hash parity.

Invariants: `UnitFile` is immutable and hashable; `parse_unit(u.serialize()).options ==
u.options` for options whose sections lack `]` and newlines, whose names are trimmed, lack `=`
and newlines and do not start with `#`, `;` or `[`, and whose values are trimmed and lack
newlines and a trailing backslash.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from fleetd.core.names import go_quote

LINE_MAX = 2048
"""systemd's LINE_MAX: a line this long (in bytes) or longer is refused."""

WHITESPACE = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
    "\u200a\u2028\u2029\u202f\u205f\u3000"
)
"""The characters Go's `unicode.IsSpace` accepts, for `str.strip`."""

_COMMENT_CHARS = "#;"


@dataclass(frozen=True, slots=True)
class UnitOption:
    """One `Name=Value` line of section `section`."""

    section: str
    name: str
    value: str


class UnitFileError(ValueError):
    """Unit-file text that cannot be parsed; `problem` is the bare message, `line` is 1-based."""

    def __init__(self, problem: str, line: int) -> None:
        super().__init__(f"line {line}: {problem}")
        self.problem = problem
        self.line = line


@dataclass(frozen=True, slots=True)
class UnitFile:
    """A unit file as an ordered tuple of options; equal files have equal hashes."""

    options: tuple[UnitOption, ...] = ()

    def serialize(self) -> str:
        """fleet's canonical text for these options (go-systemd `unit.Serialize`)."""
        grouped: dict[str, list[str]] = {}
        for option in self.options:
            grouped.setdefault(option.section, []).append(f"{option.name}={option.value}\n")
        return "\n".join(f"[{section}]\n" + "".join(lines) for section, lines in grouped.items())

    @property
    def hash(self) -> str:
        """40 lowercase hex digits: SHA-1 of the serialized text in UTF-8 (computed per call)."""
        return hashlib.sha1(self.serialize().encode("utf-8")).hexdigest()

    def values(self, section: str, name: str) -> list[str]:
        """The values of every `name` option in `section`, in file order."""
        return [o.value for o in self.options if o.section == section and o.name == name]

    def sections(self) -> list[str]:
        """Section names that hold at least one option, in first-seen order."""
        return list(dict.fromkeys(option.section for option in self.options))


def unit_from_options(options: Iterable[UnitOption]) -> UnitFile:
    """A unit file holding `options` as given (no re-parsing, no checks)."""
    return UnitFile(tuple(options))


def _check_length(line: str, lineno: int) -> None:
    if len(line) * 4 < LINE_MAX:  # fast path: cannot reach LINE_MAX bytes even in UTF-8
        return
    for piece in line.split("\r"):
        if len(piece.encode("utf-8", "surrogatepass")) >= LINE_MAX:
            raise UnitFileError(f"line too long (max {LINE_MAX} bytes)", lineno)


class _Lexer:
    """Walks the physical lines of one text; `index` is the next line to read."""

    def __init__(self, text: str) -> None:
        self.lines = text.split("\n")
        self.last = len(self.lines) - 1
        self.index = 0

    def take(self) -> tuple[str, int]:
        """The next physical line (length-checked) and its 1-based number."""
        line = self.lines[self.index]
        self.index += 1
        _check_length(line, self.index)
        return line, self.index

    def at_eof(self) -> bool:
        return self.index > self.last

    def skip_comment(self, rest: str) -> None:
        """Consume the comment whose text after `#` is `rest`, with its continuation lines."""
        while True:
            rest = rest.removesuffix(" ")
            if not rest.endswith("\\") or self.at_eof():
                return
            rest, _ = self.take()

    def read_value(self, first: str) -> str:
        """The value that starts with `first` (the text after `=`), with continuations."""
        parts: list[str] = []
        segment = first
        while segment.strip(WHITESPACE):
            parts.append(segment)
            if not segment.endswith("\\") or self.at_eof():
                break
            parts.append("\n")
            segment, _ = self.take()
        value = "".join(parts)
        if value.endswith("\n"):  # ended by a blank line after a backslash: keep the newline
            return value.strip(WHITESPACE) + "\n"
        return value.strip(WHITESPACE)


def _section_header(body: str, lineno: int) -> str:
    close = body.find("]", 1)
    if close == -1:
        raise UnitFileError("unable to find end of section", lineno)
    section = body[1:close]
    garbage = body[close + 1 :].strip(WHITESPACE)
    if garbage:
        raise UnitFileError(
            f"found garbage after section name {section}: {go_quote(garbage)}", lineno
        )
    return section


def _option_name(body: str, lineno: int, at_eof: bool) -> tuple[str, str]:
    """Split an option line into its trimmed name and the raw text after `=`."""
    name, equals, rest = body.partition("=")
    if "\r" in name or (not equals and not at_eof):
        raise UnitFileError("unexpected newline encountered while parsing option name", lineno)
    if not equals:
        raise UnitFileError("unexpected end of file while parsing option name", lineno)
    return name.strip(WHITESPACE), rest


def parse_unit(text: str) -> UnitFile:
    """Parse unit-file text; raises `UnitFileError` naming the problem and its line."""
    lexer = _Lexer(text)
    options: list[UnitOption] = []
    section: str | None = None
    while not lexer.at_eof():
        line, lineno = lexer.take()
        body = line.lstrip(WHITESPACE)
        if not body:
            continue
        if body[0] in _COMMENT_CHARS:
            lexer.skip_comment(body[1:])
        elif body[0] == "[":
            section = _section_header(body, lineno)
        elif section is None:
            raise UnitFileError("option before any section", lineno)
        else:
            name, rest = _option_name(body, lineno, lexer.at_eof())
            options.append(UnitOption(section, name, lexer.read_value(rest)))
    return UnitFile(tuple(options))
