"""fleetctl over the API's unix socket, against the real API, engine and etcd: every command, with
fleet's exact output. Waits (`--no-block`, units that cannot be placed) are
in `test_fleetctl_waits.py`, what `start` leaves in etcd in `test_placement.py`.

Tables are written out as fleet's tabwriter prints them (tab width 8, padding 1, TAB padding: a
column is as wide as its widest cell plus one, rounded up to a multiple of 8, and each cell is
followed by as many tabs as it takes to get there; the last column is not padded).
"""

from __future__ import annotations

import gc
import json

import pytest

from fleetd import __version__
from fleetd.core.states import JobState
from tests.engine.cluster import wait_until
from tests.integration.cluster import DB1, DB2, WEB, Cluster, legend
from tests.integration.scenario import (
    DB,
    GLOBAL,
    HELLO,
    HELLO_CHANGED,
    WEB2_REASONS,
    WEB_TEMPLATE,
    fleet_hash,
    short_hash,
    start_the_set,
)

SIGNING_DEPRECATED = "WARNING: The signed/verified units feature is DEPRECATED and cannot be used."


# ---------------------------------------------------------------- machines, version, verify


async def test_list_machines_prints_fleets_table(fleet_cluster: Cluster) -> None:
    result = await fleet_cluster.fleetctl("list-machines")
    assert (result.code, result.err) == (0, "")
    assert result.out == (
        "MACHINE\t\tIP\t\tMETADATA\n"
        "1a2b3c4d...\t127.0.0.1\trole=web\n"
        "5e6f7a8b...\t127.0.0.1\trole=db\n"
        "9c0d1e2f...\t127.0.0.1\trole=db\n"
    )

    full = await fleet_cluster.fleetctl("list-machines", "--full")
    assert (full.code, full.err) == (0, "")
    assert full.out == (
        "MACHINE\t\t\t\t\tIP\t\tMETADATA\n"
        f"{WEB}\t127.0.0.1\trole=web\n"
        f"{DB1}\t127.0.0.1\trole=db\n"
        f"{DB2}\t127.0.0.1\trole=db\n"
    )

    bare = await fleet_cluster.fleetctl("list-machines", "--no-legend", "--fields", "ip,machine")
    assert (bare.code, bare.err) == (0, "")
    assert bare.out == ("127.0.0.1\t1a2b3c4d...\n127.0.0.1\t5e6f7a8b...\n127.0.0.1\t9c0d1e2f...\n")

    # global flags after the command, as cobra took them
    after = await fleet_cluster.run(
        "list-machines", "--no-legend", "--endpoint", fleet_cluster.unix_endpoint, "-l"
    )
    assert (after.code, after.err) == (0, "")
    assert after.out == (
        f"{WEB}\t127.0.0.1\trole=web\n{DB1}\t127.0.0.1\trole=db\n{DB2}\t127.0.0.1\trole=db\n"
    )

    bad = await fleet_cluster.fleetctl("list-machines", "--fields", "machine,bogus")
    assert (bad.code, bad.out, bad.err) == (1, "", 'Invalid key in output format: "bogus"\n')


async def test_list_machines_as_json(fleet_cluster: Cluster) -> None:
    result = await fleet_cluster.fleetctl("--output", "json", "list-machines")
    assert (result.code, result.err) == (0, "")
    assert json.loads(result.out) == {
        "command": "list-machines",
        "ok": True,
        "machines": [
            {"machine": WEB, "ip": "127.0.0.1", "metadata": {"role": "web"}},
            {"machine": DB1, "ip": "127.0.0.1", "metadata": {"role": "db"}},
            {"machine": DB2, "ip": "127.0.0.1", "metadata": {"role": "db"}},
        ],
        "errors": [],
        "warnings": [],
    }


async def test_version_and_verify(fleet_cluster: Cluster) -> None:
    for argv in (["version"], ["--version"], ["-v"]):
        result = await fleet_cluster.fleetctl(*argv)
        assert (result.code, result.out, result.err) == (0, f"fleetctl version {__version__}\n", "")

    fleet_cluster.write_unit("hello.service", HELLO)
    verify = await fleet_cluster.fleetctl("verify", "hello.service")
    assert (verify.code, verify.out, verify.err) == (2, "", SIGNING_DEPRECATED + "\n")


