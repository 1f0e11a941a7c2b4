"""The state tables in code agree row by row with `docs/states.md`, and nothing else is allowed."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from fleetd.core.states import (
    COMMAND_TRANSITIONS,
    CONVERGENCE_STEPS,
    Command,
    InvalidTransition,
    JobState,
    Step,
    apply_command,
    steps_towards,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "states.md"


def _doc_table(name: str) -> list[list[str]]:
    text = DOC.read_text()
    match = re.search(rf"<!-- table: {name} -->\n(.*?)<!-- end table -->", text, re.S)
    assert match, f"docs/states.md has no table {name!r}"
    rows = [line.strip().strip("|").split("|") for line in match.group(1).strip().splitlines()]
    return [[cell.strip() for cell in row] for row in rows[2:]]


def _state(cell: str) -> JobState | None:
    return None if cell == "-" else JobState(cell)


def test_command_table_matches_the_doc() -> None:
    documented = {
        (Command(cmd), _state(before)): _state(after)
        for cmd, before, after in _doc_table("commands")
    }
    assert documented == COMMAND_TRANSITIONS


def test_steps_table_matches_the_doc() -> None:
    documented = {
        (JobState(cur), JobState(want)): tuple(Step(s.strip()) for s in steps.split(","))
        for cur, want, steps in _doc_table("steps")
    }
    assert documented == CONVERGENCE_STEPS


@pytest.mark.parametrize(
    ("command", "before"),
    list(itertools.product(Command, [None, *JobState])),
)
def test_every_command_in_every_state(command: Command, before: JobState | None) -> None:
    if (command, before) in COMMAND_TRANSITIONS:
        assert apply_command("a.service", command, before) == COMMAND_TRANSITIONS[command, before]
    else:
        with pytest.raises(InvalidTransition, match=rf"cannot {command} unit a\.service"):
            apply_command("a.service", command, before)


@pytest.mark.parametrize(("current", "desired"), list(itertools.product(JobState, JobState)))
def test_steps_reach_the_desired_state(current: JobState, desired: JobState) -> None:
    state = current
    for step in steps_towards(current, desired):
        state = {
            Step.LOAD: JobState.LOADED,
            Step.START: JobState.LAUNCHED,
            Step.STOP: JobState.LOADED,
            Step.UNLOAD: JobState.INACTIVE,
        }[step]
    assert state == desired


def test_states_are_the_wire_strings() -> None:
    assert [s.value for s in JobState] == ["inactive", "loaded", "launched"]
