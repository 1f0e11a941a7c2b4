"""Planner scale: how fast and how big the engine's plan is at 100,000 units on 10,000 machines.

Builds a cluster snapshot in memory (the planner is pure, so no etcd is needed here), then times:

* `initial`: placing every unit on an empty cluster (the engine's first pass after a cold start);
* `steady`: planning again once everything is placed (the cost of a safety-net pass);
* `failover`: planning after 1% of the machines went away (their units move).
* `delta_*`: the same through the incremental planner the engine uses after its first plan
  (`plan_engine_delta` on the board kept from a full plan): one new unit, one unit destroyed, and
  the failover above. Each is checked against the full planner's tasks.

Memory is the traced peak (tracemalloc, in a second run that is not timed) of building the
snapshot's units and machines plus the initial plan; `rss_mib` is the peak resident set.
Results print as JSON and are written to bench/results/plan_scale.json.

The unit mix follows what fleet clusters run: mostly plain services, some with metadata, some
conflict groups (templates that spread, `Conflicts=web@*.service`), `MachineOf` sidekicks, and a few
global units.

    .venv/bin/python -m bench.plan_scale --units 100000 --machines 10000
"""

from __future__ import annotations

import argparse
import json
import resource
import time
import tracemalloc
from dataclasses import replace
from pathlib import Path

from fleetd.core.engine_delta import Changes, PlanState, plan_engine_delta
from fleetd.core.engine_plan import plan_engine, plan_engine_full
from fleetd.core.engine_tasks import Schedule, apply_engine_tasks
from fleetd.core.model import ClusterSnapshot, Machine, Unit
from fleetd.core.requirements import Requirements
from fleetd.core.states import JobState

ROLES = ("web", "db", "cache", "batch")


def build(units: int, machines: int) -> ClusterSnapshot:
    """A cluster of `machines` machines and `units` units in a realistic mix."""
    machine_map = {
        f"{i:032x}": Machine(f"{i:032x}", {"role": ROLES[i % len(ROLES)], "rack": f"r{i % 50}"})
        for i in range(machines)
    }
    plain = Requirements()
    unit_map: dict[str, Unit] = {}
    for i in range(units):
        kind = i % 20
        if kind < 12:
            name, req = f"svc-{i}.service", plain
        elif kind < 15:
            role = ROLES[i % len(ROLES)]
            name = f"{role}-{i}.service"
            req = Requirements(metadata=(("role", frozenset({role})),))
        elif kind < 18:
            group = i % 500
            name = f"spread{group}@{i}.service"
            req = Requirements(conflicts=(f"spread{group}@*.service",))
        else:
            name = f"sidekick-{i}.service"
            req = Requirements(machine_of=(f"svc-{i - kind}.service",))
        unit_map[name] = Unit(name, f"{i:040x}", JobState.LAUNCHED, req)
    for g in range(5):
        name = f"global-{g}.service"
        meta = (("role", frozenset({ROLES[g % len(ROLES)]})),) if g % 2 else ()
        unit_map[name] = Unit(
            name, f"{g:040x}", JobState.LAUNCHED, Requirements(is_global=True, metadata=meta)
        )
    return ClusterSnapshot(units=unit_map, machines=machine_map)


def timed(snapshot: ClusterSnapshot) -> tuple[float, list[object]]:
    started = time.perf_counter()
    tasks = plan_engine(snapshot)
    return time.perf_counter() - started, list(tasks)


def timed_deltas(
    settled: ClusterSnapshot, shrunk: ClusterSnapshot, gone: set[str], failover: list[object]
) -> dict[str, float | int]:
    """The incremental planner on the settled cluster: one unit added, one destroyed, failover.

    Each starts from a fresh board kept after a full plan, as the engine keeps it.
    """

    def kept() -> PlanState:
        tasks, board = plan_engine_full(settled)
        assert not tasks, "the settled cluster still had work"
        return PlanState.after(settled, board, tasks)

    new = Unit("new.service", "f" * 40, JobState.LAUNCHED, Requirements())
    added = replace(settled, units={**settled.units, new.name: new})
    victim = next(iter(settled.units))
    removed = replace(settled, units={k: v for k, v in settled.units.items() if k != victim})
    cases = {
        "add_one": (added, Changes(units=frozenset({new.name}))),
        "destroy_one": (removed, Changes(units=frozenset({victim}))),
        "failover": (shrunk, Changes(machines=frozenset(gone))),
    }
    result: dict[str, float | int] = {}
    for label, (snapshot, changes) in cases.items():
        state = kept()
        started = time.perf_counter()
        tasks = plan_engine_delta(snapshot, state, changes)
        elapsed = time.perf_counter() - started
        assert tasks is not None, f"{label}: the incremental planner fell back"
        expected = failover if label == "failover" else plan_engine(snapshot)
        assert tasks == expected, f"{label}: the incremental plan differs from the full plan"
        result[f"delta_{label}_ms"] = round(elapsed * 1000, 2)
        result[f"delta_{label}_tasks"] = len(tasks)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=100_000)
    parser.add_argument("--machines", type=int, default=10_000)
    args = parser.parse_args()

    snapshot = build(args.units, args.machines)
    initial_s, tasks = timed(snapshot)
    tracemalloc.start()  # a second, traced run: tracing slows it, so it is not the one timed
    traced = build(args.units, args.machines)
    built = tracemalloc.get_traced_memory()[0]
    plan_engine(traced)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del traced
    placed = sum(isinstance(t, Schedule) for t in tasks)
    after = apply_engine_tasks(snapshot, tasks)  # type: ignore[arg-type]
    steady_s, steady_tasks = timed(after)
    gone = set(list(after.machines)[: max(1, args.machines // 100)])
    shrunk = replace(after, machines={m: v for m, v in after.machines.items() if m not in gone})
    failover_s, failover_tasks = timed(shrunk)
    delta = timed_deltas(after, shrunk, gone, failover_tasks)
    result = {
        "units": len(snapshot.units),
        "machines": args.machines,
        "placements_written": placed,
        "initial_plan_s": round(initial_s, 3),
        "placements_per_s": round(placed / initial_s),
        "steady_plan_s": round(steady_s, 3),
        "steady_tasks": len(steady_tasks),
        "failover_machines_lost": len(gone),
        "failover_plan_s": round(failover_s, 3),
        "failover_tasks": len(failover_tasks),
        **delta,
        "snapshot_mib": round(built / 2**20, 1),
        "peak_traced_mib": round(peak / 2**20, 1),
        "rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    out = Path(__file__).parent / "results" / "plan_scale.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