# ---------------------------------------------------------------- one unit through its states


async def test_submit_load_start_one_unit(fleet_cluster: Cluster) -> None:
    fleet_cluster.write_unit("hello.service", HELLO)
    digest = fleet_hash(HELLO)

    submit = await fleet_cluster.fleetctl("submit", "hello.service")
    assert (submit.code, submit.out, submit.err) == (0, "Unit hello.service inactive\n", "")
    files = await fleet_cluster.fleetctl("list-unit-files")
    assert (files.code, files.err) == (0, "")
    assert files.out == (
        "UNIT\t\tHASH\tDSTATE\t\tSTATE\t\tTARGET\n"
        f"hello.service\t{digest[:7]}\tinactive\tinactive\t-\n"
    )
    units = await fleet_cluster.fleetctl("list-units")
    assert (units.code, units.out, units.err) == (0, "UNIT\tMACHINE\tACTIVE\tSUB\n", "")
    again = await fleet_cluster.fleetctl("submit", "hello.service")
    assert (again.code, again.out, again.err) == (0, "", "")

    load = await fleet_cluster.fleetctl("load", "hello.service")
    assert (load.code, load.err) == (0, "")
    assert load.out == f"Unit hello.service loaded on {legend(WEB)}\n"
    files = await fleet_cluster.fleetctl("list-unit-files")
    assert files.out == (
        "UNIT\t\tHASH\tDSTATE\tSTATE\tTARGET\n"
        f"hello.service\t{digest[:7]}\tloaded\tloaded\t{legend(WEB)}\n"
    )
    units = await fleet_cluster.fleetctl("list-units")
    assert units.out == (
        f"UNIT\t\tMACHINE\t\t\tACTIVE\t\tSUB\nhello.service\t{legend(WEB)}\tinactive\tdead\n"
    )

    start = await fleet_cluster.fleetctl("start", "hello.service")
    assert (start.code, start.err) == (0, "")
    assert start.out == f"Unit hello.service launched on {legend(WEB)}\n"
    again = await fleet_cluster.fleetctl("start", "hello.service")
    assert (again.code, again.out, again.err) == (0, "", "")  # already launched: skipped
    units = await fleet_cluster.fleetctl("list-units")
    assert units.out == (
        f"UNIT\t\tMACHINE\t\t\tACTIVE\tSUB\nhello.service\t{legend(WEB)}\tactive\trunning\n"
    )
    load = await fleet_cluster.fleetctl("load", "hello.service")  # launched -> loaded
    assert (load.code, load.out, load.err) == (
        0,
        f"Unit hello.service loaded on {legend(WEB)}\n",
        "",
    )
    start = await fleet_cluster.fleetctl("start", "hello.service")  # and back
    assert (start.code, start.out, start.err) == (
        0,
        f"Unit hello.service launched on {legend(WEB)}\n",
        "",
    )
    full = await fleet_cluster.fleetctl(
        "list-units", "--full", "--fields", "unit,machine,load,hash"
    )
    assert (full.code, full.err) == (0, "")
    assert full.out == (
        f"UNIT\t\tMACHINE\t\t\t\t\t\tLOAD\tHASH\nhello.service\t{WEB}/127.0.0.1\tloaded\t{digest}\n"
    )

    placements = await fleet_cluster.placements()
    assert list(placements) == ["hello.service"]
    (placement,) = placements["hello.service"].values()
    assert (placement.machine, placement.hash, placement.desired) == (
        WEB,
        digest,
        JobState.LAUNCHED,
    )


