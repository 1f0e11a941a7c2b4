"""fleetctl in bulk on the real client/API path: `submit`, `start --no-block` and `destroy` of
many units, each a fresh `fleetctl` process against a real `fleetd` on a real etcd.

Starts an etcd (data on tmpfs) and one `fleetd` process with its API on a unix socket and its
engine, but no agent (`--disable-agent`) and no machine: nothing runs the units, so what is
timed is fleetctl, the API and etcd. For each `--units` count N it writes a template
`s@.service` into a scratch directory and times, as a user would type them:

    fleetctl submit s@1.service ... s@N.service
    fleetctl start --no-block s@1.service ... s@N.service
    fleetctl destroy s@1.service ... s@N.service

Each step must exit 0 and print exactly fleet's lines, one per unit, in argument order
(`Unit X inactive`, `Triggered unit X start`; `Destroyed X` in name order, as fleet's
`destroy` lists them); a step that does not is counted
in `errors` with the reason. Each count uses its own unit names, so the steps of one count do
not see the units of another. `fleetctl version` is timed too: it is the interpreter's start-up,
which every step pays once. Each step also reports the CPU time the fleetctl process used
(`fleetctl_cpu_seconds`): fleetctl, fleetd and etcd share the machine's cores.

`--fleetctl-source DIR` runs the `fleetctl` package found in DIR (a checkout of another
commit) instead of this one, so a before/after comparison uses the same fleetd and etcd.
`--requests` runs each step with `--debug` and reports how many HTTP requests it made
(`requests`, from the debug log; the timings then include the logging).

    PYTHONPATH=. .venv/bin/python -m bench.fleetctl_bulk --units 100 1000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from devtools.etcd_server import EtcdServer

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = "[Unit]\nDescription=bench %i\n\n[Service]\nExecStart=/bin/sleep infinity\n"
READY_WITHIN = 30.0
STEP_TIMEOUT = 900.0
FLEETCTL = "import sys; from fleetctl.app import main; sys.exit(main())"


def _env(source: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEETCTL_", "FLEET_"))}
    env["PYTHONPATH"] = str(source)
    return env


def _wait_ready(socket_path: str, fleetd: subprocess.Popen[bytes], log: Path) -> None:
    """Until the API answers with its view ready, or fail with fleetd's log tail."""
    deadline = time.monotonic() + READY_WITHIN
    transport = httpx.HTTPTransport(uds=socket_path)
    with httpx.Client(transport=transport, base_url="http://fleet", timeout=2.0) as http:
        while time.monotonic() < deadline:
            if fleetd.poll() is not None:
                break
            try:
                health = http.get("/healthz")
                if health.status_code == 200 and health.json().get("viewReady"):
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    tail = log.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"fleetd did not become ready within {READY_WITHIN:g}s:\n{tail}")


