"""Event delivery latency: an etcd write until each of N Server-Sent Events clients has it.

Starts an etcd (data on tmpfs) and a `fleetd` process serving only its API on a unix socket
(`bench.api_writes.fleetd_api`), opens `--clients` streams on `GET /fleet/v1/events` (raw
sockets, so the clients cost little next to fleetd), then writes `--events` units straight into
etcd, `--rate` a second. Each write's latency to each client runs from just before the etcd
`Put` is sent until that client has read the event whose id is the Put's revision: etcd, the
shared watch, fleetd's fan-out and the socket. p50/p99/max over every (write, client) pair,
fleetd's CPU per event, and the load average while it ran (the machine may be shared).

Prints one JSON line and writes it to `bench/results/events.json`.

    PYTHONPATH=. .venv/bin/python -m bench.events --clients 100 --events 200 --rate 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.api_writes import PREFIX, cpu_seconds, fleetd_api, summary, wait_ready
from devtools.etcd_server import EtcdServer
from fleetd.core.states import JobState
from fleetd.core.unitfile import parse_unit
from fleetd.registry.client import EtcdClient
from fleetd.registry.codec import UnitRecord, encode_unit
from fleetd.registry.keys import Keys

_ID = re.compile(rb"^id: (\d+)$", re.MULTILINE)


class Client:
    """One raw SSE connection; records when each event id arrived."""

    def __init__(self) -> None:
        self.arrived: dict[int, float] = {}
        self.live = asyncio.Event()
        self.news = asyncio.Event()

    async def run(self, socket_path: str) -> None:
        reader, writer = await asyncio.open_unix_connection(socket_path)
        writer.write(b"GET /fleet/v1/events?kind=unit HTTP/1.1\r\nHost: fleet\r\n\r\n")
        buffer = b""
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    return
                now = time.perf_counter()
                buffer += chunk
                if b": live after revision" in buffer:
                    self.live.set()
                cut = buffer.rfind(b"\n")
                for match in _ID.finditer(buffer, 0, cut + 1):
                    self.arrived.setdefault(int(match.group(1)), now)
                self.news.set()
                buffer = buffer[cut + 1 :]
        finally:
            writer.close()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    server = EtcdServer()
    server.start()
    workdir = Path(tempfile.mkdtemp(prefix="pyfleet-bench-events-"))
    try:
        with fleetd_api(server, workdir, engine=False, request_timeout=5.0) as (socket_path, pid):
            transport = httpx.AsyncHTTPTransport(uds=socket_path)
            async with httpx.AsyncClient(transport=transport, base_url="http://fleet") as http:
                await wait_ready(http)
            return await measure(server, socket_path, pid, args)
    finally:
        server.cleanup()


async def measure(
    server: EtcdServer, socket_path: str, pid: int, args: argparse.Namespace
) -> dict[str, Any]:
    clients = [Client() for _ in range(args.clients)]
    tasks = [asyncio.create_task(c.run(socket_path)) for c in clients]
    etcd = await EtcdClient.connect([server.endpoint])
    keys = Keys(PREFIX)
    sent: dict[int, float] = {}
    load_before = os.getloadavg()
    try:
        async with asyncio.timeout(60):
            await asyncio.gather(*(c.live.wait() for c in clients))
        cpu = cpu_seconds(pid)
        started = time.perf_counter()
        for n in range(args.events):
            name = f"e{n:06d}.service"
            unit = parse_unit(f"[Unit]\nDescription={name}\n[Service]\nExecStart=/bin/true\n")
            record = encode_unit(UnitRecord(name, unit.options, unit.hash, JobState.INACTIVE))
            before = time.perf_counter()
            revision = await etcd.put(keys.unit(name), record)
            sent[revision] = before
            pause = started + (n + 1) / args.rate - time.perf_counter()
            if pause > 0:
                await asyncio.sleep(pause)
        async with asyncio.timeout(60):
            for client in clients:
                while not set(sent) <= set(client.arrived):
                    client.news.clear()
                    await client.news.wait()
        cpu = cpu_seconds(pid) - cpu
    finally:
        await etcd.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    latencies = [c.arrived[r] - t for c in clients for r, t in sent.items()]
    return {
        "clients": args.clients,
        "events": args.events,
        "rate_per_s": args.rate,
        "deliveries": len(latencies),
        **summary(latencies),
        "fleetd_cpu_ms_per_event": round(cpu * 1000 / args.events, 2),
        "load_average_before": [round(x, 1) for x in load_before],
        "load_average_after": [round(x, 1) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100, help="SSE clients")
    parser.add_argument("--events", type=int, default=200, help="units written")
    parser.add_argument("--rate", type=float, default=20.0, help="writes per second")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "events.json"))
    args = parser.parse_args()
    result = asyncio.run(run(args))
    out = Path(args.out)
    out.parent.mkdir(exist_ok=True)
    line = json.dumps(result, separators=(",", ":"))
    out.write_text(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
