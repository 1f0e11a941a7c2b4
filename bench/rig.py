"""The real path, timed from the user's side: fleetctl on this host -> node1's API -> etcd ->
engine -> agents -> systemd, on the three-node rig of docker-compose.yml.

Brings the rig up with `scripts/rig-up` when node1's API does not answer (and takes it down with
`scripts/rig-down` afterwards, unless `--keep`); a rig that was up stays up, without the
benchmark's units. Then, each step with the project's own `fleetctl` on the host
(`FLEETCTL_ENDPOINT=unix://<checkout>/rig/run/api/fleet.sock`):

1. `start_one`: `fleetctl start bench-one.service`, a new `sleep infinity` service (blocking);
2. `start_100`: `fleetctl start s@1.service ... s@100.service` (blocking), instances of the
   template `s@.service` (a `sleep infinity` service, submitted before the step);
3. `start_rest`: `fleetctl start s@101.service ... s@1100.service`, until the API shows every
   one of the 1,100 loaded, active and running;
4. `failover`: `docker kill` of the node holding most of the benchmark's units (node2 or
   node3: node1 serves the API), about a third, until each of its units runs on another
   node, also given as `after_ttl_s` (minus the rig's `agent_ttl`); then `rejoin`: `docker
   start` of that node, until it runs and its machine is registered again;
5. `destroy`: `fleetctl destroy` of the 1,100 `s@` units, until none is in the registry or
   the unit states and no node's systemd has an `s@*` unit loaded.

Then, for each n of `--failover-sizes`, `failover_<n>` and `rejoin_<n>`: about n units of the
template `failover@.service` (`MachineMetadata=role=db`, so node2 and node3 share them) on the
killed node. `--skip-kill` leaves out every kill.

Each step records its seconds, the units running at its end, fleetctl's exit code, the error
lines of fleetctl's stderr, whether it reached its deadline (`--step-timeout`), and the load
average. The result is one JSON line on stdout, also written to `bench/results/rig-<UTC
time>.json`; progress goes to stderr. Exit status 1 when a step timed out or the run failed.

    PYTHONPATH=. .venv/bin/python -m bench.rig [--units 1100] [--skip-kill] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Collection, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from bench.rig_nodes import NODE_NAMES, Rig, RigError
from bench.rig_steps import Bench, Step, destroy, failover, rejoin, start
from fleetctl.client import FleetctlError

ROOT = Path(__file__).resolve().parent.parent
FLEETCTL = Path(sys.executable).parent / "fleetctl"
ONE = "bench-one.service"
TEMPLATE = "s@.service"
FAILOVER_TEMPLATE = "failover@.service"
SLEEP = "[Unit]\nDescription=bench.rig {what}\n\n[Service]\nExecStart=/bin/sleep infinity\n"
UNIT_FILES = {
    ONE: SLEEP.format(what="one unit"),
    TEMPLATE: SLEEP.format(what="%i"),
    FAILOVER_TEMPLATE: SLEEP.format(what="failover %i") + "\n[X-Fleet]\nMachineMetadata=role=db\n",
}
BENCH_UNIT = re.compile(r"^(bench-one|s@\d*|failover@\d*)\.service$")
"""The units this benchmark owns on the rig: a leftover of an interrupted run is destroyed."""
FIRST_BATCH = 100
KILLABLE = ("node2", "node3")
REGISTER_WITHIN = 60.0
"""Seconds for the three machines to be registered before the steps begin."""


def log(text: str) -> None:
    print(f"bench.rig: {text}", file=sys.stderr, flush=True)


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected seconds above 0, got {text!r}")
    return value


def sizes(text: str) -> list[int]:
    return [positive_int(part.strip()) for part in text.split(",") if part.strip()]


def machine() -> dict[str, object]:
    """The host the figures come from."""
    meminfo = Path("/proc/meminfo").read_text()
    kib = int(re.search(r"MemTotal:\s+(\d+)", meminfo).group(1))  # type: ignore[union-attr]
    release = Path("/etc/os-release").read_text()
    pretty = re.search(r'PRETTY_NAME="?([^"\n]*)', release)
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(kib / 1024**2, 1),
        "os": pretty.group(1) if pretty else "",
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def commit() -> str:
    """The checkout's commit (`-dirty` when tracked files changed), "" outside git."""
    try:
        done = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip()


