"""The units the integration tests start, and the placements the engine must give them.

Every unit file is written in fleet's canonical form (sections in order, one blank line between
them, no comments), so its text *is* its serialization: `fleetctl cat` must print it back byte for
byte, and its fleet hash is the SHA-1 of the text, computed here without pyfleet's code.

The requirements are chosen so that every placement is forced, whatever the timing of the
engine's passes (see `start_the_set`):
* `hello.service` (no requirement) is started alone on an empty cluster: the least-loaded
  machine with the lowest id, `WEB`;
* `global.service` runs on all three machines;
* `pair-a.service` is pinned to `DB2` (`MachineID`) and `pair-b.service` follows it (`MachineOf`);
* `db.service` (`MachineMetadata=role=db`) goes to `DB1`: `DB2` always carries at least as many
  units (the global unit and the pair), and ties go to the lower id;
* `web@.service` wants `role=web`, which only `WEB` has, and conflicts with its own instances:
  `web@1.service` (placed first, by name) gets `WEB`, `web@2.service` can never be placed.
"""

from __future__ import annotations

import hashlib

from tests.integration.cluster import DB1, DB2, WEB, Cluster, legend

HELLO = """\
[Unit]
Description=Hello World

[Service]
ExecStart=/bin/sh -c "while true; do echo Hello; sleep 1; done"
"""
HELLO_CHANGED = """\
[Unit]
Description=Hello World, again

[Service]
ExecStart=/bin/sh -c "while true; do echo Hello again; sleep 1; done"
"""
GLOBAL = """\
[Unit]
Description=Everywhere

[Service]
ExecStart=/usr/bin/monitor

[X-Fleet]
Global=true
"""
PAIR_A = f"""\
[Unit]
Description=Pair leader

[Service]
ExecStart=/usr/bin/leader

[X-Fleet]
MachineID={DB2[:8]}
"""
PAIR_B = """\
[Unit]
Description=Pair follower

[Service]
ExecStart=/usr/bin/follower

[X-Fleet]
MachineOf=pair-a.service
"""
DB = """\
[Unit]
Description=Database

[Service]
ExecStart=/usr/bin/db

[X-Fleet]
MachineMetadata=role=db
"""
WEB_TEMPLATE = """\
[Unit]
Description=Web server

[Service]
ExecStart=/usr/bin/web --instance %i

[X-Fleet]
MachineMetadata=role=web
Conflicts=web@*.service
"""
NOSUCH = """\
[Unit]
Description=Nowhere

[Service]
ExecStart=/usr/bin/nowhere

[X-Fleet]
MachineMetadata=role=nosuch
"""

FILES = {
    "hello.service": HELLO,
    "global.service": GLOBAL,
    "pair-a.service": PAIR_A,
    "pair-b.service": PAIR_B,
    "db.service": DB,
    "web@.service": WEB_TEMPLATE,
    "nosuch.service": NOSUCH,
}
"""Local unit files by name; instances of `web@.service` have no file of their own."""

TEXT_OF = {
    "hello.service": HELLO,
    "global.service": GLOBAL,
    "pair-a.service": PAIR_A,
    "pair-b.service": PAIR_B,
    "db.service": DB,
    "web@1.service": WEB_TEMPLATE,
    "web@2.service": WEB_TEMPLATE,
    "nosuch.service": NOSUCH,
}
"""Each unit's file text as the registry holds it (an instance has its template's)."""

EXPECTED_PLACEMENTS = {
    "hello.service": {WEB},
    "global.service": {WEB, DB1, DB2},
    "pair-a.service": {DB2},
    "pair-b.service": {DB2},
    "db.service": {DB1},
    "web@1.service": {WEB},
}
"""Where `start_the_set` must leave each unit (`web@2.service` nowhere)."""

WEB2_REASONS = (
    f"conflicts with web@1.service on {WEB[:8]}",
    "2 of 3 machines lack metadata role=web",
)
WEB2_ERROR = "unit web@2.service cannot be placed: " + "; ".join(WEB2_REASONS)
NOSUCH_REASON = "no machine has metadata role=nosuch"


def fleet_hash(text: str) -> str:
    """fleet's unit hash of a canonical unit file: SHA-1 of its text."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def short_hash(name: str) -> str:
    return fleet_hash(TEXT_OF[name])[:7]


def write_all(cluster: Cluster) -> None:
    for name, text in FILES.items():
        cluster.write_unit(name, text)


async def start_the_set(cluster: Cluster, *, over_tcp: bool = False) -> None:
    """Write every file, then start, in three commands: hello alone; the global unit, the pair
    and the db unit; the two web instances. Checks each command's exact output."""
    write_all(cluster)
    run = cluster.fleetctl_tcp if over_tcp else cluster.fleetctl
    hello = await run("start", "hello.service")
    assert (hello.code, hello.err) == (0, "")
    assert hello.out == (
        f"Unit hello.service inactive\nUnit hello.service launched on {legend(WEB)}\n"
    )

    several = await run("start", "global.service", "pair-a.service", "pair-b.service", "db.service")
    assert (several.code, several.err) == (0, "")
    created, waited = several.out.splitlines()[:5], several.out.splitlines()[5:]
    assert created == [
        "Unit global.service inactive",
        "Unit pair-a.service inactive",
        "Unit pair-b.service inactive",
        "Unit db.service inactive",
        "Triggered global unit global.service start",
    ]
    # the three waits end in whatever order the polls see them: compare as a set
    assert sorted(waited) == [
        f"Unit db.service launched on {legend(DB1)}",
        f"Unit pair-a.service launched on {legend(DB2)}",
        f"Unit pair-b.service launched on {legend(DB2)}",
    ]

    web = await run("start", "web@1.service", "web@2.service")
    assert web.code == 1
    assert web.out == (
        "Unit web@1.service inactive\n"
        "Unit web@2.service inactive\n"
        f"Unit web@1.service launched on {legend(WEB)}\n"
    )
    assert web.err == f"Error waiting for units: {WEB2_ERROR}\n"
