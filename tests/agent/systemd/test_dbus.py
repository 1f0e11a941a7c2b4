"""The dbus-fast adapter: its messages, its JobRemoved bookkeeping, and the adapter against a mock
systemd on a private dbus-daemon (connection, subscription, calls, signals, errors, the bound on
calls in flight, reconnection)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import structlog
from dbus_fast import MessageType

from agent.systemd.dbus import (
    MANAGER_INTERFACE,
    MANAGER_PATH,
    MATCH_RULES,
    SYSTEMD,
    DbusUnitManager,
    JobTracker,
    add_match_message,
    disable_message,
    link_message,
    list_units_message,
    manager_call,
    reset_failed_message,
    start_message,
    stop_message,
)
from agent.systemd.port import (
    JOB_DISCONNECTED,
    SystemdUnavailable,
    UnitRefused,
    UnitStatus,
    UnsafeUnitName,
)
from fleetd.runtime.backoff import Backoff
from tests.agent.bus import BusDaemon, MockManager, MockSystemd, unit_path
from tests.engine.cluster import wait_until

RUNS = "[Service]\nExecStart=/bin/sleep infinity\n"
FAILS = "[Service]\nExecStart=/bin/false\n"
BAD = "[Unit]\nDescription=no ExecStart\n"


def fast_backoff() -> Backoff:
    return Backoff(initial=0.01, maximum=0.05, rng=random.Random(1))


# ---- messages, without a bus


@pytest.mark.parametrize(
    ("message", "member", "signature", "body"),
    [
        (
            link_message(Path("/run/fleet/units/a.service")),
            "LinkUnitFiles",
            "asbb",
            [["/run/fleet/units/a.service"], True, True],
        ),
        (disable_message("a.service"), "DisableUnitFiles", "asb", [["a.service"], True]),
        (start_message("a.service"), "StartUnit", "ss", ["a.service", "replace"]),
        (stop_message("a.service"), "StopUnit", "ss", ["a.service", "replace"]),
        (reset_failed_message("a.service"), "ResetFailedUnit", "s", ["a.service"]),
        (
            list_units_message(["a.service", "b.service"]),
            "ListUnitsByNames",
            "as",
            [["a.service", "b.service"]],
        ),
        (manager_call("Reload"), "Reload", "", []),
        (manager_call("Subscribe"), "Subscribe", "", []),
    ],
)
def test_manager_messages(message: object, member: str, signature: str, body: list[object]) -> None:
    from dbus_fast import Message

    assert isinstance(message, Message)
    assert message.message_type is MessageType.METHOD_CALL
    assert (message.destination, message.path, message.interface) == (
        SYSTEMD,
        MANAGER_PATH,
        MANAGER_INTERFACE,
    )
    assert (message.member, message.signature, message.body) == (member, signature, body)


def test_match_rules_cover_the_manager_and_unit_properties() -> None:
    message = add_match_message(MATCH_RULES[0])
    assert (message.destination, message.member, message.signature) == (
        "org.freedesktop.DBus",
        "AddMatch",
        "s",
    )
    assert "interface='org.freedesktop.systemd1.Manager'" in MATCH_RULES[0]
    assert "member='PropertiesChanged'" in MATCH_RULES[1]
    assert "path_namespace='/org/freedesktop/systemd1/unit'" in MATCH_RULES[1]
    assert all("sender='org.freedesktop.systemd1'" in rule for rule in MATCH_RULES)


# ---- JobRemoved bookkeeping, without a bus


async def test_job_removed_before_the_reply_is_kept_for_it() -> None:
    jobs = JobTracker()
    jobs.call_started()
    assert jobs.removed("/job/1", "failed") is None  # the signal overtook the reply
    job = jobs.queued("a.service", "/job/1")
    assert job.done
    assert await job.result() == "failed"
    assert (jobs.buffered, jobs.waiting) == (0, 0)


async def test_job_removed_after_the_reply_resolves_the_job() -> None:
    jobs = JobTracker()
    jobs.call_started()
    job = jobs.queued("a.service", "/job/2")
    assert not job.done
    assert jobs.removed("/job/2", "done") == "a.service"
    assert await job.result() == "done"
    assert (jobs.buffered, jobs.waiting) == (0, 0)


async def test_other_jobs_are_buffered_only_while_a_call_is_in_flight() -> None:
    jobs = JobTracker(max_early=2)
    assert jobs.removed("/job/other", "done") is None
    assert jobs.buffered == 0  # nothing in flight: it cannot be ours
    jobs.call_started()
    jobs.call_started()
    for n in range(5):
        jobs.removed(f"/job/x{n}", "done")
    assert jobs.buffered == 2  # capped
    jobs.call_failed()
    assert jobs.buffered == 2  # one call still in flight
    jobs.queued("a.service", "/job/mine")
    assert jobs.buffered == 0  # no call in flight any more: dropped


async def test_disconnection_resolves_waiting_jobs() -> None:
    jobs = JobTracker()
    jobs.call_started()
    job = jobs.queued("a.service", "/job/3")
    jobs.disconnected()
    assert await job.result() == JOB_DISCONNECTED
    assert jobs.waiting == 0


# ---- against a mock systemd on a private bus


async def no_journal(unit: str) -> str:
    return ""


@contextlib.asynccontextmanager
async def connected(
    units_dir: Path,
    address: str,
    *,
    max_in_flight: int = 32,
    journal: Callable[[str], Awaitable[str]] = no_journal,
    max_pending_jobs: int = 128,
    job_slot_hold: float = 60.0,
) -> AsyncIterator[DbusUnitManager]:
    adapter = DbusUnitManager(
        units_dir,
        bus_address=address,
        backoff=fast_backoff(),
        max_in_flight=max_in_flight,
        journal=journal,
        max_pending_jobs=max_pending_jobs,
        job_slot_hold=job_slot_hold,
    )
    task = asyncio.create_task(adapter.run())
    try:
        async with asyncio.timeout(10):
            await adapter.wait_connected()
        yield adapter
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def changes_for(adapter: DbusUnitManager, action: Callable[[], object], name: str) -> None:
    """Run `action` and wait until the adapter's feed reports a change to `name`."""
    with adapter.subscribe() as feed:
        result = action()
        if asyncio.iscoroutine(result):
            await result
        async with asyncio.timeout(5):
            while name not in (await feed.next()).names:
                pass


