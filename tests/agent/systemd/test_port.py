"""The port's shared types: change feeds coalesce, jobs carry results."""

from __future__ import annotations

import asyncio

from agent.systemd.port import Changed, ChangeHub, Job


async def test_a_burst_of_changes_is_one_wakeup() -> None:
    hub = ChangeHub()
    with hub.subscribe() as feed:
        for _ in range(10):
            hub.notify("a.service")
        hub.notify("b.service")
        assert await feed.next() == Changed(frozenset({"a.service", "b.service"}))
        hub.notify_all()
        hub.notify("c.service")
        assert await feed.next() == Changed(frozenset({"c.service"}), everything=True)
        waiting = asyncio.create_task(feed.next())
        await asyncio.sleep(0)
        assert not waiting.done()  # nothing new: it waits
        hub.notify("d.service")
        assert await waiting == Changed(frozenset({"d.service"}))


async def test_every_feed_hears_every_change_until_closed() -> None:
    hub = ChangeHub()
    first, second = hub.subscribe(), hub.subscribe()
    second.close()
    hub.notify("a.service")
    assert (await first.next()).names == {"a.service"}
    assert second._names == set()  # closed: it heard nothing
    first.close()


def test_changed_touches() -> None:
    assert Changed(frozenset({"a"})).touches({"a", "b"})
    assert not Changed(frozenset({"c"})).touches({"a", "b"})
    assert Changed(frozenset(), everything=True).touches(set())


async def test_a_finished_job() -> None:
    job = Job.finished("a.service", "done")
    assert job.done
    assert (job.unit, job.path) == ("a.service", "/")
    assert await job.result() == "done"