def wait_for_machines(rig: Rig, within: float) -> None:
    deadline = time.monotonic() + within
    while (count := len(rig.machines())) < len(NODE_NAMES):
        if time.monotonic() >= deadline:
            raise RigError(f"{count} of {len(NODE_NAMES)} machines registered after {within:g} s")
        time.sleep(0.5)


def remove_bench_units(bench: Bench, within: float) -> int:
    """Destroy whatever units of the benchmark the registry holds, waiting up to `within`
    seconds until they are gone; how many there were."""
    leftovers = [name for name in bench.rig.unit_names() if BENCH_UNIT.match(name)]
    if leftovers:
        step = destroy(replace(bench, timeout=within), leftovers)
        if step.timed_out:
            raise RigError(f"could not remove the benchmark's units: {step.errors}")
    return len(leftovers)


def submit(bench: Bench, unit: str) -> None:
    run = bench.fleetctl(["submit", unit], time.monotonic() + bench.timeout)
    if run.exit_code != 0:
        raise RigError(f"fleetctl submit {unit} failed: {run.errors}")


def record(steps: dict[str, Step], name: str, step: Step) -> Step:
    steps[name] = step
    state = "TIMED OUT" if step.timed_out else "done"
    log(f"{name}: {state} in {step.seconds} s, {step.running} running, {step.detail}")
    return step


def failover_and_rejoin(
    bench: Bench, names: Collection[str], agent_ttl: float, steps: dict[str, Step], suffix: str
) -> None:
    step, victim = failover(bench, names, KILLABLE, agent_ttl)
    bench.killed.add(victim)
    record(steps, f"failover{suffix}", step)
    if not record(steps, f"rejoin{suffix}", rejoin(bench, victim, names)).timed_out:
        bench.killed.discard(victim)


def run_steps(
    bench: Bench, args: argparse.Namespace, agent_ttl: float, steps: dict[str, Step]
) -> None:
    """The steps in order, each recorded in `steps` as it ends."""
    names = [f"s@{n}.service" for n in range(1, args.units + 1)]
    first, rest = names[:FIRST_BATCH], names[FIRST_BATCH:]
    record(steps, "start_one", start(bench, [ONE])).detail["units"] = 1
    submit(bench, TEMPLATE)
    record(steps, "start_100", start(bench, first)).detail["units"] = len(first)
    if rest:
        record(steps, "start_rest", start(bench, rest, first)).detail["units"] = len(rest)
    if args.skip_kill:
        log("no failover (--skip-kill)")
    elif any(step.timed_out for step in steps.values()):
        log("no failover: the units did not all run")
    else:
        failover_and_rejoin(bench, {ONE, *names}, agent_ttl, steps, "")
    record(steps, "destroy", destroy(bench, names)).detail["units"] = len(names)
    if args.skip_kill or not args.failover_sizes or bench.killed:
        return
    submit(bench, FAILOVER_TEMPLATE)
    for size in args.failover_sizes:
        units = [f"failover@{n}.service" for n in range(1, (2 * size if size > 1 else 1) + 1)]
        setup = start(bench, units)
        if setup.timed_out:
            record(steps, f"failover_{size}", setup).detail["setup"] = "units did not all run"
        else:
            failover_and_rejoin(bench, set(units), agent_ttl, steps, f"_{size}")
            steps[f"failover_{size}"].detail["setup_s"] = setup.seconds
        cleanup = destroy(bench, units)
        if cleanup.timed_out:
            raise RigError(f"the failover units were not destroyed: {cleanup.errors}")


