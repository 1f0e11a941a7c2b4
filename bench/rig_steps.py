"""The timed steps of `bench.rig`, each seen from the user's side.

Role: one function per kind of step (`start`, `failover`, `rejoin`, `destroy`). Each runs the
project's `fleetctl` on the host (or `docker kill` / `docker start`) and then polls node1's API
(and, for `destroy`, systemd inside the nodes) until the step's condition holds, and returns a
`Step`: seconds from the step's first action until the condition was seen, the units running at
the end, fleetctl's exit code and the error lines of its stderr, and the CPU seconds the whole
machine spent meanwhile (`cpu_s`, from `/proc/stat`: every process, the benchmark's own looks
included). On a machine whose speed varies from hour to hour, `cpu_s` tells how much work a step
took where its seconds also tell how long the machine took to do it.

Invariants:
* Every wait has a deadline (`Bench.timeout` seconds per step). A step that reaches it returns
  with `timed_out` and says what it saw last; a poll that fails is a poll without news.
* A unit runs when its machine reports it loaded, active and running; during a failover only
  machines other than the killed one count (a dead machine's last report lingers until its lease
  ends).
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.rig_nodes import API_NODE, Rig, RigError
from fleetctl.client import FleetctlError
from fleetctl.models import UnitState

POLL_INTERVAL = 0.25
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
"""Seconds between two looks at the API while a step waits."""
ERROR_LINE = re.compile(r"error|fail|timed out|warning|cannot|unable", re.IGNORECASE)
MAX_ERRORS = 20
"""Error lines kept per step; the count of the others is added."""


@dataclass
class Step:
    """One measured step; `to_json` is its entry in the benchmark's line."""

    seconds: float
    running: int
    timed_out: bool = False
    exit_code: int | None = None
    errors: list[str] = field(default_factory=list)
    detail: dict[str, object] = field(default_factory=dict)
    load_1m: float = field(default_factory=lambda: round(os.getloadavg()[0], 2))
    """The load average when the step ended: above the cores, other work shared the machine."""

    def to_json(self) -> dict[str, object]:
        return {
            "seconds": self.seconds,
            "running": self.running,
            "timed_out": self.timed_out,
            "exit_code": self.exit_code,
            "errors": self.errors,
            **self.detail,
            "load_1m": self.load_1m,
        }


def machine_cpu_seconds() -> float:
    """CPU seconds the machine has spent since boot, all cores, idle and I/O wait left out."""
    with open("/proc/stat", encoding="ascii") as stat:
        fields = stat.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, *_ = map(int, fields)
    return (user + nice + system + irq + softirq) / CLOCK_TICKS


@dataclass(frozen=True)
class Progress:
    """One look at the cluster: whether the step's condition holds, and what was seen."""

    done: bool
    running: int
    seen: str


@dataclass(frozen=True)
class FleetctlRun:
    exit_code: int | None  # None: still running at the deadline, and killed
    seconds: float
    errors: list[str]


def error_lines(stderr: str) -> list[str]:
    """The lines of fleetctl's stderr that report a problem, at most `MAX_ERRORS` of them."""
    lines = [line.strip() for line in stderr.splitlines() if ERROR_LINE.search(line)]
    if len(lines) > MAX_ERRORS:
        lines = [*lines[:MAX_ERRORS], f"... and {len(lines) - MAX_ERRORS} more error lines"]
    return lines


def running_units(
    states: Sequence[UnitState], names: Collection[str], elsewhere_than: str = ""
) -> set[str]:
    """The units of `names` that systemd runs on some machine other than `elsewhere_than`."""
    return {
        state.name
        for state in states
        if state.name in names
        and state.machine_id != elsewhere_than
        and (state.load_state, state.active_state, state.sub_state)
        == ("loaded", "active", "running")
    }


