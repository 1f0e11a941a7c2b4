"""fleetctl's waits over the unix socket, against the real engine and the real agents (on the fake
systemd): `--no-block`, destroy waiting for a running unit to go, and units that cannot be placed
(pyfleet's fix for fleet#1348: a timeout with the engine's reason, not a silent hang).

Wait windows are `ATTEMPT_WINDOW` long here (see `tests/integration/cluster.py`).
"""

from __future__ import annotations

from tests.engine.cluster import stored_reasons, wait_until
from tests.integration.cluster import ATTEMPT_WINDOW, DB1, DB2, WEB, Cluster, legend
from tests.integration.scenario import (
    DB,
    GLOBAL,
    HELLO,
    NOSUCH,
    NOSUCH_REASON,
    PAIR_A,
    PAIR_B,
    fleet_hash,
)

# ---------------------------------------------------------------- --no-block, destroy


async def test_destroy_waits_for_a_running_unit_to_go(fleet_cluster: Cluster) -> None:
    fleet_cluster.write_unit("db.service", DB)
    start = await fleet_cluster.fleetctl("start", "db.service")
    assert start.out == f"Unit db.service inactive\nUnit db.service launched on {legend(DB1)}\n"
    assert ("db.service", DB1) in await fleet_cluster.states()

    destroy = await fleet_cluster.fleetctl("destroy", "db.service")
    assert (destroy.code, destroy.out, destroy.err) == (0, "Destroyed db.service\n", "")
    # "Destroyed" comes only once no machine reports the unit any more
    assert await fleet_cluster.states() == {}
    assert await fleet_cluster.placements() == {}
    assert await fleet_cluster.unit_names() == []


async def test_no_block_triggers_and_returns(fleet_cluster: Cluster) -> None:
    fleet_cluster.write_unit("hello.service", HELLO)
    fleet_cluster.write_unit("global.service", GLOBAL)

    start = await fleet_cluster.fleetctl("start", "--no-block", "hello.service", "global.service")
    assert (start.code, start.err) == (0, "")
    assert start.out == (
        "Unit hello.service inactive\n"
        "Unit global.service inactive\n"
        "Triggered global unit global.service start\n"
        "Triggered unit hello.service start\n"
    )
    await wait_until(lambda: fleet_cluster.running_on("hello.service", {WEB}), "hello running")
    await wait_until(
        lambda: fleet_cluster.running_on("global.service", {WEB, DB1, DB2}), "global running"
    )

    stop = await fleet_cluster.fleetctl("stop", "--no-block", "hello.service")
    assert (stop.code, stop.out) == (0, "Triggered unit hello.service stop\n")
    assert stop.err == "Successfully stopped units [hello.service].\n"
    await wait_until(lambda: fleet_cluster.running_on("hello.service", set()), "hello stopped")

    unload = await fleet_cluster.fleetctl("unload", "--no-block", "hello.service")
    assert (unload.code, unload.out) == (0, "Triggered unit hello.service unload\n")
    assert unload.err == "Successfully unloaded units [hello.service].\n"

    destroy = await fleet_cluster.fleetctl(
        "destroy", "--no-block", "hello.service", "global.service"
    )
    assert (destroy.code, destroy.err) == (0, "")
    assert destroy.out == "Destroyed global.service\nDestroyed hello.service\n"
    await wait_until(fleet_cluster.nothing_scheduled, "every unit gone")


# ---------------------------------------------------------------- units that cannot be placed


async def test_start_of_an_unplaceable_unit_fails_with_the_stored_reason(
    fleet_cluster: Cluster,
) -> None:
    fleet_cluster.write_unit("nosuch.service", NOSUCH)
    error = f"Error waiting for units: unit nosuch.service cannot be placed: {NOSUCH_REASON}\n"

    attempts = 3
    start = await fleet_cluster.fleetctl("start", f"--block-attempts={attempts}", "nosuch.service")
    assert (start.code, start.out, start.err) == (1, "Unit nosuch.service inactive\n", error)
    # all three windows are waited for (a machine might still join), and not much more
    assert attempts * ATTEMPT_WINDOW <= start.seconds < attempts * ATTEMPT_WINDOW + 1.5
    assert await stored_reasons(fleet_cluster.client, fleet_cluster.keys, "nosuch.service") == (
        NOSUCH_REASON,
    )

    # blocking "forever" gives up after the first window that ends with reasons (fleet#1348)
    load = await fleet_cluster.fleetctl("load", "nosuch.service")
    assert (load.code, load.out, load.err) == (1, "", error)
    assert load.seconds < 2 * ATTEMPT_WINDOW + 1.0

    files = await fleet_cluster.fleetctl("list-unit-files")
    assert files.out == (
        "UNIT\t\tHASH\tDSTATE\tSTATE\t\tTARGET\n"
        f"nosuch.service\t{fleet_hash(NOSUCH)[:7]}\tloaded\tinactive\t-\n"
    )
    status = await fleet_cluster.fleetctl("status", "nosuch.service")
    assert status.code == 1
    assert status.out == (
        "nosuch.service - Nowhere\n"
        "     Loaded: -\n"
        "     Active: -\n"
        "    Machine: -\n"
        "      State: inactive (desired: loaded)\n"
        f"       Hash: {fleet_hash(NOSUCH)}\n"
        f"Unplaceable: {NOSUCH_REASON}\n"
    )
    assert status.err == "Unit nosuch.service does not appear to be loaded.\n"
    assert await fleet_cluster.placements() == {}