def measure(
    rig: Rig, args: argparse.Namespace, result: dict[str, object], steps: dict[str, Step]
) -> None:
    """The steps, on a rig that answers; afterwards a rig that stays up is as it was found."""
    wait_for_machines(rig, REGISTER_WITHIN)
    agent_ttl = result["agent_ttl"] = rig.agent_ttl()
    with tempfile.TemporaryDirectory(prefix="bench-rig-") as workdir:
        for name, text in UNIT_FILES.items():
            (Path(workdir) / name).write_text(text)
        bench = Bench(rig, Path(workdir), args.step_timeout, FLEETCTL, rig.machine_ids())
        try:
            result["leftovers_removed"] = remove_bench_units(bench, args.rig_timeout)
            run_steps(bench, args, agent_ttl, steps)
        finally:
            if args.keep or not result["rig_brought_up"]:
                restore(bench, args.rig_timeout)


def restore(bench: Bench, within: float) -> None:
    """The rig as it was found: every killed node started and registered, no benchmark units."""
    for node in sorted(bench.killed):
        log(f"starting {node} again")
        bench.rig.start(node)
    if bench.killed:
        wait_for_machines(bench.rig, within)
    remove_bench_units(bench, within)


def summary(result: dict[str, object], steps: dict[str, Step]) -> None:
    result["steps"] = {name: step.to_json() for name, step in steps.items()}
    errors = result.setdefault("errors", [])
    assert isinstance(errors, list)
    errors.extend(f"{name}: {line}" for name, step in steps.items() for line in step.errors)


def run(args: argparse.Namespace) -> dict[str, object]:
    project = os.environ.get("COMPOSE_PROJECT_NAME", "pyfleet")
    api_dir = Path(os.environ.get("PYFLEET_RIG_API_DIR", ROOT / "rig" / "run" / "api"))
    rig = Rig(ROOT, project, api_dir / "fleet.sock")
    result: dict[str, object] = {
        "benchmark": "rig",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit(),
        "machine": machine(),
        "load_1m_before": round(os.getloadavg()[0], 2),
        "units": args.units,
        "rig_brought_up": False,
        "errors": [],
    }
    steps: dict[str, Step] = {}
    try:
        if not rig.answers():
            log(f"node1's API does not answer on {rig.endpoint}: scripts/rig-up")
            started = time.monotonic()
            result["rig_brought_up"] = True
            rig.up(args.rig_timeout)
            result["rig_up_s"] = round(time.monotonic() - started, 1)
        measure(rig, args, result, steps)
    except (RigError, FleetctlError) as exc:
        result["error"] = str(exc)
        log(f"stopped: {exc}")
    finally:
        summary(result, steps)
        result["load_1m_after"] = round(os.getloadavg()[0], 2)
        if result["rig_brought_up"] and not args.keep:
            log("scripts/rig-down")
            try:
                rig.down(args.rig_timeout)
            except RigError as exc:
                result["error"] = f"{result.get('error', '')}; rig-down: {exc}".lstrip("; ")
        rig.close()
    return result


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--units",
        type=positive_int,
        default=1100,
        help="s@ units in all: the first 100, then the rest (default 1100)",
    )
    parser.add_argument("--skip-kill", action="store_true", help="no failover steps")
    parser.add_argument(
        "--keep", action="store_true", help="leave the rig up even when this run brought it up"
    )
    parser.add_argument(
        "--failover-sizes",
        type=sizes,
        default=[100, 1],
        metavar="N,N",
        help="extra failovers with about N units on the killed node (100,1)",
    )
    parser.add_argument(
        "--step-timeout",
        type=positive_seconds,
        default=900.0,
        help="deadline of each step in seconds (900)",
    )
    parser.add_argument(
        "--rig-timeout",
        type=positive_seconds,
        default=900.0,
        help="deadline of scripts/rig-up and rig-down in seconds (900)",
    )
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    result = run(args)
    line = json.dumps(result)
    out = ROOT / "bench" / "results" / f"rig-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(line + "\n")
    print(line)
    log(f"written to {out.relative_to(ROOT)}")
    steps = result.get("steps")
    timed_out = isinstance(steps, dict) and any(s["timed_out"] for s in steps.values())
    sys.exit(1 if "error" in result or timed_out else 0)


if __name__ == "__main__":
    main()
