"""Output: fleet's legends, where each message goes, the one JSON document, the progress bar."""

from __future__ import annotations

import json

import pytest

from fleetctl import output
from fleetctl.models import Machine
from fleetctl.output import (
    Output,
    OutputFormat,
    go_list,
    hash_legend,
    machine_id_legend,
    machine_legend,
    metadata_legend,
)

MACHINE_ID = "113f16a7b1d84f6f8a2a9d5d2b3c2f19"
HASH = "e55c0aeb44ba0b68004ceb8a200e685194448b45"


def test_machine_legends() -> None:
    machine = Machine(MACHINE_ID, "172.17.8.103")
    assert machine_legend(machine, full=False) == "113f16a7.../172.17.8.103"
    assert machine_legend(machine, full=True) == f"{MACHINE_ID}/172.17.8.103"
    assert machine_legend(Machine(MACHINE_ID), full=False) == "113f16a7..."
    assert machine_id_legend(MACHINE_ID, full=False) == "113f16a7..."


def test_hash_legend() -> None:
    assert hash_legend(HASH, full=False) == "e55c0ae"
    assert hash_legend(HASH, full=True) == HASH
    assert hash_legend("", full=True) == "-"


def test_metadata_legend_sorts_by_key() -> None:
    assert metadata_legend({"role": "web", "az": "us-west-1b"}) == "az=us-west-1b,role=web"
    assert metadata_legend({}) == "-"


def test_go_list() -> None:
    assert go_list(["a.service", "b.service"]) == "[a.service b.service]"
    assert go_list([]) == "[]"


def test_text_mode_streams(capsys: pytest.CaptureFixture[str]) -> None:
    out = Output()
    out.say("result")
    out.write("raw")
    out.warn("careful")
    out.error("broken")
    out.note("done")
    out.debug("hidden")
    out.unit("a.service", state="launched")
    out.finish(1)
    captured = capsys.readouterr()
    assert captured.out == "result\nraw"
    assert captured.err == "careful\nbroken\ndone\n"


def test_debug_lines_are_timestamped(capsys: pytest.CaptureFixture[str]) -> None:
    Output(debug=True).debug("GET /fleet/v1/units -> 200")
    assert capsys.readouterr().err.endswith(" DEBUG GET /fleet/v1/units -> 200\n")


def test_text_tables_use_fleets_layout(capsys: pytest.CaptureFixture[str]) -> None:
    out = Output()
    out.table(["unit", "active"], [["hello.service", "active"]], legend=True)
    out.table(["unit"], [["x.service"]], legend=False)
    assert capsys.readouterr().out == "UNIT\t\tACTIVE\nhello.service\tactive\nx.service\n"


def test_json_mode_writes_one_document(capsys: pytest.CaptureFixture[str]) -> None:
    out = Output(OutputFormat.JSON)
    out.command = "start"
    out.say("Unit a.service launched")
    out.write("raw")
    out.table(["unit"], [["a.service"]], legend=True)
    out.unit("a.service", created=True)
    out.unit("a.service", state="launched")
    out.unit("b.service", error="boom")
    out.put("extra", [1])
    out.warn("careful")
    out.error("broken")
    out.finish(1)
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {
        "command": "start",
        "ok": False,
        "units": [
            {"name": "a.service", "created": True, "state": "launched"},
            {"name": "b.service", "error": "boom"},
        ],
        "extra": [1],
        "errors": ["broken"],
        "warnings": ["careful"],
    }
    assert captured.err == "careful\nbroken\n"


def test_no_progress_bar_off_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    with Output().progress(50, "start") as advance:
        advance()
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize(
    ("total", "output_format", "drawn"),
    [
        (11, OutputFormat.TEXT, True),
        (10, OutputFormat.TEXT, False),
        (11, OutputFormat.JSON, False),
    ],
)
def test_progress_bar_on_a_terminal(
    total: int,
    output_format: OutputFormat,
    drawn: bool,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(output, "is_terminal", lambda stream: True)
    with Output(output_format).progress(total, "start: waiting for units") as advance:
        for _ in range(total):
            advance()
    assert ("start: waiting for units" in capsys.readouterr().err) is drawn
