"""pyfleet's main job for now: a local cluster on a real etcd, driven with fleetctl.

It starts etcd and two `fleetd` processes (engine candidates and API servers, each on a unix
socket and on TCP with a bearer token), brings up three machines, each the real agent on an
in-memory systemd (`devtools.fakehost`: the machine record on a kept-alive lease, the schedule
watch, the unit files and the published states are the agent's own; only the units' processes
are not real), then drives the cluster the way a user does: `fleetctl start` of the example
units in `units/`, `list-machines`, `list-unit-files`, `list-units`. It then takes a machine
away and kills the leading fleetd, and shows the cluster recover through the other fleetd's TCP
API. Everything it started is stopped.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from devtools.etcd_server import EtcdServer, free_port
from devtools.fakehost import FakeHost
from fleetd.registry.client import EtcdClient
from fleetd.registry.codec import decode_leader
from fleetd.registry.keys import Keys

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MACHINES = {
    "0c1ab2f2f1a34a7e8d3a6e1f20aa0001": ("10.0.0.1", {"role": "web"}),
    "5d9e01b7c3f04b1d9a2e4c6b80bb0002": ("10.0.0.2", {"role": "db"}),
    "9f2c44e6d87a4c2f8b1e3d5a70cc0003": ("10.0.0.3", {"role": "db"}),
}
ENGINES = ("e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1", "e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2")
UNITS = [
    "hello.service",
    "web@1.service",
    "web@2.service",
    "monitor.service",
    "app.service",
    "app-announce.service",
    "db.service",
    "cache.service",
]


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


async def fleetctl(endpoint: str, *args: str, token: str = "") -> int:
    """Run the real fleetctl command and show what it prints."""
    print(f"$ fleetctl {' '.join(args)}", flush=True)
    env = {**os.environ, "FLEETCTL_ENDPOINT": endpoint}
    if token:
        env["FLEETCTL_API_TOKEN"] = token
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "fleetctl"), *args, cwd=ROOT / "units", env=env
    )
    return await proc.wait()


async def wait_for(probe: Callable[[], Awaitable[T]], what: str, within: float = 30.0) -> T:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        result = await probe()
        if result:
            return result
        await asyncio.sleep(0.1)
    raise SystemExit(f"demo: timed out waiting for {what}")


def start_fleetd(
    endpoint: str, prefix: str, machine_id: str, workdir: Path, *listen: str
) -> subprocess.Popen[bytes]:
    id_file = workdir / f"machine-id-{machine_id[:4]}"
    id_file.write_text(machine_id + "\n")
    log = (workdir / f"fleetd-{machine_id[:4]}.log").open("wb")
    return subprocess.Popen(
        [
            str(BIN / "fleetd"),
            f"--etcd-servers={endpoint}",
            f"--etcd-key-prefix={prefix}",
            "--engine-reconcile-interval=0.4",
            "--disable-agent",
            *(f"--listen={address}" for address in listen),
        ],
        env={
            **os.environ,
            "FLEET_MACHINE_ID_FILE": str(id_file),
            "FLEET_API_TOKEN_FILE": str(workdir / "token"),
        },
        stdout=log,
        stderr=subprocess.STDOUT,
    )


async def leader(client: EtcdClient, keys: Keys) -> str:
    kv = await client.get(keys.leader)
    return decode_leader(kv.key, kv.value).machine_id if kv else ""


@dataclass
class Cluster:
    """What the demo started, for the scenario to drive."""

    client: EtcdClient
    keys: Keys
    socks: dict[str, Path]
    fleetds: dict[str, subprocess.Popen[bytes]]
    hosts: dict[str, FakeHost]
    remotes: dict[str, str]  # each fleetd's TCP API, by engine id
    token: str


async def drive(cluster: Cluster) -> None:
    """What a user does: start the units, look, lose a machine, lose the leading fleetd."""
    first = await wait_for(lambda: leader(cluster.client, cluster.keys), "an engine leader")
    local = f"unix://{cluster.socks[first]}"
    await wait_for(lambda: asyncio.sleep(0, cluster.socks[first].exists()), "the API socket")
    await fleetctl(local, "list-machines")

    say("starting the example units with fleetctl")
    await fleetctl(local, "start", "--block-attempts=3", *UNITS)
    await fleetctl(local, "list-unit-files")
    await fleetctl(local, "list-units")
    await fleetctl(local, "status", "web@2.service")

    lost = "9f2c44e6d87a4c2f8b1e3d5a70cc0003"
    say(f"machine {lost[:8]}... goes away")
    await cluster.hosts.pop(lost).leave()

    async def moved_off() -> bool:
        kvs, _ = await cluster.client.get_prefix(cluster.keys.schedule_of(lost))
        return not kvs

    await wait_for(moved_off, "the engine to move units off the lost machine")
    await fleetctl(local, "list-unit-files")

    say(f"killing the leading fleetd {first[:8]}...; asking the other one over TCP")
    cluster.fleetds[first].send_signal(signal.SIGKILL)
    cluster.fleetds[first].wait()
    (remote,) = (address for engine, address in cluster.remotes.items() if engine != first)
    await fleetctl(remote, "start", "--block-attempts=5", "web@3.service", token=cluster.token)
    await fleetctl(remote, "destroy", "web@2.service", "web@3.service", token=cluster.token)
    await fleetctl(remote, "list-unit-files", token=cluster.token)
    new = await leader(cluster.client, cluster.keys)
    print(f"engine leader now: fleetd {new[:8]}... (was {first[:8]}...)")


async def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="pyfleet-demo-"))
    token = secrets.token_hex(16)
    (workdir / "token").write_text(token + "\n")
    (workdir / "token").chmod(0o600)  # fleetd refuses a token file others can read
    etcd = EtcdServer()
    fleetds: dict[str, subprocess.Popen[bytes]] = {}
    hosts: dict[str, FakeHost] = {}
    client: EtcdClient | None = None
    try:
        say(f"starting etcd on {etcd.endpoint}")
        etcd.start()
        keys = Keys("/fleet-demo/")
        client = await EtcdClient.connect([etcd.endpoint])
        tcp = {m: f"127.0.0.1:{free_port()}" for m in ENGINES}
        socks = {m: workdir / f"fleet-{m[:4]}.sock" for m in ENGINES}
        for engine in ENGINES:
            say(f"starting fleetd {engine[:8]}...: API on {socks[engine]} and {tcp[engine]}")
            fleetds[engine] = start_fleetd(
                etcd.endpoint, keys.prefix, engine, workdir, str(socks[engine]), tcp[engine]
            )
        remotes = {engine: f"http://{address}" for engine, address in tcp.items()}
        say("three machines join (the real agent on an in-memory systemd)")
        for machine_id, (ip, metadata) in MACHINES.items():
            units_directory = workdir / "hosts" / machine_id
            host = FakeHost(
                client, keys, machine_id, units_directory, metadata=metadata, ip=ip, ttl=5
            )
            hosts[machine_id] = host
            host.start()
        await drive(Cluster(client, keys, socks, fleetds, hosts, remotes, token))
        say("done; stopping everything")
    finally:
        for host in hosts.values():
            await host.leave()
        if client is not None:
            await client.close()
        for proc in fleetds.values():
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=15)
        etcd.cleanup()
        print(f"fleetd logs are in {workdir}")


if __name__ == "__main__":
    asyncio.run(main())
