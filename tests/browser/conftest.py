"""The console in a real browser: Debian's chromium, driven by Playwright, against the whole ACS.

One stack (the e2e ``stack`` fixture: `acs up --external` on the test run's servers), one fleet
of a few simulated CPEs and one browser for the module. Every request the browser makes is
recorded, so a test can show that none left 127.0.0.1.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from simulator.config import FleetSettings
from simulator.fleet import Fleet
from tests.e2e.conftest import Stack, stack  # noqa: F401 - the fixture, shared with the e2e tests

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "ui"


@dataclass
class Recorded:
    urls: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # uncaught errors of the page's scripts

    def hosts(self) -> set[str]:
        return {urlsplit(url).hostname or urlsplit(url).scheme for url in self.urls}


@pytest.fixture(scope="module")
async def fleet(stack: Stack) -> AsyncIterator[Fleet]:  # noqa: F811
    """Four CPEs (TR-098 at even indexes, TR-181 at odd ones): each test uses its own, because the
    orchestrator allows a device two connection requests in a row, then one per 30 s."""
    fleet = Fleet(FleetSettings(acs_url=stack.gateway_url + "/", devices=4, model="mixed",
                                serial_prefix="UI" + uuid.uuid4().hex[:6].upper(),
                                acs_username=stack.cpe_username, acs_password=stack.cpe_password,
                                periodic_interval=3600, reboot_delay=0.5, seed=3))
    await fleet.start()
    try:
        yield fleet
    finally:
        await fleet.stop()


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: `make install` installs it (apt-get install -y chromium)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture(scope="module")
def recorded() -> Recorded:
    return Recorded()


async def new_context(browser: Browser, recorded: Recorded) -> BrowserContext:
    context = await browser.new_context(viewport={"width": 1280, "height": 820})
    context.on("request", lambda request: recorded.urls.append(request.url))
    context.on("page", lambda page: page.on("pageerror", lambda error: recorded.errors.append(str(error))))
    return context


@pytest.fixture(scope="module")
async def admin_page(browser: Browser, recorded: Recorded) -> AsyncIterator[Page]:
    context = await new_context(browser, recorded)
    page = await context.new_page()
    # Confirmations (reboot, a write to a read-only parameter) are accepted, as an operator would.
    page.on("dialog", lambda dialog: dialog.accept())
    try:
        yield page
    finally:
        await context.close()


async def screenshot(page: Page, name: str, full: bool = False) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.wait_for_timeout(300)  # the last poll's rendering
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=full)