async def test_connects_subscribes_and_runs_a_unit(
    units_dir: Path, bus_daemon: BusDaemon, mock_systemd: MockManager
) -> None:
    async with connected(units_dir, bus_daemon.address) as adapter:
        assert mock_systemd.subscribed == 1
        await adapter.write_unit_file("web.service", RUNS)
        assert (units_dir / "web.service").read_text() == RUNS
        assert (units_dir / "web.service").stat().st_mode & 0o777 == 0o644
        await adapter.link_unit("web.service")
        await adapter.reload()
        assert mock_systemd.job_removed_first
        job = await adapter.start_unit("web.service")
        async with asyncio.timeout(5):
            assert await job.result() == "done"
        assert adapter.jobs.buffered == 0
        assert await adapter.unit_states(["web.service", "nothing.service"]) == {
            "web.service": UnitStatus("web.service", "loaded", "active", "running"),
            "nothing.service": UnitStatus("nothing.service"),
        }
        assert ("LinkUnitFiles", ([str(units_dir / "web.service")], True, True)) in (
            mock_systemd.calls
        )
        assert ("StartUnit", ("web.service", "replace")) in mock_systemd.calls
        assert await adapter.list_unit_files() == {
            "web.service": "8385c9176f09a5ee3bbb88d45c6fc3f0b69d1f52"
        }


