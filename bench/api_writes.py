"""API writes on the real path: fleetd's API served by uvicorn, a real etcd, HTTP over a socket.

Starts an etcd (data on tmpfs) and a `fleetd` process serving only its API on a unix socket
(`--disable-agent`, and `--disable-engine` unless `--engine`), then, over HTTP from this process:

* `single`: `--single` units one request at a time: create (`PUT` with options, 201), set the
  desired state (`PUT`, 204), destroy (`DELETE`, 204); latency p50/p99 of each kind;
* `burst`: `--burst` creates sent at once; wall time until the last answer, latency p50/p99;
* `burst_under_reads`: the same with `--readers` clients listing `GET /units`, every page (over
  `--preload` units written straight to etcd) in a loop meanwhile;
* for each phase, the statuses answered, etcd's gRPC calls per request by method (from etcd's
  own `/metrics`: what one write costs in round trips), and fleetd's CPU time per request (user
  plus system, from `/proc`: steadier than latency on a shared machine).

Prints one JSON line and writes it to `bench/results/api_writes.json`.

    PYTHONPATH=. .venv/bin/python -m bench.api_writes --single 200 --burst 100
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from devtools.etcd_server import EtcdServer
from fleetd.core.states import JobState
from fleetd.core.unitfile import parse_unit
from fleetd.registry.client import EtcdClient
from fleetd.registry.codec import encode_unit
from fleetd.registry.keys import Keys
from fleetd.registry.units import checked_unit_record

PREFIX = "/bench/"
UNITS = "/fleet/v1/units"
START_TIMEOUT = 30.0
_GRPC_CALLS = re.compile(
    r'grpc_server_handled_total\{grpc_code="[^"]*",grpc_method="(\w+)",'
    r'grpc_service="etcdserverpb\.KV",grpc_type="unary"\} (\d+)'
)


def unit_body(name: str, desired: str = "launched") -> dict[str, Any]:
    return {
        "desiredState": desired,
        "options": [
            {"section": "Unit", "name": "Description", "value": f"bench {name}"},
            {"section": "Service", "name": "ExecStart", "value": "/bin/sleep infinity"},
        ],
    }


def etcd_calls(server: EtcdServer) -> Counter[str]:
    """etcd's count of finished KV calls by method (Range, Txn, Put, DeleteRange)."""
    with urllib.request.urlopen(f"{server.endpoint}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    calls: Counter[str] = Counter()
    for method, count in _GRPC_CALLS.findall(text):
        calls[method] += int(count)
    return calls


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def per_request(before: Counter[str], after: Counter[str], requests: int) -> dict[str, float]:
    return {
        method: round((after[method] - before[method]) / requests, 2)
        for method in sorted(after)
        if after[method] > before[method]
    }


def summary(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p99_ms": round(ordered[max(int(len(ordered) * 0.99) - 1, 0)] * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
    }


@contextlib.contextmanager
def fleetd_api(
    server: EtcdServer, workdir: Path, *, engine: bool, request_timeout: float
) -> Iterator[tuple[str, int]]:
    """A fleetd process serving the API on a unix socket in `workdir`: (socket path, pid)."""
    machine_id = workdir / "machine-id"
    machine_id.write_text("b" * 32 + "\n")
    socket_path = str(workdir / "fleet.sock")
    command = [
        sys.executable,
        "-m",
        "fleetd.cli",
        f"--etcd-servers={server.endpoint}",
        f"--etcd-key-prefix={PREFIX}",
        f"--listen={socket_path}",
        f"--machine-id-file={machine_id}",
        f"--etcd-request-timeout={request_timeout}",
        "--disable-agent",
        f"--disable-engine={'false' if engine else 'true'}",
    ]
    log = (workdir / "fleetd.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield socket_path, process.pid
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


async def wait_ready(http: httpx.AsyncClient) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            reply = await http.get("/healthz")
            if reply.status_code == 200 and reply.json().get("viewReady"):
                return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"fleetd's API was not ready within {START_TIMEOUT}s")


async def timed(
    statuses: Counter[int], latencies: list[float], call: Awaitable[httpx.Response]
) -> None:
    started = time.perf_counter()
    reply = await call
    latencies.append(time.perf_counter() - started)
    statuses[reply.status_code] += 1


async def phase(
    server: EtcdServer,
    pid: int,
    requests: int,
    run: Callable[[Counter[int], list[float]], Awaitable[None]],
) -> dict[str, Any]:
    before = etcd_calls(server)
    cpu = cpu_seconds(pid)
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    started = time.perf_counter()
    await run(statuses, latencies)
    wall = time.perf_counter() - started
    cpu = cpu_seconds(pid) - cpu
    return {
        "requests": requests,
        "wall_s": round(wall, 3),
        **summary(latencies),
        "statuses": {str(code): n for code, n in sorted(statuses.items())},
        "etcd_calls_per_request": per_request(before, etcd_calls(server), requests),
        "fleetd_cpu_ms_per_request": round(cpu * 1000 / requests, 2),
    }


async def preload(server: EtcdServer, count: int) -> None:
    """`count` units written straight into etcd, for the readers to list."""
    client = await EtcdClient.connect([server.endpoint])
    keys = Keys(PREFIX)
    try:
        for first in range(0, count, 100):
            writes = []
            for n in range(first, min(count, first + 100)):
                name = f"pre{n:06d}.service"
                unit = parse_unit(f"[Unit]\nDescription={name}\n[Service]\nExecStart=/bin/true\n")
                record = checked_unit_record(name, unit, JobState.INACTIVE)
                writes.append(client.put(keys.unit(name), encode_unit(record)))
            await asyncio.gather(*writes)
    finally:
        await client.close()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    server = EtcdServer()
    server.start()
    workdir = Path(tempfile.mkdtemp(prefix="pyfleet-bench-api-"))
    try:
        await preload(server, args.preload)
        with fleetd_api(
            server, workdir, engine=args.engine, request_timeout=args.request_timeout
        ) as (socket_path, pid):
            transport = httpx.AsyncHTTPTransport(uds=socket_path)
            limits = httpx.Limits(max_connections=args.burst + args.readers + 10)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://fleet", timeout=60, limits=limits
            ) as http:
                await wait_ready(http)
                return await measure(server, pid, http, args)
    finally:
        server.cleanup()


