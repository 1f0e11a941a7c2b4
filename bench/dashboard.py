"""The dashboard's load time with many units, in a real browser.

Starts an etcd (data on tmpfs), writes `--units` units straight into it, each placed on one of
`--machines` machines with a published `active`/`running` state (as the engine and agents would
leave them), starts a `fleetd` process serving its API on TCP with a token (no engine, no agent),
then opens `/ui#token=...` in headless Chromium (Debian's, driven by Playwright) `--loads` times.
For each load, milliseconds from the start of navigation until:

* `snapshot_asked_ms`, `snapshot_first_byte_ms`, `snapshot_ms`: the `/fleet/v1/snapshot`
  request sent, its first byte, all of it in (Resource Timing);
* `rows_ms`: the first unit rows are painted (the first animation frame after they exist);
* `scrolled_ms`: the same after a jump to the last unit (the list is virtual);

and the snapshot's size. The first load builds the snapshot; fleetd keeps it for the next ones
until the view changes (nothing changes here). Medians over the loads, and the load average
(the machine may be shared). Prints one JSON line and writes it to `bench/results/dashboard.json`.

    PYTHONPATH=. .venv/bin/python -m bench.dashboard --units 10000 --machines 50 --loads 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import async_playwright

from bench.api_writes import PREFIX, wait_ready
from devtools.etcd_server import EtcdServer, free_port
from fleetd.core.model import Machine, Placement
from fleetd.core.states import JobState
from fleetd.core.unitfile import parse_unit
from fleetd.registry.client import EtcdClient, Put
from fleetd.registry.codec import (
    UnitRecord,
    UnitStateRecord,
    encode_machine,
    encode_placement,
    encode_state,
    encode_unit,
)
from fleetd.registry.keys import Keys

TOKEN = "bench-dashboard-token"
CHROMIUM = "/usr/bin/chromium"

ROWS_PAINTED = """() => new Promise((resolve) => {
  const check = () => document.querySelector('.unit-row')
    ? requestAnimationFrame(() => resolve(performance.now()))
    : requestAnimationFrame(check);
  check();
})"""
SCROLLED = """() => new Promise((resolve) => {
  const started = performance.now();
  const scroller = document.getElementById('scroller');
  scroller.scrollTop = scroller.scrollHeight;
  const last = [...document.querySelectorAll('.unit-row')].at(-1)?.dataset.unit;
  const check = () => {
    const now = [...document.querySelectorAll('.unit-row')].at(-1)?.dataset.unit;
    now !== last ? requestAnimationFrame(() => resolve(performance.now() - started))
                 : requestAnimationFrame(check);
  };
  check();
})"""


async def seed(server: EtcdServer, units: int, machines: int) -> None:
    client = await EtcdClient.connect([server.endpoint])
    keys = Keys(PREFIX)
    ids = [f"{m:032x}" for m in range(1, machines + 1)]
    try:
        for index, machine in enumerate(ids):
            role = "web" if index % 2 else "db"
            found = Machine(machine, {"role": role}, f"10.0.0.{index + 1}")
            await client.put(keys.machine(machine), encode_machine(found, "b"))
        for first in range(0, units, 40):  # 3 keys a unit: 120 operations a transaction
            operations = []
            for n in range(first, min(units, first + 40)):
                name = f"app{n:05d}.service"
                unit = parse_unit(f"[Unit]\nDescription={name}\n[Service]\nExecStart=/bin/true\n")
                machine = ids[n % machines]
                record = UnitRecord(name, unit.options, unit.hash, JobState.LAUNCHED)
                placement = Placement(name, machine, unit.hash, JobState.LAUNCHED)
                state = UnitStateRecord("loaded", "active", "running", unit.hash, 1.7e9)
                operations += [
                    Put(keys.unit(name), encode_unit(record)),
                    Put(keys.placement(machine, name), encode_placement(placement)),
                    Put(keys.state(machine, name), encode_state(state)),
                ]
            await client.txn([], operations)
    finally:
        await client.close()


@contextlib.contextmanager
def fleetd_tcp(server: EtcdServer, workdir: Path) -> Iterator[int]:
    """A fleetd process serving the API on 127.0.0.1 with a token: its port."""
    (workdir / "machine-id").write_text("d" * 32 + "\n")
    (workdir / "token").write_text(TOKEN)
    (workdir / "token").chmod(0o600)
    port = free_port()
    command = [
        sys.executable, "-m", "fleetd.cli",
        f"--etcd-servers={server.endpoint}", f"--etcd-key-prefix={PREFIX}",
        f"--listen=127.0.0.1:{port}", f"--api-token-file={workdir / 'token'}",
        f"--machine-id-file={workdir / 'machine-id'}", "--disable-agent", "--disable-engine",
    ]  # fmt: skip
    log = (workdir / "fleetd.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield port
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    server = EtcdServer()
    server.start()
    workdir = Path(tempfile.mkdtemp(prefix="pyfleet-bench-ui-"))
    try:
        await seed(server, args.units, args.machines)
        with fleetd_tcp(server, workdir) as port:
            base = f"http://127.0.0.1:{port}"
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as http:
                await wait_ready(http)
                result = await load(base, args)  # the first load builds the snapshot
                size = len((await http.get("/fleet/v1/snapshot")).content)
            return {**result, "snapshot_bytes": size}
    finally:
        server.cleanup()


async def load(base: str, args: argparse.Namespace) -> dict[str, Any]:
    loads: list[dict[str, float]] = []
    load_before = os.getloadavg()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            for _ in range(args.loads):
                page = await browser.new_page(viewport={"width": 1400, "height": 900})
                await page.goto(f"{base}/ui#token={TOKEN}")
                rows = await page.evaluate(ROWS_PAINTED)
                timing = await page.evaluate(
                    "(({requestStart, responseStart, responseEnd}) =>"
                    " ({requestStart, responseStart, responseEnd}))("
                    "performance.getEntriesByType('resource')"
                    ".find(e => e.name.endsWith('/fleet/v1/snapshot')))"
                )
                count = await page.text_content("#unit-count")
                scrolled = await page.evaluate(SCROLLED)
                loads.append(
                    {
                        "snapshot_asked_ms": timing["requestStart"],
                        "snapshot_first_byte_ms": timing["responseStart"],
                        "snapshot_ms": timing["responseEnd"],
                        "rows_ms": rows,
                        "scrolled_ms": scrolled,
                    }
                )
                assert count == str(args.units), f"the page counted {count} units"
                await page.close()
        finally:
            await browser.close()
    return {
        "units": args.units,
        "machines": args.machines,
        "loads": args.loads,
        **{k: round(statistics.median(x[k] for x in loads), 1) for k in loads[0]},
        "each": [{k: round(v, 1) for k, v in x.items()} for x in loads],
        "load_average_before": [round(x, 1) for x in load_before],
        "load_average_after": [round(x, 1) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=10000)
    parser.add_argument("--machines", type=int, default=50)
    parser.add_argument("--loads", type=int, default=3, help="page loads (median reported)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "dashboard.json"))
    args = parser.parse_args()
    result = asyncio.run(run(args))
    out = Path(args.out)
    out.parent.mkdir(exist_ok=True)
    line = json.dumps(result, separators=(",", ":"))
    out.write_text(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