async def test_a_job_whose_signal_follows_the_reply(
    units_dir: Path, bus_daemon: BusDaemon, mock_systemd: MockManager
) -> None:
    mock_systemd.job_removed_first = False
    async with connected(units_dir, bus_daemon.address) as adapter:
        await adapter.write_unit_file("bad.service", FAILS)
        await adapter.link_unit("bad.service")
        job = await adapter.start_unit("bad.service")
        async with asyncio.timeout(5):
            assert await job.result() == "failed"
        assert (await adapter.unit_states(["bad.service"]))["bad.service"].active_state == "failed"


async def test_a_refused_unit_carries_systemds_load_error(
    units_dir: Path, bus_daemon: BusDaemon, mock_systemd: MockManager
) -> None:
    asked: list[str] = []

    async def journal(unit: str) -> str:
        asked.append(unit)
        return f"{unit}: Service has no ExecStart=, ExecStop=, or SuccessAction=. Refusing."

    async with connected(units_dir, bus_daemon.address, journal=journal) as adapter:
        await adapter.write_unit_file("noexec.service", "[Unit]\nDescription=no ExecStart\n")
        await adapter.link_unit("noexec.service")
        await adapter.write_unit_file("web.service", RUNS)
        await adapter.link_unit("web.service")
        states = await adapter.unit_states(["noexec.service", "web.service"])
        assert states["noexec.service"].load_state == "bad-setting"
        assert states["noexec.service"].load_error == (
            "Unit noexec.service has a bad unit file setting: noexec.service: Service has no"
            " ExecStart=, ExecStop=, or SuccessAction=. Refusing."
        )
        assert states["web.service"].load_error == ""
        assert asked == ["noexec.service"]  # the journal is read for refused units only


async def test_errors_are_systemds_own(
    units_dir: Path, bus_daemon: BusDaemon, mock_systemd: MockManager
) -> None:
    async with connected(units_dir, bus_daemon.address) as adapter:
        await adapter.write_unit_file("bad.service", BAD)
        await adapter.link_unit("bad.service")
        with pytest.raises(UnitRefused) as refused:
            await adapter.start_unit("bad.service")
        assert refused.value.error_name == "org.freedesktop.systemd1.BadUnitSetting"
        assert "bad unit file setting" in refused.value.message
        # Not loaded: nothing to stop or reset, which is not an error.
        job = await adapter.stop_unit("ghost.service")
        assert await job.result() == "done"
        await adapter.reset_failed("ghost.service")
        with pytest.raises(UnitRefused, match="No such file"):
            await adapter.link_unit("missing.service")


async def test_signals_become_change_notifications(
    units_dir: Path, bus_daemon: BusDaemon, mock_systemd: MockManager
) -> None:
    async with connected(units_dir, bus_daemon.address) as adapter:
        await adapter.write_unit_file("web.service", RUNS)
        await adapter.link_unit("web.service")
        await changes_for(adapter, lambda: adapter.start_unit("web.service"), "web.service")
        await adapter.unit_states(["web.service"])  # systemd's answer tells the unit's path
        # A property change alone (no job): the unit's main process dies.
        await changes_for(adapter, lambda: mock_systemd.model.crash("web.service"), "web.service")
        with adapter.subscribe() as feed:
            await adapter.reload()
            async with asyncio.timeout(5):
                while not (await feed.next()).everything:
                    pass


async def test_unsafe_names_are_refused_before_systemd_hears_of_them(
    units_dir: Path, bus_daemon: BusDaemon, mock_systemd: MockManager
) -> None:
    async with connected(units_dir, bus_daemon.address) as adapter:
        calls_before = list(mock_systemd.calls)
        for call in (
            lambda: adapter.write_unit_file("../escape.service", RUNS),
            lambda: adapter.link_unit("../escape.service"),
            lambda: adapter.start_unit("a/b.service"),
            lambda: adapter.stop_unit(".."),
        ):
            with pytest.raises(UnsafeUnitName):
                await call()
        assert mock_systemd.calls == calls_before
        assert not (units_dir.parent / "escape.service").exists()