async def measure(
    server: EtcdServer, pid: int, http: httpx.AsyncClient, args: argparse.Namespace
) -> dict[str, Any]:
    names = [f"s{n:05d}.service" for n in range(args.single)]

    async def creates(statuses: Counter[int], latencies: list[float]) -> None:
        for name in names:
            await timed(statuses, latencies, http.put(f"{UNITS}/{name}", json=unit_body(name)))

    async def updates(statuses: Counter[int], latencies: list[float]) -> None:
        for name in names:
            body = {"desiredState": "loaded"}
            await timed(statuses, latencies, http.put(f"{UNITS}/{name}", json=body))

    async def deletes(statuses: Counter[int], latencies: list[float]) -> None:
        for name in names:
            await timed(statuses, latencies, http.delete(f"{UNITS}/{name}"))

    def burst(tag: str) -> Callable[[Counter[int], list[float]], Awaitable[None]]:
        async def send(statuses: Counter[int], latencies: list[float]) -> None:
            batch = [f"{tag}{n:05d}.service" for n in range(args.burst)]
            puts = [http.put(f"{UNITS}/{n}", json=unit_body(n)) for n in batch]
            await asyncio.gather(*(timed(statuses, latencies, put) for put in puts))

        return send

    result: dict[str, Any] = {
        "engine": args.engine,
        "etcd_request_timeout": args.request_timeout,
        "preloaded_units": args.preload,
        "create": await phase(server, pid, len(names), creates),
        "update": await phase(server, pid, len(names), updates),
        "delete": await phase(server, pid, len(names), deletes),
        "burst": await phase(server, pid, args.burst, burst("b")),
    }
    stop, reading = asyncio.Event(), asyncio.Event()
    reads: Counter[int] = Counter()

    async def reader() -> None:  # lists every page, as `fleetctl list-units` does
        while not stop.is_set():
            token = ""
            while True:
                query = {"nextPageToken": token} if token else {}
                reply = await http.get(UNITS, params=query)
                reads[reply.status_code] += 1
                if sum(reads.values()) >= args.readers:
                    reading.set()
                token = reply.json().get("nextPageToken", "") if reply.status_code == 200 else ""
                if not token:
                    break

    readers = [asyncio.create_task(reader()) for _ in range(args.readers)]
    try:
        await reading.wait()  # the readers are under way
        result["burst_under_reads"] = await phase(server, pid, args.burst, burst("r"))
    finally:
        stop.set()
        await asyncio.gather(*readers)
    result["burst_under_reads"]["readers"] = args.readers
    result["burst_under_reads"]["list_statuses"] = {str(k): v for k, v in sorted(reads.items())}
    result["cpus"] = os.cpu_count()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--single", type=int, default=200, help="units for the one-at-a-time phase")
    parser.add_argument("--burst", type=int, default=100, help="PUTs sent at once")
    parser.add_argument("--readers", type=int, default=8, help="clients listing during a burst")
    parser.add_argument("--preload", type=int, default=2000, help="units the readers list")
    parser.add_argument("--engine", action="store_true", help="run fleetd's engine too")
    parser.add_argument(
        "--request-timeout", type=float, default=5.0, help="fleetd's etcd_request_timeout"
    )
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "api_writes.json"))
    args = parser.parse_args()
    result = asyncio.run(run(args))
    out = Path(args.out)
    out.parent.mkdir(exist_ok=True)
    line = json.dumps(result, separators=(",", ":"))
    out.write_text(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