async def test_cat_prints_the_registry_copy(fleet_cluster: Cluster) -> None:
    fleet_cluster.write_unit("hello.service", HELLO)
    fleet_cluster.write_unit("web@.service", WEB_TEMPLATE)
    submit = await fleet_cluster.fleetctl("submit", "hello.service", "web@.service")
    assert (submit.code, submit.err) == (0, "")
    assert submit.out == "Unit hello.service inactive\nUnit web@.service inactive\n"
    (fleet_cluster.workdir / "hello.service").unlink()  # cat reads the registry, not the file

    hello = await fleet_cluster.fleetctl("cat", "hello.service")
    assert (hello.code, hello.out, hello.err) == (0, HELLO, "")
    template = await fleet_cluster.fleetctl("cat", "web@.service")
    assert (template.code, template.out, template.err) == (0, WEB_TEMPLATE, "")

    missing = await fleet_cluster.fleetctl("cat", "nope.service")
    assert (missing.code, missing.out, missing.err) == (1, "", "Unit nope.service not found\n")
    for argv in (["cat"], ["cat", "hello.service", "web@.service"]):
        wrong = await fleet_cluster.fleetctl(*argv)
        assert (wrong.code, wrong.out, wrong.err) == (1, "", "One unit file must be provided\n")


# ---------------------------------------------------------------- the whole set of units


async def test_start_the_set_then_list_it(fleet_cluster: Cluster) -> None:
    await start_the_set(fleet_cluster)

    files = await fleet_cluster.fleetctl("list-unit-files")
    assert (files.code, files.err) == (0, "")
    assert files.out == (
        "UNIT\t\tHASH\tDSTATE\t\tSTATE\t\tTARGET\n"
        f"db.service\t{short_hash('db.service')}\tlaunched\tlaunched\t{legend(DB1)}\n"
        f"global.service\t{short_hash('global.service')}\tlaunched\t-\t\tglobal\n"
        f"hello.service\t{short_hash('hello.service')}\tlaunched\tlaunched\t{legend(WEB)}\n"
        f"pair-a.service\t{short_hash('pair-a.service')}\tlaunched\tlaunched\t{legend(DB2)}\n"
        f"pair-b.service\t{short_hash('pair-b.service')}\tlaunched\tlaunched\t{legend(DB2)}\n"
        f"web@1.service\t{short_hash('web@1.service')}\tlaunched\tlaunched\t{legend(WEB)}\n"
        f"web@2.service\t{short_hash('web@2.service')}\tlaunched\tinactive\t-\n"
    )

    units = await fleet_cluster.fleetctl("list-units")
    assert (units.code, units.err) == (0, "")
    assert units.out == (
        "UNIT\t\tMACHINE\t\t\tACTIVE\tSUB\n"
        f"db.service\t{legend(DB1)}\tactive\trunning\n"
        f"global.service\t{legend(WEB)}\tactive\trunning\n"
        f"global.service\t{legend(DB1)}\tactive\trunning\n"
        f"global.service\t{legend(DB2)}\tactive\trunning\n"
        f"hello.service\t{legend(WEB)}\tactive\trunning\n"
        f"pair-a.service\t{legend(DB2)}\tactive\trunning\n"
        f"pair-b.service\t{legend(DB2)}\tactive\trunning\n"
        f"web@1.service\t{legend(WEB)}\tactive\trunning\n"
    )

    described = await fleet_cluster.fleetctl(
        "list-unit-files", "--no-legend", "--fields", "unit,global,desc"
    )
    assert (described.code, described.err) == (0, "")
    assert described.out == (
        "db.service\tfalse\tDatabase\n"
        "global.service\ttrue\tEverywhere\n"
        "hello.service\tfalse\tHello World\n"
        "pair-a.service\tfalse\tPair leader\n"
        "pair-b.service\tfalse\tPair follower\n"
        "web@1.service\tfalse\tWeb server\n"
        "web@2.service\tfalse\tWeb server\n"
    )

    as_json = await fleet_cluster.fleetctl(
        "--output", "json", "list-unit-files", "--fields", "unit,state,target"
    )
    assert (as_json.code, as_json.err) == (0, "")
    assert json.loads(as_json.out) == {
        "command": "list-unit-files",
        "ok": True,
        "unitFiles": [
            {"unit": "db.service", "state": "launched", "target": DB1},
            {"unit": "global.service", "state": None, "target": "global"},
            {"unit": "hello.service", "state": "launched", "target": WEB},
            {"unit": "pair-a.service", "state": "launched", "target": DB2},
            {"unit": "pair-b.service", "state": "launched", "target": DB2},
            {"unit": "web@1.service", "state": "launched", "target": WEB},
            {"unit": "web@2.service", "state": "inactive", "target": None},
        ],
        "errors": [],
        "warnings": [],
    }


