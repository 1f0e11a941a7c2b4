"""Bad input on real systemd: a unit whose `ExecStart` fails, a unit file systemd rejects, and
unit names that cannot be files of the units directory.

* A failing unit is `failed` in `fleetctl list-units` and started once: the agent's later passes
  leave it alone (same invocation, same start time, no restart).
* A unit file systemd rejects is reported with systemd's verdict (`bad-setting`) and reason (its
  `LoadError` and the journal's line on what is wrong) in `fleetctl status` and the API; the
  agent logs systemd's error, a blocking `fleetctl start` of it fails with that verdict instead
  of waiting forever, and the unit does not keep the agent and systemd busy.
* A name that would escape `/run/fleet/units/` (or hide among the agent's own dot files) is
  refused by the API, and nothing is stored or written anywhere.

The tests share the session's cluster (`cluster` fixture), which destroys their units after each.
"""

from __future__ import annotations

import pytest

from tests.rig.cluster import NODE_NAMES, QUIET_CALLS, QUIET_WINDOW, Cluster, service
from tests.rig.nodes import TEST_TIMEOUT, run_in, wait_for

pytestmark = pytest.mark.timeout(TEST_TIMEOUT)

REJECTED_START_WITHIN = 15.0
"""Seconds a blocking `fleetctl start` may take to give up on a unit systemd rejects: a few of
its 2 s attempt windows."""
REASON_WITHIN = 15.0
"""Seconds for the journal's line on a refused unit to reach its published state."""
ONCE = ("InvocationID", "ExecMainStartTimestampMonotonic", "NRestarts", "ActiveState")
"""What shows whether systemd started a unit again: a new invocation, a new start time, a
restart, another state."""


def test_a_unit_whose_exec_start_fails_is_failed_and_started_only_once(cluster: Cluster) -> None:
    node2 = cluster.machines["node2"]
    cluster.write_unit(
        "crash.service", service("Crashes", exec_start="/bin/false", MachineID=node2)
    )
    cluster.fleetctl("start", "--no-block", "crash.service")

    (row,) = cluster.wait_rows(
        "crash.service",
        lambda rows: [(r.active, r.sub) for r in rows] == [("failed", "failed")],
        "failed",
    )
    assert (row.machine, row.load) == (node2, "loaded")
    first = cluster.systemd("node2", "crash.service")
    assert (first["ActiveState"], first["NRestarts"]) == ("failed", "0")
    assert int(first["ExecMainStartTimestampMonotonic"]) > 0

    # Two more reconcile passes of node2's agent: each change to node2's schedule runs one (its
    # safety tick is 30 s), and each pass plans over every local unit. The tick units running
    # proves the passes happened after the failure.
    for tick in ("tick1.service", "tick2.service"):
        cluster.write_unit(tick, service("Tick", MachineID=node2))
        cluster.fleetctl("start", tick)
        assert cluster.is_active("node2", tick) == "active"

    again = cluster.systemd("node2", "crash.service")
    assert {key: again[key] for key in ONCE} == {key: first[key] for key in ONCE}
    starts = [e for e in cluster.fleetd_log("node2", "crash.service") if e.get("task") == "start"]
    assert len(starts) == 1, starts
    assert [(r.active, r.sub) for r in cluster.rows_of("crash.service")] == [("failed", "failed")]


def rejected(cluster: Cluster) -> str:
    """Start a unit whose ExecStart systemd refuses to load on node3; returns node3's id."""
    node3 = cluster.machines["node3"]
    cluster.write_unit(
        "rejected.service", service("Rejected", exec_start="relative/path", MachineID=node3)
    )
    cluster.fleetctl("start", "--no-block", "rejected.service")
    cluster.wait_rows(
        "rejected.service",
        lambda rows: [(r.load, r.active) for r in rows] == [("bad-setting", "inactive")],
        "bad-setting",
    )
    return node3


def _seen(status: str) -> tuple[bool, str]:
    return "relative/path" in status, status


