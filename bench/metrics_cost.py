"""What metrics cost a request: the API app with and without `Metrics`, on a real etcd and view.

Starts an etcd (data on tmpfs), writes `--units` units with placements and states on
`--machines` machines straight to etcd, fills an `ApiView` from it, and builds the v1 app twice
over the same service: plain, and with `Metrics` (the request-counting middleware, `/metrics` and
the cluster gauges, as fleetd serves it). Then, in `--rounds` rounds that alternate which app goes
first (so a load change on a shared machine hits both alike), `--requests` sequential requests of
each kind through `httpx.ASGITransport` (the app's own cost, without the HTTP server and socket,
which metrics do not touch):

* `get`: `GET /fleet/v1/units/{name}` of a random unit (answered from the view);
* `list`: `GET /fleet/v1/units` (a page of 100);
* `put`: `PUT /fleet/v1/units/{name}` setting a unit's desired state (one guarded etcd `Txn`);

and reports, for each kind and app, the latency p50/p99 and the process' CPU time per request,
with the difference. Last, `scrape`: `GET /metrics` on the metrics app (the cluster gauges are
computed then, one pass over the view), p50/p99 and the size of the answer.

Prints one JSON line and writes it to `bench/results/metrics_cost.json`.

    PYTHONPATH=. .venv/bin/python -m bench.metrics_cost --units 10000 --rounds 6 --requests 300
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from bench.logs import warnings_only
from devtools.etcd_server import EtcdServer
from fleetd.api.app import create_app
from fleetd.api.metrics import ClusterCollector
from fleetd.api.service import ApiService
from fleetd.api.view import ApiView
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
from fleetd.runtime.metrics import Metrics

PREFIX = "/bench/"
RESULTS = Path(__file__).parent / "results"


def summary(latencies: list[float], cpu: float) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "p50_us": round(statistics.median(ordered) * 1e6),
        "p99_us": round(ordered[max(int(len(ordered) * 0.99) - 1, 0)] * 1e6),
        "cpu_us_per_request": round(cpu / len(latencies) * 1e6),
    }


async def preload(client: EtcdClient, keys: Keys, units: int, machines: int) -> list[str]:
    """`units` launched units, each placed on one of `machines` with an `active` state."""
    ids = [f"{m:032x}" for m in range(1, machines + 1)]
    puts = [Put(keys.machine(m), encode_machine(Machine(m, {}, "10.0.0.1"), "bench")) for m in ids]
    names = [f"u{n:06d}.service" for n in range(units)]
    text = parse_unit("[Service]\nExecStart=/bin/sleep infinity\n")
    for index, name in enumerate(names):
        record = UnitRecord(name, text.options, text.hash, JobState.LAUNCHED)
        machine = ids[index % machines]
        state = UnitStateRecord("loaded", "active", "running", text.hash, time.time())
        puts += [
            Put(keys.unit(name), encode_unit(record)),
            Put(
                keys.placement(machine, name),
                encode_placement(Placement(name, machine, text.hash, JobState.LAUNCHED)),
            ),
            Put(keys.state(machine, name), encode_state(state)),
        ]
    for start in range(0, len(puts), EtcdClient.MAX_TXN_OPS):
        await client.txn([], puts[start : start + EtcdClient.MAX_TXN_OPS])
    return names


async def timed(
    http: httpx.AsyncClient, requests: list[tuple[str, str, Any]]
) -> tuple[list[float], float]:
    latencies = []
    cpu = time.process_time()
    for method, path, body in requests:
        started = time.perf_counter()
        response = await http.request(method, path, json=body)
        latencies.append(time.perf_counter() - started)
        if response.status_code >= 300:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text}")
    return latencies, time.process_time() - cpu


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    server = EtcdServer()
    server.start()
    try:
        client = await EtcdClient.connect([server.endpoint])
        keys = Keys(PREFIX)
        names = await preload(client, keys, args.units, args.machines)
        view = ApiView(client, keys)
        viewing = asyncio.create_task(view.run())
        await view.wait_ready()
        service = ApiService(client, keys, view)
        metrics = Metrics()
        metrics.add_collector(ClusterCollector(view))
        apps = {"plain": create_app(service), "metrics": create_app(service, metrics=metrics)}
        clients = {
            label: httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://fleet"
            )
            for label, app in apps.items()
        }
        chooser = random.Random(7)
        results: dict[str, dict[str, tuple[list[float], float]]] = {}
        states = ("loaded", "launched")
        for round_number in range(args.rounds):
            order = list(clients) if round_number % 2 == 0 else list(reversed(clients))
            for kind in ("get", "list", "put"):
                for label in order:
                    batch: list[tuple[str, str, Any]]
                    if kind == "get":
                        batch = [
                            ("GET", f"/fleet/v1/units/{chooser.choice(names)}", None)
                            for _ in range(args.requests)
                        ]
                    elif kind == "list":
                        batch = [("GET", "/fleet/v1/units", None)] * args.requests
                    else:
                        batch = [
                            (
                                "PUT",
                                f"/fleet/v1/units/{chooser.choice(names)}",
                                {"desiredState": states[n % 2]},
                            )
                            for n in range(args.requests)
                        ]
                    latencies, cpu = await timed(clients[label], batch)
                    mine = results.setdefault(kind, {}).setdefault(label, ([], 0.0))
                    results[kind][label] = (mine[0] + latencies, mine[1] + cpu)
        scrape_latencies = []
        size = 0
        for _ in range(args.scrapes):
            started = time.perf_counter()
            response = await clients["metrics"].get("/metrics")
            scrape_latencies.append(time.perf_counter() - started)
            size = len(response.content)
        for http in clients.values():
            await http.aclose()
        viewing.cancel()
        await asyncio.gather(viewing, return_exceptions=True)
        await client.close()
    finally:
        server.cleanup()
    report: dict[str, Any] = {
        "units": args.units,
        "machines": args.machines,
        "rounds": args.rounds,
        "requests_per_round": args.requests,
        "load_average": os.getloadavg(),
    }
    for kind, by_app in results.items():
        plain = summary(*by_app["plain"])
        with_metrics = summary(*by_app["metrics"])
        report[kind] = {
            "plain": plain,
            "metrics": with_metrics,
            "added_p50_us": with_metrics["p50_us"] - plain["p50_us"],
            "added_cpu_us": with_metrics["cpu_us_per_request"] - plain["cpu_us_per_request"],
        }
    ordered = sorted(scrape_latencies)
    report["scrape"] = {
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p99_ms": round(ordered[max(int(len(ordered) * 0.99) - 1, 0)] * 1000, 1),
        "bytes": size,
    }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--units", type=int, default=2000)
    parser.add_argument("--machines", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--scrapes", type=int, default=20)
    args = parser.parse_args()
    warnings_only()
    report = asyncio.run(measure(args))
    line = json.dumps(report)
    print(line)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "metrics_cost.json").write_text(line + "\n")


if __name__ == "__main__":
    main()