def status_block(name: str, description: str, machine: str, text: str, active: str) -> str:
    sub = {"active": "running", "inactive": "dead"}[active]
    current = "-" if name == "global.service" else ("launched" if active == "active" else "loaded")
    desired = "launched" if active == "active" else "loaded"
    return (
        f"{name} - {description}\n"
        "     Loaded: loaded\n"
        f"     Active: {active} ({sub})\n"
        f"    Machine: {machine}/127.0.0.1\n"
        f"      State: {current} (desired: {desired})\n"
        f"       Hash: {fleet_hash(text)}\n"
    )


async def test_status_of_placed_global_and_unplaceable_units(fleet_cluster: Cluster) -> None:
    await start_the_set(fleet_cluster)

    two = await fleet_cluster.fleetctl("status", "hello.service", "db.service")
    assert (two.code, two.err) == (0, "")
    assert two.out == (
        status_block("hello.service", "Hello World", WEB, HELLO, "active")
        + "\n"
        + status_block("db.service", "Database", DB1, DB, "active")
    )

    everywhere = await fleet_cluster.fleetctl("status", "global.service")
    assert (everywhere.code, everywhere.err) == (0, "")
    assert everywhere.out == "\n".join(
        status_block("global.service", "Everywhere", machine, GLOBAL, "active")
        for machine in (WEB, DB1, DB2)
    )

    unplaced = await fleet_cluster.fleetctl("status", "web@2.service")
    assert unplaced.code == 1
    assert unplaced.out == (
        "web@2.service - Web server\n"
        "     Loaded: -\n"
        "     Active: -\n"
        "    Machine: -\n"
        "      State: inactive (desired: launched)\n"
        f"       Hash: {fleet_hash(WEB_TEMPLATE)}\n"
        f"Unplaceable: {WEB2_REASONS[0]}\n"
        f"             {WEB2_REASONS[1]}\n"
    )
    assert unplaced.err == "Unit web@2.service does not appear to be loaded.\n"

    missing = await fleet_cluster.fleetctl("status", "hello.service", "nope.service")
    assert missing.code == 1
    assert missing.out == status_block("hello.service", "Hello World", WEB, HELLO, "active")
    assert missing.err == "Unit nope.service does not exist.\n"

    none = await fleet_cluster.fleetctl("status")
    assert (none.code, none.out, none.err) == (0, "", "No units given\n")


# ---------------------------------------------------------------- stop, unload, destroy