@dataclass
class Bench:
    """What every step needs: the rig, fleetctl's working directory, the per-step deadline."""

    rig: Rig
    workdir: Path  # holds the unit files fleetctl reads
    timeout: float
    fleetctl_path: Path
    machines: dict[str, str]  # node name -> machine id (read while every node runs)
    killed: set[str] = field(default_factory=set)  # nodes killed and not yet back
    _cpu_at_begin: float = 0.0

    def begin(self) -> float:
        """Start timing a step: the monotonic time now (and, for `finish`, the machine's CPU)."""
        self._cpu_at_begin = machine_cpu_seconds()
        return time.monotonic()

    def fleetctl(self, args: Sequence[str], deadline: float) -> FleetctlRun:
        """`fleetctl ARGS` against node1's API, killed if it outlives `deadline`."""
        env = dict(os.environ, FLEETCTL_ENDPOINT=self.rig.endpoint)
        started = time.monotonic()
        try:
            done = subprocess.run(
                [str(self.fleetctl_path), *args],
                cwd=self.workdir,
                env=env,
                capture_output=True,
                text=True,
                timeout=max(deadline - started, 0.1),
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            stderr = exc.stderr or b""
            text = stderr.decode(errors="replace") if isinstance(stderr, bytes) else stderr
            message = f"fleetctl {args[0]} still running at the deadline, killed"
            return FleetctlRun(None, time.monotonic() - started, [*error_lines(text), message])
        return FleetctlRun(done.returncode, time.monotonic() - started, error_lines(done.stderr))

    def wait(self, probe: Callable[[], Progress], deadline: float) -> Progress:
        """Look with `probe` until its condition holds or `deadline` passes; the last look."""
        last = Progress(False, 0, "nothing seen yet")
        while True:
            try:
                last = probe()
            except (RigError, FleetctlError) as exc:
                last = Progress(False, last.running, f"{last.seen}; then a look failed: {exc}")
            now = time.monotonic()
            if last.done or now >= deadline:
                return last
            time.sleep(min(POLL_INTERVAL, deadline - now))

    def finish(self, started: float, progress: Progress, run: FleetctlRun | None = None) -> Step:
        seconds = round(time.monotonic() - started, 2)
        step = Step(seconds, progress.running, timed_out=not progress.done)
        step.detail["cpu_s"] = round(machine_cpu_seconds() - self._cpu_at_begin, 2)
        if run is not None:
            step.exit_code = run.exit_code
            step.errors.extend(run.errors)
            step.detail["fleetctl_s"] = round(run.seconds, 2)
        if not progress.done:
            step.errors.append(f"timed out after {self.timeout:g} s: {progress.seen}")
        return step

    def all_running(self, names: Collection[str]) -> Progress:
        running = running_units(self.rig.states(), names)
        return Progress(len(running) == len(names), len(running), f"{len(running)} running")


def start(bench: Bench, names: Sequence[str], started_before: Collection[str] = ()) -> Step:
    """`fleetctl start NAMES` (blocking), until the API shows every one of them, and of
    `started_before`, running."""
    started = bench.begin()
    deadline = started + bench.timeout
    run = bench.fleetctl(["start", *names], deadline)
    wanted = {*names, *started_before}
    progress = bench.wait(lambda: bench.all_running(wanted), deadline)
    return bench.finish(started, progress, run)


def failover(
    bench: Bench, names: Collection[str], candidates: Sequence[str], agent_ttl: float
) -> tuple[Step, str]:
    """`docker kill` of the node among `candidates` that runs most of `names`, until all of
    its units among `names` run elsewhere. Returns the step and the killed node."""
    machines = bench.machines
    states = bench.rig.states()
    held = {
        node: running_units([s for s in states if s.machine_id == machines[node]], names)
        for node in candidates
    }
    victim = max(candidates, key=lambda node: (len(held[node]), node))
    victim_machine, moving = machines[victim], held[victim]
    marks: dict[str, float] = {}

    def probe() -> Progress:
        if "machine_gone_s" not in marks and victim_machine not in bench.rig.machines():
            marks["machine_gone_s"] = time.monotonic() - started
        now_states = bench.rig.states()
        moved = running_units(now_states, moving, elsewhere_than=victim_machine)
        if moved and "first_moved_s" not in marks:
            marks["first_moved_s"] = time.monotonic() - started
        everywhere = running_units(now_states, names, elsewhere_than=victim_machine)
        return Progress(
            len(moved) == len(moving), len(everywhere), f"{len(moved)} of {len(moving)} moved"
        )

    started = bench.begin()
    bench.rig.kill(victim)
    progress = bench.wait(probe, started + bench.timeout)
    step = bench.finish(started, progress)
    step.detail.update(
        node=victim,
        units=len(moving),
        agent_ttl=agent_ttl,
        after_ttl_s=round(step.seconds - agent_ttl, 2),
        **{mark: round(seconds, 2) for mark, seconds in sorted(marks.items())},
    )
    return step, victim


def rejoin(bench: Bench, node: str, names: Collection[str]) -> Step:
    """`docker start` of a killed node, until its container runs and its machine is registered
    again (its fleetd is up; docker's health status lags by up to its 30 s interval)."""
    machine = bench.machines[node]
    started = bench.begin()
    bench.rig.start(node)

    def probe() -> Progress:
        health = bench.rig.health(node)
        registered = machine in bench.rig.machines()
        running = len(running_units(bench.rig.states(), names))
        seen = f"container {health.status} {health.health or '-'}, registered: {registered}"
        return Progress(health.status == "running" and registered, running, seen)

    step = bench.finish(started, bench.wait(probe, started + bench.timeout))
    step.detail["node"] = node
    return step


def destroy(bench: Bench, names: Sequence[str]) -> Step:
    """`fleetctl destroy NAMES` (blocking), until the API shows none of them and no node's
    systemd has any of them loaded."""
    started = bench.begin()
    deadline = started + bench.timeout
    run = bench.fleetctl(["destroy", *names], deadline)
    progress = bench.wait(lambda: gone(bench, set(names)), deadline)
    return bench.finish(started, progress, run)


def gone(bench: Bench, names: Collection[str]) -> Progress:
    """Whether `names` are out of the registry, the unit states and every node's systemd."""
    states = bench.rig.states()
    running = len(running_units(states, names))
    in_registry = sum(1 for name in bench.rig.unit_names() if name in names)
    reported = len({state.name for state in states if state.name in names})
    if in_registry or reported:
        seen = f"{in_registry} in the registry, {reported} with a state, {running} running"
        return Progress(False, running, seen)
    patterns = sorted({name.partition("@")[0] + "@*" if "@" in name else name for name in names})
    loaded = {
        node: len(set(bench.rig.systemd_units(node, patterns)) & set(names))
        for node in live_nodes(bench)
    }
    return Progress(not any(loaded.values()), running, f"loaded in systemd: {loaded}")


def live_nodes(bench: Bench) -> list[str]:
    """The nodes whose containers run (node1 first)."""
    nodes = [node for node in bench.rig.containers() if bench.rig.health(node).status == "running"]
    return sorted(nodes, key=lambda node: (node != API_NODE, node))
