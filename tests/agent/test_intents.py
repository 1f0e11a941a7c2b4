"""Launch intents: recorded per hash, kept in a file that outlives the agent."""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog

from agent.intents import INTENTS_FILE, LaunchIntents


def test_records_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "units" / INTENTS_FILE
    intents = LaunchIntents(path)
    assert intents.launched("a.service", "h1") is None  # no record: the planner infers
    intents.record("a.service", "h1", launched=True)
    intents.record("b.service", "h2", launched=False)
    again = LaunchIntents(path)
    assert again.launched("a.service", "h1") is True
    assert again.launched("b.service", "h2") is False
    assert again.launched("a.service", "h9") is None  # recorded for another hash
    again.forget("a.service")
    assert LaunchIntents(path).launched("a.service", "h1") is None
    assert sorted(p.name for p in path.parent.iterdir()) == [INTENTS_FILE]  # no temporaries


def test_an_unreadable_file_means_no_records(tmp_path: Path) -> None:
    path = tmp_path / INTENTS_FILE
    path.write_text("{not json")
    with structlog.testing.capture_logs() as logs:
        assert LaunchIntents(path).launched("a.service", "h1") is None
    assert logs[0]["event"] == "launch intents unreadable, ignoring them"
    path.write_text('{"a.service": {"hash": "h1", "launched": true}, "b.service": 3}')
    with structlog.testing.capture_logs() as logs:
        intents = LaunchIntents(path)
    assert intents.launched("a.service", "h1") is True
    assert intents.launched("b.service", "h1") is None
    assert logs[0]["event"] == "launch intents partly malformed, ignoring the bad ones"


def test_in_memory_only(tmp_path: Path) -> None:
    intents = LaunchIntents(None)
    intents.record("a.service", "h1", launched=True)
    assert intents.launched("a.service", "h1") is True
    assert list(tmp_path.iterdir()) == []


def test_batched_saves_every_few_changes_and_at_the_end(tmp_path: Path) -> None:
    path = tmp_path / INTENTS_FILE
    intents = LaunchIntents(path)
    with intents.batched(every=3):
        intents.record("a.service", "h1", launched=True)
        intents.record("b.service", "h1", launched=True)
        assert not path.exists()  # two changes: not saved yet
        intents.record("c.service", "h1", launched=True)
        assert LaunchIntents(path).launched("c.service", "h1") is True  # the third saves
        intents.forget("a.service")
        assert LaunchIntents(path).launched("a.service", "h1") is True  # not saved yet
    assert LaunchIntents(path).launched("a.service", "h1") is None  # saved at the end
    intents.record("d.service", "h1", launched=False)  # outside a batch: saved at once
    assert LaunchIntents(path).launched("d.service", "h1") is False


def test_batched_saves_what_is_left_when_the_block_raises(tmp_path: Path) -> None:
    path = tmp_path / INTENTS_FILE
    intents = LaunchIntents(path)

    def fail_after_a_change() -> None:
        with intents.batched(every=64):
            intents.record("a.service", "h1", launched=True)
            raise RuntimeError("a task failed")

    with pytest.raises(RuntimeError):
        fail_after_a_change()
    assert LaunchIntents(path).launched("a.service", "h1") is True
