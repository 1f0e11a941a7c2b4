"""What `fleetctl start` leaves in etcd: placements that honour every requirement, the engine's
reasons for the unit it could not place, and the states the machines published for the rest."""

from __future__ import annotations

import json
import re

from fleetd.core.states import JobState
from tests.engine.cluster import stored_reasons, wait_until
from tests.integration.cluster import DB1, DB2, WEB, Cluster, legend
from tests.integration.scenario import (
    EXPECTED_PLACEMENTS,
    TEXT_OF,
    WEB2_REASONS,
    fleet_hash,
    start_the_set,
)

WORKER_TEMPLATE = """\
[Unit]
Description=Worker

[Service]
ExecStart=/usr/bin/worker %i
"""


async def test_start_places_every_unit_as_its_requirements_say(fleet_cluster: Cluster) -> None:
    await start_the_set(fleet_cluster)

    placements = await fleet_cluster.placements()
    assert {unit: set(machines) for unit, machines in placements.items()} == EXPECTED_PLACEMENTS
    for unit, on_machines in placements.items():
        for placement in on_machines.values():
            assert (placement.hash, placement.desired) == (
                fleet_hash(TEXT_OF[unit]),
                JobState.LAUNCHED,
            )
    # the requirements, spelled out
    assert set(placements["global.service"]) == {WEB, DB1, DB2}
    assert set(placements["pair-b.service"]) == set(placements["pair-a.service"]) == {DB2}
    assert set(placements["db.service"]) <= {DB1, DB2}
    assert "web@2.service" not in placements
    assert set(placements["web@1.service"]) == {WEB}

    client, keys = fleet_cluster.client, fleet_cluster.keys
    assert await stored_reasons(client, keys, "web@2.service") == WEB2_REASONS
    for unit in EXPECTED_PLACEMENTS:
        assert await stored_reasons(client, keys, unit) is None

    leases = {}
    for machine in (WEB, DB1, DB2):
        record = await client.get(keys.machine(machine))
        assert record is not None
        leases[machine] = record.lease
    states = await fleet_cluster.states()
    expected_states = {
        (unit, machine) for unit, machines in EXPECTED_PLACEMENTS.items() for machine in machines
    }
    assert set(states) == expected_states
    for (unit, machine), (state, lease) in states.items():
        assert (state.load_state, state.active_state, state.sub_state) == (
            "loaded",
            "active",
            "running",
        )
        assert state.hash == fleet_hash(TEXT_OF[unit])
        assert lease == leases[machine]


async def test_many_instances_spread_evenly_and_are_waited_for_by_list(
    fleet_cluster: Cluster,
) -> None:
    """18 instances: above fleetctl's threshold of 16, its waits poll one paged list of units
    instead of a GET per unit. The engine puts each on the least-loaded machine, so the three
    machines end with six each."""
    fleet_cluster.write_unit("worker@.service", WORKER_TEMPLATE)
    names = [f"worker@{index}.service" for index in range(1, 19)]

    start = await fleet_cluster.fleetctl("start", *names)
    assert (start.code, start.err) == (0, "")
    lines = start.out.splitlines()
    assert lines[:18] == [f"Unit {name} inactive" for name in names]
    placements = await fleet_cluster.placements()
    machine_of = {}
    for name in names:
        (machine,) = placements[name]
        machine_of[name] = machine
    assert sorted(lines[18:]) == sorted(
        f"Unit {name} launched on {legend(machine_of[name])}" for name in names
    )
    assert sorted(list(machine_of.values()).count(m) for m in (WEB, DB1, DB2)) == [6, 6, 6]

    as_json = await fleet_cluster.fleetctl(
        "--output", "json", "list-units", "--fields", "unit,machine,active"
    )
    assert as_json.code == 0
    rows = json.loads(as_json.out)["states"]
    assert rows == [
        {"unit": name, "machine": machine_of[name], "active": "active"} for name in sorted(names)
    ]

    destroy = await fleet_cluster.fleetctl("destroy", *names)
    assert (destroy.code, destroy.err) == (0, "")
    assert sorted(destroy.out.splitlines()) == sorted(f"Destroyed {name}" for name in names)
    assert re.fullmatch(r"(Destroyed worker@\d+\.service\n){18}", destroy.out)
    assert await fleet_cluster.states() == {}


async def test_units_move_when_a_machine_leaves(fleet_cluster: Cluster) -> None:
    """DB1 dies (its lease goes, and with it its record and its states): the engine moves
    db.service to the other db machine, drops the global unit's placement there, and restates
    why web@2.service still cannot run; fleetctl shows the new cluster."""
    await start_the_set(fleet_cluster)
    await fleet_cluster.remove_machine(DB1)
    expected = dict(EXPECTED_PLACEMENTS, **{"db.service": {DB2}, "global.service": {WEB, DB2}})

    async def moved() -> bool:
        states = await fleet_cluster.states()
        placed = {
            unit: set(machines) for unit, machines in (await fleet_cluster.placements()).items()
        }
        running = {(unit, machine) for unit, machines in expected.items() for machine in machines}
        return placed == expected and set(states) == running

    await wait_until(moved, "db.service moved to DB2")
    reasons = (
        f"conflicts with web@1.service on {WEB[:8]}",
        "1 of 2 machines lack metadata role=web",
    )

    async def restated() -> bool:
        return (
            await stored_reasons(fleet_cluster.client, fleet_cluster.keys, "web@2.service")
            == reasons
        )

    await wait_until(restated, "web@2.service's reasons restated")

    machines = await fleet_cluster.fleetctl("list-machines", "--no-legend")
    assert machines.out == "1a2b3c4d...\t127.0.0.1\trole=web\n9c0d1e2f...\t127.0.0.1\trole=db\n"
    units = await fleet_cluster.fleetctl("list-units", "--no-legend")
    assert (units.code, units.err) == (0, "")
    assert units.out == (
        f"db.service\t{legend(DB2)}\tactive\trunning\n"
        f"global.service\t{legend(WEB)}\tactive\trunning\n"
        f"global.service\t{legend(DB2)}\tactive\trunning\n"
        f"hello.service\t{legend(WEB)}\tactive\trunning\n"
        f"pair-a.service\t{legend(DB2)}\tactive\trunning\n"
        f"pair-b.service\t{legend(DB2)}\tactive\trunning\n"
        f"web@1.service\t{legend(WEB)}\tactive\trunning\n"
    )
    status = await fleet_cluster.fleetctl("status", "web@2.service")
    assert status.code == 1
    assert status.out.endswith(f"Unplaceable: {reasons[0]}\n             {reasons[1]}\n")
