"""The scale benchmark's API probes, in a process of their own so that the driver's load does not
delay them: what a user of the API sees while the cluster works.

* `--mode get`: one `GET /fleet/v1/units/u<k>.service` after another (k at random below
  `--units`; a unit not submitted yet is a 404, still a full request), `--interval` apart;
  each sample is (start, milliseconds, status).
* `--mode list`: the whole unit list, page after page along `nextPageToken` as fleetctl reads
  it, `--interval` apart; each sample is (start, seconds, units listed, pages).

Start times are `time.monotonic()`, the clock the driver uses. A failed request is status 0.
Replies (see `bench.scale_proc`): `stats` gives the number of samples, `stop` all of them.

    python -m bench.scale_probe --socket PATH --mode get --units 10000
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from typing import Any

import httpx

from bench.logs import warnings_only
from bench.scale_proc import say, serve_commands

REQUEST_TIMEOUT = 60.0


async def probe_gets(http: httpx.AsyncClient, units: int, interval: float, out: list[Any]) -> None:
    chooser = random.Random(1)
    while True:
        path = f"/fleet/v1/units/u{chooser.randrange(units)}.service"
        started = time.monotonic()
        try:
            status = (await http.get(path)).status_code
        except httpx.HTTPError:
            status = 0
        out.append([round(started, 4), round((time.monotonic() - started) * 1000, 2), status])
        await asyncio.sleep(interval)


async def probe_lists(http: httpx.AsyncClient, interval: float, out: list[Any]) -> None:
    while True:
        started = time.monotonic()
        listed = pages = 0
        token: str | None = None
        try:
            while True:
                params = {"nextPageToken": token} if token else {}
                reply = await http.get("/fleet/v1/units", params=params)
                reply.raise_for_status()
                body = reply.json()
                pages += 1
                listed += len(body.get("units", []))
                token = body.get("nextPageToken")
                if not token:
                    break
        except httpx.HTTPError:
            listed = -1  # the list failed part way
        out.append([round(started, 4), round(time.monotonic() - started, 3), listed, pages])
        await asyncio.sleep(interval)


async def run(args: argparse.Namespace) -> None:
    transport = httpx.AsyncHTTPTransport(uds=args.socket)
    samples: list[Any] = []
    async with httpx.AsyncClient(
        transport=transport, base_url="http://fleet", timeout=REQUEST_TIMEOUT
    ) as http:
        if args.mode == "get":
            probing = probe_gets(http, args.units, args.interval, samples)
        else:
            probing = probe_lists(http, args.interval, samples)
        task = asyncio.create_task(probing)
        say({"ready": True})
        try:
            await serve_commands(lambda: {"samples": len(samples)}, lambda: {"samples": samples})
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True, help="the API's unix socket path")
    parser.add_argument("--mode", choices=("get", "list"), required=True)
    parser.add_argument("--units", type=int, default=1, help="get: unit numbers to choose from")
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between probes")
    args = parser.parse_args()
    warnings_only()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
