"""bench.rig's pure parts: fleetctl's error lines, which units run, arguments, bounded waits."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pytest

from bench.rig import BENCH_UNIT, parse_args, positive_seconds, sizes
from bench.rig_nodes import Rig, RigError
from bench.rig_steps import MAX_ERRORS, Bench, Progress, error_lines, running_units
from fleetctl.models import UnitState


def state(name: str, machine: str, active: str = "active", sub: str = "running") -> UnitState:
    return UnitState(name, machine, "", "loaded", active, sub)


def test_error_lines_keeps_only_the_lines_that_report_a_problem() -> None:
    stderr = (
        "Unit s@1.service inactive\n"
        "Error waiting for units: timed out waiting for unit s@2.service to report state launched\n"
        "WARNING: Unit s@3.service in registry differs from local unit file s@3.service.\n"
        "Successfully stopped units [s@1.service].\n"
    )
    assert error_lines(stderr) == [
        "Error waiting for units: timed out waiting for unit s@2.service to report state launched",
        "WARNING: Unit s@3.service in registry differs from local unit file s@3.service.",
    ]


def test_error_lines_are_capped_with_a_count_of_the_rest() -> None:
    lines = error_lines("\n".join(f"Error creating units: {n}" for n in range(MAX_ERRORS + 5)))
    assert len(lines) == MAX_ERRORS + 1
    assert lines[-1] == "... and 5 more error lines"


def test_running_units_counts_loaded_active_running_and_skips_the_dead_machine() -> None:
    states = [
        state("a.service", "m1"),
        state("b.service", "m1", "activating", "start"),
        state("c.service", "dead"),  # the dead machine's last report lingers
        state("c.service", "m2"),
        state("d.service", "dead"),
        state("other.service", "m2"),
    ]
    names = {"a.service", "b.service", "c.service", "d.service"}
    assert running_units(states, names) == {"a.service", "c.service", "d.service"}
    assert running_units(states, names, elsewhere_than="dead") == {"a.service", "c.service"}


def test_only_the_benchmarks_own_units_count_as_leftovers() -> None:
    owned = ["bench-one.service", "s@.service", "s@17.service", "failover@.service"]
    assert all(BENCH_UNIT.match(name) for name in [*owned, "failover@200.service"])
    others = ["web@1.service", "s@x.service", "hello.service", "ss@1.service", "s@1.socket"]
    assert not any(BENCH_UNIT.match(name) for name in others)


def test_arguments_have_the_documented_defaults() -> None:
    args = parse_args([])
    assert (args.units, args.skip_kill, args.keep) == (1100, False, False)
    assert args.failover_sizes == [100, 1]
    assert parse_args(["--failover-sizes", "50, 3", "--units", "7"]).failover_sizes == [50, 3]


@pytest.mark.parametrize("text", ["0", "-3", "x", "1.5", ""])
def test_bad_sizes_are_refused_with_the_value(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="at least 1"):
        sizes(f"100,{text}" if text else "100,,0")


@pytest.mark.parametrize("text", ["0", "-1", "soon", "nan"])
def test_bad_seconds_are_refused_with_the_value(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=repr(text)):
        positive_seconds(text)


def test_bad_units_stop_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--units", "0"])
    assert "expected a whole number of at least 1, got '0'" in capsys.readouterr().err


def bench(tmp_path: Path) -> Bench:
    rig = Rig(tmp_path, "no-such-project", tmp_path / "fleet.sock")
    return Bench(rig, tmp_path, timeout=1.0, fleetctl_path=tmp_path / "fleetctl", machines={})


def test_a_wait_ends_at_its_deadline_with_what_it_saw_last(tmp_path: Path) -> None:
    looks = []

    def probe() -> Progress:
        looks.append(1)
        return Progress(False, len(looks), f"look {len(looks)}")

    deadline = time.monotonic() + 0.6
    last = bench(tmp_path).wait(probe, deadline)
    assert time.monotonic() >= deadline
    assert not last.done
    assert last == Progress(False, len(looks), f"look {len(looks)}")
    assert len(looks) >= 2


def test_a_failed_look_is_a_look_without_news(tmp_path: Path) -> None:
    looks = []

    def probe() -> Progress:
        looks.append(1)
        if len(looks) == 1:
            return Progress(False, 5, "5 running")
        if len(looks) == 2:
            raise RigError("docker exec node2 exited 1")
        return Progress(True, 7, "7 running")

    last = bench(tmp_path).wait(probe, time.monotonic() + 30)
    assert last == Progress(True, 7, "7 running")
    assert len(looks) == 3


def test_a_wait_that_never_succeeds_keeps_the_failure(tmp_path: Path) -> None:
    def probe() -> Progress:
        raise RigError("no such container")

    last = bench(tmp_path).wait(probe, time.monotonic() + 0.3)
    assert not last.done
    assert "no such container" in last.seen
