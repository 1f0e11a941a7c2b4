"""The dashboard in a real browser (Debian's chromium, driven by Playwright) against the real API,
engine and agents: it shows the cluster, follows a unit started with fleetctl without a reload,
acts only with the token, and leaves a screenshot in `test-artifacts/`."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from fleetd.core.pod_address import PodAddress, encode_pod_address
from fleetd.core.states import JobState
from fleetd.core.unitfile import parse_unit
from fleetd.registry.client import Put
from fleetd.registry.codec import UnitRecord, encode_unit
from fleetd.runtime.files import write_atomically
from tests.integration.cluster import TOKEN, WEB, Cluster
from tests.integration.scenario import GLOBAL, HELLO, NOSUCH

CHROMIUM = "/usr/bin/chromium"  # Debian's package (scripts/bootstrap); no browser download
WAIT_MS = 15_000
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
expect.set_options(timeout=WAIT_MS)
# Waits use selectors and `expect`, never `wait_for_function` with a string: the page's
# Content-Security-Policy (no 'unsafe-eval') refuses the eval that polling such a string needs.


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield launched
        finally:
            await launched.close()


async def open_dashboard(browser: Browser, cluster: Cluster, token: str | None) -> Page:
    page = await browser.new_page(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    fragment = f"#token={token}" if token else ""
    await page.goto(f"{cluster.tcp_endpoint}/ui{fragment}")
    page.set_default_timeout(WAIT_MS)
    page.errors = errors  # type: ignore[attr-defined]
    return page


def row(name: str) -> str:
    return f'.unit-row[data-unit="{name}"]'


async def test_a_unit_started_with_fleetctl_appears_and_goes_green_without_a_reload(
    fleet_cluster: Cluster, browser: Browser, tmp_path: Path
) -> None:
    page = await open_dashboard(browser, fleet_cluster, TOKEN)
    await page.wait_for_selector("body[data-ready=true]")
    await expect(page.locator(".machine")).to_have_count(3)
    assert "token=" not in page.url  # taken out of the address bar
    await page.evaluate("window.sameDocument = true")

    fleet_cluster.write_unit("hello.service", HELLO)
    started = await fleet_cluster.fleetctl("start", "hello.service")
    assert started.code == 0, started.err

    await page.wait_for_selector(f'{row("hello.service")}[data-health="running"]')
    assert await page.evaluate("window.sameDocument") is True  # no reload happened
    current = await page.text_content(f"{row('hello.service')} [data-current]")
    assert current == "launched"
    await page.wait_for_selector(".events .kind.unit-state")
    await page.wait_for_selector(".conn[data-state=live]")

    # a unit no machine can take shows with the engine's reason; a global one on every machine
    fleet_cluster.write_unit("nosuch.service", NOSUCH)
    fleet_cluster.write_unit("global.service", GLOBAL)
    others = await fleet_cluster.fleetctl("start", "--no-block", "nosuch.service", "global.service")
    assert others.code == 0, others.err
    await page.wait_for_selector(f'{row("nosuch.service")}[data-health="unplaceable"]')
    await expect(page.locator("#unplaceable")).to_contain_text("role=nosuch")
    await page.wait_for_selector(f'{row("global.service")}[data-health="running"]')
    assert await page.text_content(f"{row('global.service')} [data-current]") == "global"

    ARTIFACTS.mkdir(exist_ok=True)
    shot = tmp_path / "dashboard.png"
    await page.screenshot(path=str(shot), full_page=True)
    shutil.copy(shot, ARTIFACTS / "dashboard.png")

    # the actions work with the token: stop it from the page
    await page.click(f'{row("hello.service")} button[data-action="stop"]')
    await page.wait_for_selector(f'{row("hello.service")}[data-health="stopped"]')

    # the unit's page: its file, and the journal's place: these fleetds serve no node-to-node
    # endpoint, so the API's refusal is shown in its own words
    await page.click(f"{row('hello.service')} .name")
    await page.wait_for_selector("#unit-page:not([hidden])")
    await expect(page.locator("#unit-file")).to_contain_text("[Service]")
    await expect(page.locator("#unit-journal")).to_contain_text(
        "Could not read the journal: machine"
    )
    await expect(page.locator("#unit-journal")).to_contain_text("publishes no node-to-node address")
    await page.screenshot(path=str(ARTIFACTS / "dashboard-unit.png"), full_page=True)
    assert page.errors == []  # type: ignore[attr-defined]


async def test_without_the_token_the_page_asks_for_it_and_shows_no_data(
    fleet_cluster: Cluster, browser: Browser
) -> None:
    page = await open_dashboard(browser, fleet_cluster, None)
    await page.wait_for_selector("#login:not([hidden])")
    assert await page.is_hidden("#overview")
    assert await page.query_selector_all("button[data-action]") == []
    await page.fill("#login-token", "wrong")
    await page.click("#login-form button")
    await expect(page.locator("#login-error")).to_contain_text("refused")
    await page.fill("#login-token", TOKEN)
    await page.click("#login-form button")
    await page.wait_for_selector("body[data-ready=true]")
    await expect(page.locator(".machine")).to_have_count(3)


async def test_thousands_of_units_render_as_a_virtual_list(
    fleet_cluster: Cluster, browser: Browser
) -> None:
    keys, etcd = fleet_cluster.keys, fleet_cluster.client
    for first in range(0, 2000, 100):
        writes = []
        for n in range(first, first + 100):
            name = f"many{n:04d}.service"
            unit = parse_unit(f"[Unit]\nDescription={name}\n[Service]\nExecStart=/bin/true\n")
            record = UnitRecord(name, unit.options, unit.hash, JobState.INACTIVE)
            writes.append(Put(keys.unit(name), encode_unit(record)))
        await etcd.txn([], writes)
    page = await open_dashboard(browser, fleet_cluster, TOKEN)
    await expect(page.locator("#unit-count")).to_have_text("2000")
    rows = await page.eval_on_selector_all(".unit-row", "rows => rows.length")
    assert 0 < rows < 100  # only what is in view (and a margin) is in the page
    await page.eval_on_selector("#scroller", "s => { s.scrollTop = s.scrollHeight; }")
    await page.wait_for_selector(row("many1999.service"))
    await page.fill("#filter", "many19*")
    await expect(page.locator("#unit-count")).to_have_text("100 of 2000")
    assert page.errors == []  # type: ignore[attr-defined]


async def test_a_units_page_shows_the_journal_routes_entries(
    fleet_cluster: Cluster, browser: Browser
) -> None:
    """The journal route (`GET /fleet/v1/units/<name>/journal`, NDJSON of `journalctl -o json`
    entries) is another part of the API; here the browser answers it, to check how the page
    shows its entries."""
    fleet_cluster.write_unit("hello.service", HELLO)
    assert (await fleet_cluster.fleetctl("start", "hello.service")).code == 0
    page = await open_dashboard(browser, fleet_cluster, TOKEN)
    entries = [
        {"__REALTIME_TIMESTAMP": "1764763200000000", "MESSAGE": "hello from the journal"},
        {"__REALTIME_TIMESTAMP": "1764763201000000", "MESSAGE": [98, 121, 116, 101, 115]},
        {"end": "the unit moved"},
    ]
    body = "".join(json.dumps(entry) + "\n" for entry in entries)
    await page.route(
        "**/fleet/v1/units/hello.service/journal*",
        lambda route: route.fulfill(status=200, content_type="application/x-ndjson", body=body),
    )
    await page.goto(f"{fleet_cluster.tcp_endpoint}/ui#/unit/hello.service")
    journal = page.locator("#unit-journal")
    await expect(journal).to_contain_text("hello from the journal")
    await expect(journal).to_contain_text("bytes")
    await expect(journal).to_contain_text("-- the unit moved --")


async def test_a_units_page_shows_its_pods_address(
    fleet_cluster: Cluster, browser: Browser
) -> None:
    page = await open_dashboard(browser, fleet_cluster, TOKEN)
    await page.wait_for_selector("body[data-ready=true]")
    fleet_cluster.write_unit(
        "pod.service",
        "[Service]\nExecStart=/bin/sleep infinity\n\n[X-Fleet]\nMachineMetadata=role=web\n",
    )
    started = await fleet_cluster.fleetctl("start", "pod.service")
    assert started.code == 0, started.err
    await page.wait_for_selector(f'{row("pod.service")}[data-health="running"]')
    await page.click(f"{row('pod.service')} .name")
    await page.wait_for_selector("#unit-page:not([hidden])")
    await expect(page.locator("#unit-facts")).to_contain_text("Pod address—")

    pods = fleet_cluster.hosts[WEB].agent.publisher.pod_addresses  # as fleet-pod hands it over
    assert pods is not None
    record = PodAddress("10.244.3.2", "6f1d3c2a-0b4e-4a7f-9c1d-2e3f4a5b6c7d")
    write_atomically(pods.directory / "pod.service", encode_pod_address(record))
    await expect(page.locator("#unit-facts")).to_contain_text("Pod address10.244.3.2")
    await expect(page.locator("#unit-events")).to_contain_text("pod 10.244.3.2")
    assert page.errors == []  # type: ignore[attr-defined]
