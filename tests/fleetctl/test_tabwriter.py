"""Go's text/tabwriter (minwidth 0, tabwidth 8, padding 1, padchar TAB): table tests.

Expected outputs were worked out by hand from Go's algorithm: a column's width is its widest
cell plus one, rounded up to a multiple of 8, reached with tabs; the last cell of a line is not
in a column; a line with fewer cells ends the column blocks to its right.
"""

from __future__ import annotations

import pytest

from fleetctl.tabwriter import render

CASES = [
    pytest.param([], "", id="nothing"),
    pytest.param([["a"]], "a\n", id="one-cell-no-padding"),
    pytest.param([["a", "b"]], "a\tb\n", id="short-cell-one-tab"),
    pytest.param([["1234567", "b"]], "1234567\tb\n", id="seven-chars-fit-one-tab"),
    pytest.param([["12345678", "b"]], "12345678\tb\n", id="eight-chars-one-tab-to-16"),
    pytest.param(
        [["12345678", "b"], ["a", "c"]], "12345678\tb\na\t\tc\n", id="short-cell-two-tabs-to-16"
    ),
    pytest.param(
        [["a", "b"], ["12345678", "c"]], "a\t\tb\n12345678\tc\n", id="widest-cell-sets-width"
    ),
    pytest.param([["", "b"]], "\tb\n", id="empty-cell-still-padded"),
    pytest.param(
        [
            ["UNIT", "HASH", "DSTATE", "STATE", "TARGET"],
            ["hello.service", "e55c0ae", "launched", "launched", "113f16a7.../172.17.8.103"],
        ],
        "UNIT\t\tHASH\tDSTATE\t\tSTATE\t\tTARGET\n"
        "hello.service\te55c0ae\tlaunched\tlaunched\t113f16a7.../172.17.8.103\n",
        id="fleet-list-unit-files",
    ),
    pytest.param(
        [
            ["UNIT", "MACHINE", "ACTIVE", "SUB"],
            ["hello.service", "113f16a7.../172.17.8.103", "active", "running"],
        ],
        "UNIT\t\tMACHINE\t\t\t\tACTIVE\tSUB\n"
        "hello.service\t113f16a7.../172.17.8.103\tactive\trunning\n",
        id="fleet-list-units",
    ),
    pytest.param(
        [["MACHINE", "IP", "METADATA"], ["113f16a7...", "172.17.8.103", "az=us-west-1b,role=web"]],
        "MACHINE\t\tIP\t\tMETADATA\n113f16a7...\t172.17.8.103\taz=us-west-1b,role=web\n",
        id="fleet-list-machines",
    ),
    pytest.param(
        [["a", "b", "c"], ["x"], ["longer-cell", "d", "e"]],
        "a\tb\tc\nx\nlonger-cell\td\te\n",
        id="short-line-ends-the-block",
    ),
    pytest.param(
        [["aa", "bbbbbbbbbb", "c"], ["a", "b"], ["a", "b", "c"]],
        "aa\tbbbbbbbbbb\tc\na\tb\na\tb\tc\n",
        id="inner-column-blocks-split-outer-continues",
    ),
    pytest.param(
        [["é" * 8, "x"], ["a", "y"]], "éééééééé\tx\na\t\ty\n", id="width-counts-characters"
    ),
]


@pytest.mark.parametrize(("rows", "expected"), CASES)
def test_render(rows: list[list[str]], expected: str) -> None:
    assert render(rows) == expected


def test_columns_align_when_tabs_expand() -> None:
    rows = [["UNIT", "MACHINE"], ["a-much-longer-unit.service", "m"], ["b.service", "n"]]
    lines = render(rows).expandtabs(8).splitlines()
    starts = {line.rindex(word) for line, word in zip(lines, ["MACHINE", "m", "n"], strict=True)}
    assert starts == {32}


def test_fields_split_back_into_the_cells() -> None:
    rows = [["UNIT", "ACTIVE"], ["hello.service", "active"]]
    assert [line.split() for line in render(rows).splitlines()] == rows