async def test_stop_unload_destroy(fleet_cluster: Cluster) -> None:
    fleet_cluster.write_unit("hello.service", HELLO)
    fleet_cluster.write_unit("global.service", GLOBAL)
    fleet_cluster.write_unit("db.service", DB)
    start = await fleet_cluster.fleetctl("start", "hello.service", "global.service")
    assert (start.code, start.err) == (0, "")
    assert start.out == (
        "Unit hello.service inactive\n"
        "Unit global.service inactive\n"
        "Triggered global unit global.service start\n"
        f"Unit hello.service launched on {legend(WEB)}\n"
    )

    stop = await fleet_cluster.fleetctl("stop", "hello.service", "global.service")
    assert stop.code == 0
    assert stop.out == (
        f"Triggered global unit global.service stop\nUnit hello.service loaded on {legend(WEB)}\n"
    )
    assert stop.err == "Successfully stopped units [hello.service].\n"
    again = await fleet_cluster.fleetctl("stop", "hello.service")
    assert (again.code, again.out, again.err) == (0, "", "Successfully stopped units [].\n")
    await wait_until(lambda: fleet_cluster.all_stopped(4), "every unit stopped")
    units = await fleet_cluster.fleetctl("list-units")
    assert units.out == (
        "UNIT\t\tMACHINE\t\t\tACTIVE\t\tSUB\n"
        f"global.service\t{legend(WEB)}\tinactive\tdead\n"
        f"global.service\t{legend(DB1)}\tinactive\tdead\n"
        f"global.service\t{legend(DB2)}\tinactive\tdead\n"
        f"hello.service\t{legend(WEB)}\tinactive\tdead\n"
    )
    status = await fleet_cluster.fleetctl("status", "hello.service")
    assert (status.code, status.err) == (3, "")  # loaded but not active, as systemctl says
    assert status.out == status_block("hello.service", "Hello World", WEB, HELLO, "inactive")

    missing = await fleet_cluster.fleetctl("stop", "nope.service")
    assert (missing.code, missing.out, missing.err) == (0, "", "Units not found in registry\n")
    submit = await fleet_cluster.fleetctl("submit", "db.service")
    assert (submit.code, submit.out) == (0, "Unit db.service inactive\n")
    inactive = await fleet_cluster.fleetctl("stop", "db.service", "hello.service")
    assert (inactive.code, inactive.out) == (1, "")
    assert inactive.err == "Unable to stop unit db.service in state inactive\n"

    unload = await fleet_cluster.fleetctl("unload", "hello.service", "global.service")
    assert unload.code == 0
    assert unload.out == (
        "Triggered global unit global.service unload\nUnit hello.service inactive\n"
    )
    assert unload.err == "Successfully unloaded units [hello.service].\n"
    again = await fleet_cluster.fleetctl("unload", "hello.service")
    assert (again.code, again.out, again.err) == (0, "", "Successfully unloaded units [].\n")
    await wait_until(fleet_cluster.nothing_scheduled, "every unit unscheduled")
    units = await fleet_cluster.fleetctl("list-units")
    assert units.out == "UNIT\tMACHINE\tACTIVE\tSUB\n"

    destroy = await fleet_cluster.fleetctl(
        "destroy", "hello.service", "nope.service", "global.service", "db.service"
    )
    assert (destroy.code, destroy.err) == (0, "")
    assert destroy.out == (
        "Destroyed db.service\nDestroyed global.service\nDestroyed hello.service\n"
    )
    files = await fleet_cluster.fleetctl("list-unit-files")
    assert (files.code, files.out, files.err) == (0, "UNIT\tHASH\tDSTATE\tSTATE\tTARGET\n", "")
    assert await fleet_cluster.unit_names() == []
    none = await fleet_cluster.fleetctl("destroy")
    assert (none.code, none.out, none.err) == (0, "", "No units given\n")


# ---------------------------------------------------------------- refusals, templates, --replace


async def test_start_refuses_what_cannot_become_a_unit(fleet_cluster: Cluster) -> None:
    fleet_cluster.write_unit("web@.service", WEB_TEMPLATE)
    template = await fleet_cluster.fleetctl("start", "web@.service")
    assert (template.code, template.out) == (1, "")
    assert template.err == 'Error creating units: cannot activate template "web@.service"\n'

    missing = await fleet_cluster.fleetctl("start", "missing.service")
    assert (missing.code, missing.out) == (1, "")
    assert missing.err == (
        "Error creating units: unable to find Unit(missing.service) in Registry or on filesystem\n"
    )
    glob = await fleet_cluster.fleetctl("start", "--no-block", "foo*")  # a quoted glob
    assert (glob.code, glob.out) == (1, "")
    assert glob.err == (
        "Error creating units: unable to find Unit(foo*.service) in Registry or on filesystem\n"
    )
    fleet_cluster.write_unit("both.service", "[Service]\nExecStart=/bin/true\n[X-Fleet]\n"
                             "MachineID=abc\nConflicts=x*\n")  # fmt: skip
    options = await fleet_cluster.fleetctl("start", "both.service")
    assert (options.code, options.out) == (1, "")
    # fleet's ValidateOptions' words, without a `unit X: ` of pyfleet's own
    assert options.err == "Error creating units: MachineID cannot be used with Conflicts\n"
    assert await fleet_cluster.unit_names() == []