async def test_at_most_max_in_flight_calls(
    units_dir: Path, bus_daemon: BusDaemon, mock_systemd: MockManager
) -> None:
    mock_systemd.gate = asyncio.Event()
    async with connected(units_dir, bus_daemon.address, max_in_flight=32) as adapter:
        calls = [asyncio.create_task(adapter.unit_states([f"u{i}.service"])) for i in range(100)]

        async def full() -> bool:
            return mock_systemd.listing == 32

        await wait_until(full, "32 calls to reach the mock")
        mock_systemd.gate.set()
        results = await asyncio.gather(*calls)
        assert mock_systemd.most_listing == 32
        assert [list(r) for r in results] == [[f"u{i}.service"] for i in range(100)]


async def test_reconnects_after_the_bus_goes_away(
    units_dir: Path, bus_daemon: BusDaemon, mock_systemd: MockManager
) -> None:
    mock_systemd.job_removed_first = False
    mock_systemd.gate = None
    with structlog.testing.capture_logs() as logs:
        async with connected(units_dir, bus_daemon.address) as adapter:
            with adapter.subscribe() as feed:
                bus_daemon.stop()

                async def lost() -> bool:
                    return not adapter.connected

                await wait_until(lost, "the adapter to notice the bus is gone")
                with pytest.raises(SystemdUnavailable):
                    await adapter.reload()
                bus_daemon.start()
                mock = MockSystemd(mock_systemd.model)
                manager = await mock.start(bus_daemon.address)
                try:

                    async def back() -> bool:
                        return adapter.connections == 2 and adapter.connected

                    await wait_until(back, "the adapter to reconnect", within=10)
                    assert manager.subscribed == 1
                    async with asyncio.timeout(5):
                        while not (await feed.next()).everything:
                            pass
                    await adapter.reload()
                finally:
                    await mock.stop()
    events = [e["event"] for e in logs]
    assert "systemd D-Bus connection lost, reconnecting" in events
    assert events.count("connected to systemd") == 2


async def test_keeps_retrying_while_the_bus_is_unreachable(units_dir: Path) -> None:
    daemon = BusDaemon()  # not started: its socket does not exist yet
    adapter = DbusUnitManager(units_dir, bus_address=daemon.address, backoff=fast_backoff())
    mock = MockSystemd()
    try:
        with structlog.testing.capture_logs() as logs:
            task = asyncio.create_task(adapter.run())

            async def retried() -> bool:
                unreachable = [
                    e for e in logs if e["event"] == "systemd D-Bus unreachable, retrying"
                ]
                return len(unreachable) >= 3

            await wait_until(retried, "three logged retries")
            assert not task.done()
            with pytest.raises(SystemdUnavailable, match="not connected"):
                await adapter.unit_states(["a.service"])
            daemon.start()
            await mock.start(daemon.address)
            async with asyncio.timeout(10):
                await adapter.wait_connected()
            assert await adapter.unit_states(["a.service"]) == {
                "a.service": UnitStatus("a.service")
            }
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        retry = next(e for e in logs if e["event"] == "systemd D-Bus unreachable, retrying")
        assert retry["address"] == daemon.address
        assert retry["log_level"] == "warning"
    finally:
        await mock.stop()
        daemon.cleanup()


def test_unit_paths_follow_systemds_escaping() -> None:
    # The mock must name objects as systemd does, or PropertiesChanged would not match.
    assert unit_path("web@1.service") == "/org/freedesktop/systemd1/unit/web_401_2eservice"
    assert unit_path("1a.service") == "/org/freedesktop/systemd1/unit/_31a_2eservice"