def test_a_unit_file_systemd_rejects_is_reported_with_systemds_verdict(cluster: Cluster) -> None:
    node3 = rejected(cluster)

    (row,) = cluster.rows_of("rejected.service")
    assert (row.machine, row.load, row.active, row.sub) == (
        node3,
        "bad-setting",
        "inactive",
        "dead",
    )
    assert cluster.systemd("node3", "rejected.service")["LoadState"] == "bad-setting"
    # systemd's reason, as `systemctl status` gives it, with the journal's line that says what
    # is wrong: in `fleetctl status` and in the API's state.
    status = wait_for(
        lambda: _seen(cluster.fleetctl("status", "rejected.service", check=False).stdout),
        "systemd's reason in fleetctl status",
        within=REASON_WITHIN,
    )
    assert "Loaded: bad-setting (Unit rejected.service has a bad unit file setting: " in status
    (state,) = [s for s in cluster.states() if s["name"] == "rejected.service"]
    assert state["systemdLoadError"].endswith(
        "Neither a valid executable name nor an absolute path: relative/path"
    ), state
    refusals = [e for e in cluster.fleetd_log("node3", "rejected.service") if e.get("error_name")]
    assert [e["error_name"] for e in refusals] == ["org.freedesktop.systemd1.BadUnitSetting"]
    assert "bad unit file setting" in refusals[0]["error"]


def test_fleetctl_start_of_a_unit_systemd_rejects_fails_instead_of_waiting_forever(
    cluster: Cluster,
) -> None:
    node3 = cluster.machines["node3"]
    cluster.write_unit(
        "rejected.service", service("Rejected", exec_start="relative/path", MachineID=node3)
    )
    # Blocking forever is fleetctl's default; a unit systemd will never start must end the wait
    # with systemd's verdict, as an unplaceable unit ends it with the engine's reasons.
    done = cluster.fleetctl("start", "rejected.service", check=False, within=REJECTED_START_WITHIN)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "bad-setting" in done.stderr, done.stderr


def test_a_unit_file_systemd_rejects_leaves_the_agent_and_systemd_idle(cluster: Cluster) -> None:
    rejected(cluster)

    calls = cluster.bus_calls("node3", "ListUnitsByNames", QUIET_WINDOW)
    _, complaints = run_in(
        cluster.nodes["node3"],
        ["sh", "-c", "journalctl _PID=1 -o cat | grep -c 'rejected.service: Unit configuration'"],
    )
    assert calls <= QUIET_CALLS, (
        f"{calls} ListUnitsByNames calls to systemd in {QUIET_WINDOW} s while nothing changed; "
        f"systemd logged the unit's fatal error {complaints} times"
    )


SLEEPER = {
    "desiredState": "launched",
    "options": [{"section": "Service", "name": "ExecStart", "value": "/bin/sleep infinity"}],
}


@pytest.mark.parametrize(
    ("path", "body_name", "status"),
    [
        # A slash, even encoded, makes the path name no unit resource: 404, as fleet's ServeMux
        # (docs/api.md: `/units/a/b` is 404).
        pytest.param("..%2F..%2Fetc%2Fevil.service", None, 404, id="encoded-slashes"),
        pytest.param("%2E%2E%2Fevil.service", None, 404, id="encoded-dot-dot-slash"),
        pytest.param("evil.service", "../../etc/evil.service", 400, id="escaping-body-name"),
        # Valid for fleet's rules, refused by the agent (docs/agent.md: a name starting with `.`
        # is never written): the API must refuse it too, before the unit is stored.
        pytest.param(".evil.service", None, 400, id="hidden-file"),
        pytest.param("..evil.service", None, 400, id="dot-dot-prefix"),
    ],
)
def test_a_unit_name_the_units_directory_cannot_hold_is_refused_before_anything_is_written(
    cluster: Cluster, path: str, body_name: str | None, status: int
) -> None:
    body = dict(SLEEPER, **({"name": body_name} if body_name else {}))
    answer = cluster.api("PUT", "/fleet/v1/units/" + path, body)

    stored = [name for name in cluster.unit_names() if "evil" in name]
    written = {
        node: run_in(cluster.nodes[node], ["find", "/run", "/etc", "-name", "*evil*"])[1]
        for node in NODE_NAMES
    }
    assert answer[0] == status, f"{answer}; stored: {stored}"
    assert stored == []
    assert written == dict.fromkeys(NODE_NAMES, "")
