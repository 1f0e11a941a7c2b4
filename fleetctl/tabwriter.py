"""Go's `text/tabwriter`, as fleetctl configures it, so tables come out byte for byte like fleet's.

Role: lay out rows of cells the way `tabwriter.NewWriter(out, 0, 8, 1, '\\t', 0)` does (minwidth
0, tabwidth 8, padding 1, padchar TAB, no flags). Scripts that parse fleet's tables (often with
`awk` or Go's `strings.Fields`) depend on this exact layout.

The algorithm, as Go runs it:
* Each input row is a line; its cells are tab-terminated, so the last cell of a row is *not*
  part of any column and is never padded.
* A column is laid out per *block*: a run of consecutive lines that all have a cell in that
  column (a tab-terminated one). Its width is the widest cell in the block plus the padding.
  A line without a cell in the column ends the block, and the columns to its right are
  formatted afresh below it.
* With TAB as the padding character, a column's width is rounded up to a multiple of the tab
  width and each cell is followed by as many tabs as it takes to reach it (at least one).
* Width is counted in characters (Go counts runes, which is the same for valid text).

Invariants: `render` is pure; every output line ends with a newline; cells must not contain tabs
or newlines (the caller's job: fleet values never do).
"""

from __future__ import annotations

from collections.abc import Sequence

MIN_WIDTH = 0
TAB_WIDTH = 8
PADDING = 1


def _padding_tabs(text_width: int, cell_width: int) -> str:
    """The tabs that pad a cell of `text_width` characters to a column of `cell_width`."""
    rounded = -(-cell_width // TAB_WIDTH) * TAB_WIDTH
    return "\t" * -(-(rounded - text_width) // TAB_WIDTH)


class _Layout:
    """One run of Go's recursive `format` over a fixed list of lines."""

    def __init__(self, lines: Sequence[Sequence[str]]) -> None:
        self.lines = lines
        self.widths: list[int] = []
        self.out: list[str] = []

    def write_lines(self, first: int, end: int) -> None:
        for line in self.lines[first:end]:
            parts: list[str] = []
            for column, cell in enumerate(line):
                parts.append(cell)
                if column < len(self.widths):
                    parts.append(_padding_tabs(len(cell), self.widths[column]))
            self.out.append("".join(parts) + "\n")

    def format(self, first: int, end: int) -> None:
        column = len(self.widths)
        this = first
        while this < end:
            if column >= len(self.lines[this]) - 1:
                this += 1
                continue
            # a block of lines that all have a cell in `column` starts here
            self.write_lines(first, this)
            first = this
            width = MIN_WIDTH
            while this < end and column < len(self.lines[this]) - 1:
                width = max(width, len(self.lines[this][column]) + PADDING)
                this += 1
            self.widths.append(width)
            self.format(first, this)
            self.widths.pop()
            first = this
        self.write_lines(first, end)


def render(rows: Sequence[Sequence[str]]) -> str:
    """The text Go's tabwriter writes for `rows` joined by tabs, one row per line."""
    layout = _Layout(rows)
    layout.format(0, len(rows))
    return "".join(layout.out)