async def test_a_follower_waits_for_its_leader(fleet_cluster: Cluster) -> None:
    """Alone, a MachineOf follower is refused with its peer's reason; named before its leader in
    the same command, it is placed once the leader is (within the first window)."""
    fleet_cluster.write_unit("pair-a.service", PAIR_A)
    fleet_cluster.write_unit("pair-b.service", PAIR_B)
    reason = "MachineOf peer pair-a.service is not placed on any machine"

    alone = await fleet_cluster.fleetctl("start", "pair-b.service")
    assert (alone.code, alone.out) == (1, "Unit pair-b.service inactive\n")
    assert alone.err == f"Error waiting for units: unit pair-b.service cannot be placed: {reason}\n"
    destroyed = await fleet_cluster.fleetctl("destroy", "pair-b.service")
    assert (destroyed.code, destroyed.out) == (0, "Destroyed pair-b.service\n")

    both = await fleet_cluster.fleetctl("start", "pair-b.service", "pair-a.service")
    assert (both.code, both.err) == (0, "")
    lines = both.out.splitlines()
    assert lines[:2] == ["Unit pair-b.service inactive", "Unit pair-a.service inactive"]
    assert sorted(lines[2:]) == [
        f"Unit pair-a.service launched on {legend(DB2)}",
        f"Unit pair-b.service launched on {legend(DB2)}",
    ]
    assert await stored_reasons(fleet_cluster.client, fleet_cluster.keys, "pair-b.service") is None


# ---------------------------------------------------------------- many units at once

BULK_TEMPLATE = """\
[Unit]
Description=Bulk %i

[Service]
ExecStart=/bin/sleep infinity
"""
BULK_COUNT = 40
"""More than fleetctl lists instead of GETting (16), and more than it sends at once (16), with
pages of 4: every bulk path, over the real API."""


async def test_many_units_keep_fleets_lines_and_order(fleet_cluster: Cluster) -> None:
    """fleetctl sends many requests at once; what it prints, and in which order, is fleet's:
    the arguments' order for what each command does before waiting, name order for destroy."""
    fleet_cluster.write_unit("bulk@.service", BULK_TEMPLATE)
    names = [f"bulk@{(position * 7) % BULK_COUNT}.service" for position in range(BULK_COUNT)]
    machines = {legend(machine): machine for machine in (WEB, DB1, DB2)}

    submit = await fleet_cluster.fleetctl("submit", *names)
    assert (submit.code, submit.err) == (0, "")
    assert submit.out == "".join(f"Unit {name} inactive\n" for name in names)

    start = await fleet_cluster.fleetctl("start", *names)
    assert (start.code, start.err) == (0, "")
    launched = {}
    for line in start.out.splitlines():  # units launched in one poll come in argument order
        unit, _, where = line.removeprefix("Unit ").partition(" launched on ")
        launched[unit] = machines[where]
    assert sorted(launched) == sorted(names)

    async def all_running() -> bool:
        states = await fleet_cluster.states()
        active = {(u, m) for (u, m), (state, _) in states.items() if state.active_state == "active"}
        return active == set(launched.items())

    await wait_until(all_running, "every unit running where fleetctl said it was launched")

    again = await fleet_cluster.fleetctl("start", "--no-block", *names)
    assert (again.code, again.out, again.err) == (0, "", "")  # all launched: nothing to do

    stop = await fleet_cluster.fleetctl("stop", *names)
    assert stop.code == 0
    assert sorted(stop.out.splitlines()) == sorted(
        f"Unit {unit} loaded on {legend(machine)}" for unit, machine in launched.items()
    )
    assert stop.err == f"Successfully stopped units [{' '.join(sorted(names))}].\n"

    destroy = await fleet_cluster.fleetctl("destroy", "--no-block", *names)
    assert (destroy.code, destroy.err) == (0, "")
    assert destroy.out == "".join(f"Destroyed {name}\n" for name in sorted(names))
    await wait_until(fleet_cluster.nothing_scheduled, "every unit gone")
    assert await fleet_cluster.unit_names() == []