async def test_links_and_unlinks_asked_together_go_to_systemd_together(
    units_dir: Path, bus_daemon: BusDaemon, mock_systemd: MockManager
) -> None:
    names = [f"u{i:02d}.service" for i in range(40)]
    async with connected(units_dir, bus_daemon.address) as adapter:
        for name in names:
            await adapter.write_unit_file(name, RUNS)
        await asyncio.gather(*(adapter.link_unit(name) for name in names))
        links = [args for call, args in mock_systemd.calls if call == "LinkUnitFiles"]
        assert sorted(f for files, _, _ in links for f in files) == [
            str(units_dir / name) for name in names
        ]
        assert len(links) < len(names)  # requests made while a call was in flight shared one
        assert set(mock_systemd.model.links) == set(names)
        await asyncio.gather(*(adapter.unlink_unit(name) for name in names))
        unlinks = [args for call, args in mock_systemd.calls if call == "DisableUnitFiles"]
        assert sorted(f for files, _ in unlinks for f in files) == names
        assert len(unlinks) < len(names)
        assert mock_systemd.model.links == {}


async def test_a_symlink_the_adapter_made_is_removed_without_asking_systemd(
    units_dir: Path, tmp_path: Path, bus_daemon: BusDaemon, mock_systemd: MockManager
) -> None:
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    mock_systemd.runtime_dir = runtime
    async with connected(units_dir, bus_daemon.address) as adapter:
        for name in ("a.service", "b.service", "c.service"):
            await adapter.write_unit_file(name, RUNS)
            await adapter.link_unit(name)
        assert os.readlink(runtime / "a.service") == str(units_dir / "a.service")
        (runtime / "b.service").unlink()  # someone else changed it: systemd decides
        (runtime / "b.service").symlink_to("/elsewhere/b.service")
        async with connected(units_dir, bus_daemon.address) as restarted:
            # a new adapter did not make c's symlink: systemd removes it
            await restarted.unlink_unit("c.service")
        await adapter.unlink_unit("a.service")
        await adapter.unlink_unit("b.service")
        unlinks = [args[0] for call, args in mock_systemd.calls if call == "DisableUnitFiles"]
        assert unlinks == [["c.service"], ["b.service"]]
        assert not (runtime / "a.service").exists()
        assert (runtime / "b.service").is_symlink()  # the mock reports, it does not remove


def listed(mock: MockManager) -> list[str]:
    return [name for call, args in mock.calls if call == "ListUnitsByNames" for name in args]


async def test_a_new_unit_file_is_not_asked_about_until_it_is_linked(
    units_dir: Path, bus_daemon: BusDaemon, mock_systemd: MockManager
) -> None:
    async with connected(units_dir, bus_daemon.address) as adapter:
        await adapter.write_unit_file("a.service", RUNS)
        assert await adapter.unit_states(["a.service"]) == {"a.service": UnitStatus("a.service")}
        assert listed(mock_systemd) == []  # systemd would have had to load it to say not-found
        await adapter.link_unit("a.service")
        await adapter.unit_states(["a.service"])
        await adapter.write_unit_file("a.service", RUNS + "# changed\n")  # not new: asked
        await adapter.unit_states(["a.service"])
        assert listed(mock_systemd) == ["a.service", "a.service"]


async def test_a_unit_stopped_for_an_unload_is_not_asked_about_again(
    units_dir: Path, bus_daemon: BusDaemon, mock_systemd: MockManager
) -> None:
    async with connected(units_dir, bus_daemon.address) as adapter:
        await write_and_link(adapter, ["a.service", "b.service"])
        for name in ("a.service", "b.service"):
            async with asyncio.timeout(5):
                assert await (await adapter.start_unit(name)).result() == "done"
        going = await adapter.stop_unit("a.service", unloading=True)
        stopped = await adapter.stop_unit("b.service")
        async with asyncio.timeout(5):
            assert await going.result() == await stopped.result() == "done"
        mock_systemd.calls.clear()
        states = await adapter.unit_states(["a.service", "b.service"])
        assert states["a.service"] == UnitStatus("a.service", "loaded", "inactive", "dead")
        assert states["b.service"] == UnitStatus("b.service", "loaded", "inactive", "dead")
        assert listed(mock_systemd) == ["b.service"]  # only the unit not on its way out
        await adapter.link_unit("a.service")  # installed again: systemd is asked again
        await adapter.unit_states(["a.service"])
        assert listed(mock_systemd) == ["b.service", "a.service"]


