"""The fake systemd behaves as the agent relies on systemd to behave (and as the mock serves it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.systemd.fake import BAD_UNIT_SETTING, NO_SUCH_UNIT, FakeSystemd, FakeUnitManager
from agent.systemd.port import SystemdUnavailable, UnitRefused, UnitStatus

RUNS = "[Service]\nExecStart=/bin/sleep infinity\n"


def linked(systemd: FakeSystemd, directory: Path, name: str, text: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(text)
    systemd.link(directory / name)


@pytest.mark.parametrize(
    ("text", "result", "state"),
    [
        (RUNS, "done", ("active", "running")),
        ("[Service]\nExecStart=/bin/false\n", "failed", ("failed", "failed")),
        ("[Service]\nExecStart=-/usr/bin/false --x\n", "failed", ("failed", "failed")),
        ("[Service]\nType=oneshot\nExecStart=/bin/true\n", "done", ("inactive", "dead")),
        (
            "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n",
            "done",
            ("active", "exited"),
        ),
        ("[Unit]\nDescription=x\n\n[Timer]\nOnCalendar=daily\n", "done", ("active", "running")),
    ],
)
def test_what_a_start_does(tmp_path: Path, text: str, result: str, state: tuple[str, str]) -> None:
    systemd = FakeSystemd()
    name = "t.timer" if "[Timer]" in text else "u.service"
    linked(systemd, tmp_path, name, text)
    assert systemd.start(name) == result
    status = systemd.status(name)
    assert (status.active_state, status.sub_state) == state
    assert systemd.starts[name] == 1


def test_refusals_and_no_restart(tmp_path: Path) -> None:
    systemd = FakeSystemd()
    with pytest.raises(UnitRefused) as refused:
        systemd.start("ghost.service")
    assert refused.value.error_name == NO_SUCH_UNIT
    assert "ghost.service" not in systemd.units  # not kept around
    linked(systemd, tmp_path, "bad.service", "[Unit]\nDescription=no ExecStart\n")
    with pytest.raises(UnitRefused) as refused:
        systemd.start("bad.service")
    assert refused.value.error_name == BAD_UNIT_SETTING
    assert systemd.status("bad.service").load_state == "bad-setting"
    assert systemd.status("bad.service").load_error == (
        "Unit bad.service has a bad unit file setting."
    )
    linked(systemd, tmp_path, "web.service", RUNS)
    systemd.start("web.service")
    systemd.start("web.service")
    assert systemd.starts["web.service"] == 1  # starting an active unit does not restart it


def test_stop_reset_and_reload(tmp_path: Path) -> None:
    systemd = FakeSystemd()
    heard: list[str | None] = []
    systemd.add_listener(heard.append)
    with pytest.raises(UnitRefused, match="not loaded"):
        systemd.stop("ghost.service")
    linked(systemd, tmp_path, "web.service", RUNS)
    systemd.start("web.service")
    systemd.crash("web.service")
    assert systemd.stop("web.service") == "done"
    assert systemd.status("web.service").active_state == "failed"  # a stop keeps it failed
    systemd.reset_failed("web.service")
    assert systemd.status("web.service") == UnitStatus("web.service", "loaded", "inactive", "dead")
    systemd.unlink("web.service")
    (tmp_path / "web.service").unlink()
    systemd.reload()
    assert "web.service" not in systemd.units  # nothing left of it: collected
    assert heard[-1] is None  # a reload: everything may have changed
    assert "web.service" in heard


async def test_manager_notifies_and_fails_on_demand(tmp_path: Path) -> None:
    manager = FakeUnitManager(tmp_path / "units")
    with manager.subscribe() as feed:
        await manager.write_unit_file("a.service", RUNS)
        assert (await feed.next()).names == {"a.service"}
        await manager.link_unit("a.service")
        await manager.reload()
        assert (await feed.next()).everything
        stop = await manager.stop_unit("never-loaded.service")  # not loaded: already done
        assert await stop.result() == "done"
        manager.refuse[("start", "a.service")] = UnitRefused("StartUnit", "a.service", "x.Y", "no")
        with pytest.raises(UnitRefused):
            await manager.start_unit("a.service")
        manager.unavailable = True
        with pytest.raises(SystemdUnavailable):
            await manager.unit_states(["a.service"])
    manager.close()


async def test_a_container_unit_runs_from_its_dropin(tmp_path: Path) -> None:
    manager = FakeUnitManager(tmp_path / "units", dropins=tmp_path / "system")
    await manager.write_unit_file("c.service", "[X-Container]\nImage=example.com/hello\n")
    await manager.link_unit("c.service")
    await manager.reload()
    job = await manager.start_unit("c.service")
    assert await job.result() == "done"
    assert (await manager.unit_states(["c.service"]))["c.service"].active_state == "active"
    without = FakeUnitManager(tmp_path / "plain")  # no drop-ins: systemd finds no ExecStart
    await without.write_unit_file("c.service", "[X-Container]\nImage=example.com/hello\n")
    await without.link_unit("c.service")
    await without.reload()
    assert (await without.unit_states(["c.service"]))["c.service"].load_state == "bad-setting"