async def test_instance_from_the_registrys_template(fleet_cluster: Cluster) -> None:
    fleet_cluster.write_unit("web@.service", WEB_TEMPLATE)
    submit = await fleet_cluster.fleetctl("submit", "web@.service")
    assert (submit.code, submit.out, submit.err) == (0, "Unit web@.service inactive\n", "")
    (fleet_cluster.workdir / "web@.service").unlink()

    start = await fleet_cluster.fleetctl("start", "web@7.service")
    assert (start.code, start.err) == (0, "")
    assert start.out == (
        f"Unit web@7.service inactive\nUnit web@7.service launched on {legend(WEB)}\n"
    )
    cat = await fleet_cluster.fleetctl("cat", "web@7.service")
    assert cat.out == WEB_TEMPLATE


async def test_replace_a_changed_unit_file(fleet_cluster: Cluster) -> None:
    fleet_cluster.write_unit("hello.service", HELLO)
    start = await fleet_cluster.fleetctl("start", "hello.service")
    assert start.out == (
        f"Unit hello.service inactive\nUnit hello.service launched on {legend(WEB)}\n"
    )
    fleet_cluster.write_unit("hello.service", HELLO_CHANGED)

    unchanged = await fleet_cluster.fleetctl("start", "hello.service")
    assert (unchanged.code, unchanged.out) == (0, "")
    assert unchanged.err == (
        "WARNING: Unit hello.service in registry differs from local unit file hello.service. "
        "Add --replace to override.\n"
    )
    refused = await fleet_cluster.fleetctl("submit", "--replace", "hello.service")
    assert (refused.code, refused.out) == (0, "")
    assert refused.err == (
        "Warning: can not replace Unit(hello.service) in state 'launched', "
        "use the appropriate command\n"
    )
    assert (await fleet_cluster.fleetctl("cat", "hello.service")).out == HELLO

    replaced = await fleet_cluster.fleetctl("start", "--replace", "hello.service")
    assert (replaced.code, replaced.err) == (0, "")
    assert replaced.out == (
        f"Unit hello.service inactive\nUnit hello.service launched on {legend(WEB)}\n"
    )
    cat = await fleet_cluster.fleetctl("cat", "hello.service")
    assert (cat.code, cat.out) == (0, HELLO_CHANGED)
    new_hash = fleet_hash(HELLO_CHANGED)
    (placement,) = (await fleet_cluster.placements())["hello.service"].values()
    assert (placement.machine, placement.hash) == (WEB, new_hash)
    (state, _lease) = (await fleet_cluster.states())["hello.service", WEB]
    assert (state.active_state, state.hash) == ("active", new_hash)

    files = await fleet_cluster.fleetctl("list-unit-files", "--full", "--fields", "unit,hash,desc")
    assert files.out == (
        f"UNIT\t\tHASH\t\t\t\t\t\tDESC\nhello.service\t{new_hash}\tHello World, again\n"
    )
    same = await fleet_cluster.fleetctl("start", "--replace", "hello.service")
    assert (same.code, same.err) == (0, "")
    assert same.out == "Found same Unit(hello.service) in Registry, nothing to do\n"


# ---------------------------------------------------------------- an endpoint nobody serves


# httpcore (1.0.9) does not close its socket when a unix connect fails; the leak is its own, not
# fleetctl's (tests/fleetctl/test_client.py makes the same allowance).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_an_endpoint_nobody_serves(fleet_cluster: Cluster) -> None:
    gone = fleet_cluster.socket_path + ".gone"
    units = await fleet_cluster.run("--endpoint", f"unix://{gone}", "list-units")
    assert (units.code, units.out) == (1, "")
    first, hint = units.err.splitlines()
    assert first.startswith(
        f"Error retrieving list of unit states from fleet API (cannot reach unix://{gone}: "
    )
    assert hint == (
        "Possible issues: etcd is unhealthy, fleetd is not running, or fleetd does not serve "
        f"its API at unix://{gone}"
    )
    gc.collect()  # surface the leaked socket's warning here, not in a later test