async def write_and_link(adapter: DbusUnitManager, names: list[str]) -> None:
    for name in names:
        await adapter.write_unit_file(name, RUNS)
    await asyncio.gather(*(adapter.link_unit(name) for name in names))


def start_calls(mock: MockManager) -> list[str]:
    return [args[0] for call, args in mock.calls if call == "StartUnit"]


async def test_at_most_max_pending_jobs_are_queued_in_systemd(
    units_dir: Path, bus_daemon: BusDaemon, mock_systemd: MockManager
) -> None:
    names = [f"u{i}.service" for i in range(10)]
    async with connected(units_dir, bus_daemon.address, max_pending_jobs=4) as adapter:
        await write_and_link(adapter, names)
        mock_systemd.hold_jobs()
        starts = [asyncio.create_task(adapter.start_unit(name)) for name in names]

        async def four_queued() -> bool:
            return len(start_calls(mock_systemd)) == 4

        await wait_until(four_queued, "four jobs queued")
        # Calls on one connection arrive in order: any StartUnit sent with the first four would
        # be in before this one.
        await adapter.unit_states(["other.service"])
        assert len(start_calls(mock_systemd)) == 4
        mock_systemd.finish_jobs()  # their JobRemoved free the slots
        await asyncio.gather(*starts)
        assert sorted(start_calls(mock_systemd)) == sorted(names)


async def test_a_job_that_takes_long_frees_its_slot_after_a_while(
    units_dir: Path, bus_daemon: BusDaemon, mock_systemd: MockManager
) -> None:
    names = [f"u{i}.service" for i in range(6)]
    async with connected(
        units_dir, bus_daemon.address, max_pending_jobs=2, job_slot_hold=0.05
    ) as adapter:
        await write_and_link(adapter, names)
        mock_systemd.hold_jobs()  # no job ever ends
        async with asyncio.timeout(10):
            jobs = await asyncio.gather(*(adapter.start_unit(name) for name in names))
        assert not any(job.done for job in jobs)
        assert sorted(start_calls(mock_systemd)) == sorted(names)
        mock_systemd.finish_jobs()


async def test_an_error_of_the_bus_is_not_a_refusal(
    units_dir: Path, bus_daemon: BusDaemon, mock_systemd: MockManager
) -> None:
    mock_systemd.gate = asyncio.Event()
    async with connected(units_dir, bus_daemon.address) as adapter:
        listing = asyncio.create_task(adapter.unit_states(["web.service"]))

        async def asked() -> bool:
            return mock_systemd.listing == 1

        await wait_until(asked, "the call to reach the mock")
        mock_systemd.bus.disconnect()  # systemd leaves the bus without answering
        with pytest.raises(SystemdUnavailable, match="NoReply"):
            await listing


async def test_systemd_coming_back_to_the_bus_is_subscribed_again(
    units_dir: Path, bus_daemon: BusDaemon, mock_systemd: MockManager
) -> None:
    model = mock_systemd.model
    async with connected(units_dir, bus_daemon.address) as adapter:
        await write_and_link(adapter, ["web.service"])
        model.remove_listener(mock_systemd._changed)
        mock_systemd.bus.disconnect()  # systemd drops off the bus, and forgets who subscribed
        again = MockSystemd(model)
        manager = await again.start(bus_daemon.address)
        try:

            async def subscribed() -> bool:
                return manager.subscribed == 1

            await wait_until(subscribed, "the adapter to subscribe to the new systemd")
            await changes_for(adapter, lambda: adapter.start_unit("web.service"), "web.service")
        finally:
            await again.stop()
