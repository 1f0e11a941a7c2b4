"""Many units at once on one machine, on real systemd: the agent starts them all and unloads them
all, without a refused start or a failed task on the way.

The units and their schedule are written straight into etcd, two hundred of each in a few
transactions (each unit with its entry, and `MachineID=` naming the node, so the engine agrees
with the placement), so the agent gets them at once; they are removed the same way. Everything
is checked in systemd and in the published states. The deadlines are generous: this is a test of
correctness under load, not of speed (`bench/agent_systemd.py` measures that).
"""

from __future__ import annotations

import json

import pytest

from tests.rig.cluster import Cluster
from tests.rig.nodes import TEST_TIMEOUT, run_in

pytestmark = pytest.mark.timeout(TEST_TIMEOUT)

BULK = 200
BULK_WITHIN = 180.0
"""Deadline for all the units to run, or to be gone (they take seconds)."""
PREFIX = "bulk-"

REGISTRY_SCRIPT = """
import asyncio, json, sys
from fleetd.core.model import Placement
from fleetd.core.states import JobState
from fleetd.core.unitfile import parse_unit
from fleetd.registry.client import Delete, EtcdClient, Put
from fleetd.registry.codec import UnitRecord, decode_state, encode_placement, encode_unit
from fleetd.registry.keys import Keys

ACTION, MACHINE, COUNT = sys.argv[1], sys.argv[2], int(sys.argv[3])
keys = Keys()  # the default prefix, as the nodes' fleetd
names = [f"bulk-{i:03d}.service" for i in range(COUNT)]


async def write(client, ops):
    for start in range(0, len(ops), EtcdClient.MAX_TXN_OPS):
        await client.txn([], ops[start : start + EtcdClient.MAX_TXN_OPS])


async def main():
    client = await EtcdClient.connect(["http://etcd:2379"], timeout=10)
    try:
        if ACTION == "schedule":  # each unit and its schedule entry together
            ops = []
            for name in names:
                text = (
                    f"[Unit]\\nDescription={name}\\n\\n[Service]\\nExecStart=/bin/sleep infinity\\n"
                    f"\\n[X-Fleet]\\nMachineID={MACHINE}\\n"
                )
                unit = parse_unit(text)
                record = UnitRecord(name, unit.options, unit.hash, JobState.LAUNCHED)
                placement = Placement(name, MACHINE, unit.hash, JobState.LAUNCHED)
                ops.append(Put(keys.unit(name), encode_unit(record)))
                ops.append(Put(keys.placement(MACHINE, name), encode_placement(placement)))
            await write(client, ops)
        elif ACTION == "unschedule":
            ops = []
            for name in names:
                ops += [Delete(keys.placement(MACHINE, name)), Delete(keys.unit(name))]
            await write(client, ops)
        else:
            kvs, _ = await client.get_prefix(keys.state(MACHINE, "bulk-"))
            found = {}
            for kv in kvs:
                state = decode_state(kv.key, kv.value)
                found[kv.key.rsplit("/", 1)[1]] = [state.active_state, state.sub_state]
            print(json.dumps(found))
    finally:
        await client.close()


asyncio.run(main())
"""


def registry(cluster: Cluster, node: str, action: str) -> str:
    """Run `REGISTRY_SCRIPT`'s `action` with pyfleet's own client inside `node`."""
    command = ["/opt/pyfleet/bin/python", "-c", REGISTRY_SCRIPT, action]
    code, output = run_in(cluster.nodes[node], [*command, cluster.machines[node], str(BULK)])
    assert code == 0, output
    return output


def published(cluster: Cluster, node: str) -> dict[str, list[str]]:
    states: dict[str, list[str]] = json.loads(registry(cluster, node, "states"))
    return states


def active_in_systemd(cluster: Cluster, node: str) -> int:
    script = f"systemctl list-units --state=active --no-legend --plain '{PREFIX}*' | wc -l"
    code, output = run_in(cluster.nodes[node], ["sh", "-c", script])
    assert code == 0, output
    return int(output)


def test_units_scheduled_at_once_to_one_node_all_run_and_all_go(cluster: Cluster) -> None:
    node = "node2"
    cursor = cluster.journal_cursor(node)
    registry(cluster, node, "schedule")

    def all_running() -> tuple[bool, str]:
        states = published(cluster, node)
        running = sum(state == ["active", "running"] for state in states.values())
        return running == BULK, f"{running} of {BULK} published active/running"

    cluster.wait(all_running, f"{BULK} units running on {node}", within=BULK_WITHIN)
    assert active_in_systemd(cluster, node) == BULK
    assert len(cluster.units_directory(node)) == BULK

    registry(cluster, node, "unschedule")

    def all_gone() -> tuple[bool, str]:
        states = published(cluster, node)
        files = [f for f in cluster.units_directory(node) if f.startswith(PREFIX)]
        active = active_in_systemd(cluster, node)
        held = not states and not files and active == 0
        return held, f"{len(states)} states, {len(files)} files, {active} active in systemd"

    cluster.wait(all_gone, f"{BULK} units unloaded from {node}", within=BULK_WITHIN)
    _, links = run_in(
        cluster.nodes[node], ["sh", "-c", f"ls /run/systemd/system | grep -c '^{PREFIX}' || true"]
    )
    assert links.strip() == "0"  # the runtime links went with the units
    problems = [
        entry
        for entry in cluster.journal_after(node, cursor, "-u", "fleet.service")
        if "refused to start" in entry or "agent task failed" in entry
    ]
    assert problems == []
    _, restarts = run_in(
        cluster.nodes[node], ["systemctl", "show", "-p", "NRestarts", "--value", "fleet"]
    )
    assert restarts == "0"