def _fleetctl(
    source: Path, endpoint: str, workdir: Path, *args: str
) -> tuple[float, float, int, str, str]:
    """Wall seconds, CPU seconds (user + system), exit code, stdout, stderr of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", FLEETCTL, "--endpoint", endpoint, *args],
        cwd=workdir,
        env=_env(source),
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT,
        check=False,
    )
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return seconds, cpu, proc.returncode, proc.stdout, proc.stderr


def _step(
    source: Path,
    endpoint: str,
    workdir: Path,
    args: list[str],
    *,
    expected: list[str],
    debug: bool,
) -> dict[str, object]:
    argv = ["--debug", *args] if debug else args
    seconds, cpu, code, out, err = _fleetctl(source, endpoint, workdir, *argv)
    step: dict[str, object] = {"seconds": round(seconds, 3), "fleetctl_cpu_seconds": round(cpu, 3)}
    if debug:
        logged = [line for line in err.splitlines() if " DEBUG " in line]
        step["requests"] = sum(1 for line in logged if " -> " in line)
        err = "\n".join(line for line in err.splitlines() if " DEBUG " not in line)
    problems = []
    if code != 0:
        problems.append(f"exit {code}")
    lines = out.splitlines()
    if lines != expected:
        wrong = next(
            (i for i, (a, b) in enumerate(zip(lines, expected, strict=False)) if a != b), None
        )
        problems.append(
            f"{len(lines)} stdout lines, {len(expected)} expected"
            + (
                f"; line {wrong + 1} is {lines[wrong]!r}, not {expected[wrong]!r}"
                if wrong is not None
                else ""
            )
        )
    if err.strip():
        problems.append(f"stderr: {err.strip()[:300]}")
    if problems:
        step["errors"] = problems
    return step


def run(counts: list[int], source: Path, debug: bool) -> dict[str, object]:
    scratch = Path(tempfile.mkdtemp(prefix="pyfleet-bulk-", dir="/tmp"))
    server = EtcdServer()
    server.start()
    fleetd = None
    try:
        workdir = scratch / "units"
        workdir.mkdir()
        (workdir / "s@.service").write_text(TEMPLATE)
        machine_id = scratch / "machine-id"
        machine_id.write_text(uuid.uuid4().hex + "\n")
        socket_path = str(scratch / "fleet.sock")
        endpoint = f"unix://{socket_path}"
        log = scratch / "fleetd.log"
        with log.open("wb") as log_handle:
            fleetd = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "fleetd.cli",
                    "--etcd-servers",
                    server.endpoint,
                    "--etcd-key-prefix",
                    "/bench-fleetctl/",
                    "--listen",
                    socket_path,
                    "--disable-agent",
                    "--machine-id-file",
                    str(machine_id),
                ],
                env=_env(ROOT),
                stdout=log_handle,
                stderr=subprocess.STDOUT,
            )
        _wait_ready(socket_path, fleetd, log)
        startup, _, code, _, _ = _fleetctl(source, endpoint, workdir, "version")
        result: dict[str, object] = {
            "benchmark": "fleetctl_bulk",
            "fleetctl_source": str(source),
            "commit": _commit(source),
            "cpus": os.cpu_count(),
            "fleetctl_version_seconds": round(startup, 3),
            "load_average": os.getloadavg()[0],
            "debug": debug,
        }
        errors = 0 if code == 0 else 1
        first = 1
        for count in counts:
            names = [f"s@{i}.service" for i in range(first, first + count)]
            first += count
            steps = {
                "submit": _step(
                    source,
                    endpoint,
                    workdir,
                    ["submit", *names],
                    expected=[f"Unit {name} inactive" for name in names],
                    debug=debug,
                ),
                "start_no_block": _step(
                    source,
                    endpoint,
                    workdir,
                    ["start", "--no-block", *names],
                    expected=[f"Triggered unit {name} start" for name in names],
                    debug=debug,
                ),
                "destroy": _step(
                    source,
                    endpoint,
                    workdir,
                    ["destroy", *names],
                    expected=[f"Destroyed {name}" for name in sorted(names)],
                    debug=debug,
                ),
            }
            errors += sum(1 for step in steps.values() if "errors" in step)
            result[str(count)] = steps
        result["errors"] = errors
        return result
    finally:
        if fleetd is not None:
            fleetd.terminate()
            try:
                fleetd.wait(timeout=15)
            except subprocess.TimeoutExpired:
                fleetd.kill()
                fleetd.wait()
        server.cleanup()
        shutil.rmtree(scratch, ignore_errors=True)


def _commit(source: Path) -> str:
    proc = subprocess.run(
        ["git", "-C", str(source), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.stdout.strip() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, nargs="+", default=[100, 1000])
    parser.add_argument(
        "--fleetctl-source",
        type=Path,
        default=ROOT,
        help="the directory holding the fleetctl package to time (default: this checkout)",
    )
    parser.add_argument("--label", default="", help="added to the result file's name")
    parser.add_argument(
        "--requests", action="store_true", help="count each step's HTTP requests (--debug)"
    )
    args = parser.parse_args()
    result = run(args.units, args.fleetctl_source.resolve(), args.requests)
    line = json.dumps(result)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    name = f"fleetctl_bulk-{args.label + '-' if args.label else ''}{stamp}.json"
    out = ROOT / "bench" / "results" / name
    out.parent.mkdir(exist_ok=True)
    out.write_text(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
