"""The operator console from the outside: headless Chromium against the whole ACS and simulated
CPEs. The tests run in order and share one signed-in page; each takes screenshots for docs/ui.md.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import quote

import httpx
import pyotp
import pytest
from playwright.async_api import Browser, Page, expect

from simulator.device import Device
from simulator.fleet import Fleet
from tests.browser.conftest import Recorded, new_context, screenshot
from tests.e2e.conftest import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.browser]
LONG = 60_000  # ms: a task's whole round trip (connection request, session, inventory)


async def eventually(probe: Callable[[], Awaitable[Any]], seconds: float = 60.0) -> Any:
    async with asyncio.timeout(seconds):
        while True:
            if result := await probe():
                return result
            await asyncio.sleep(0.3)


@pytest.fixture(scope="module")
async def api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.api_url, headers=stack.admin_headers, timeout=30) as client:
        yield client


def console_url(stack: Stack) -> str:
    return stack.api_url.removesuffix("/api/v1")


def cpe(fleet: Fleet, index: int) -> Device:
    found = fleet.device_by_index(index)
    assert found is not None
    return found


async def ready(api: httpx.AsyncClient, device: Device) -> dict[str, Any]:
    """The device's record once bootstrap provisioning has read its tree and the inventory holds
    every value it read (the task succeeds with its last answer; the inventory applies the answers
    a moment later)."""
    async def probe() -> dict[str, Any] | None:
        tasks = (await api.get(f"/devices/{quote(device.id_string, safe='')}/tasks")).json().get("tasks", [])
        bootstrap = next((t for t in tasks if t["name"] == "bootstrap" and t["status"] == "succeeded"), None)
        if bootstrap is None:
            return None
        record = await api.get(f"/devices/{quote(device.id_string, safe='')}")
        if record.status_code != 200:
            return None
        parameters = record.json().get("parameters", {})
        read = {p["name"] for p in bootstrap["result"].get("parameters", []) if "value" in p}
        return record.json() if len(parameters) > 20 and read <= set(parameters) else None

    return await eventually(probe)


async def sign_in(page: Page, stack: Stack, key: str) -> None:
    await page.goto(console_url(stack) + "/")
    await page.fill("#api-key", key)
    await page.click("#signin-form button[type=submit]")
    await expect(page.locator("#who")).to_be_visible()


async def open_device(page: Page, device: Device) -> None:
    await page.goto(page.url.split("#")[0] + "#/devices/" + quote(device.id_string, safe=""))
    await expect(page.locator("#parameter-tree")).to_be_visible()


async def test_sign_in_with_a_key(admin_page: Page, stack: Stack) -> None:
    await admin_page.goto(console_url(stack) + "/")
    await expect(admin_page.locator("#signin")).to_be_visible()
    await admin_page.fill("#api-key", "not-a-key")
    await admin_page.click("#signin-form button[type=submit]")
    await expect(admin_page.locator("#signin-error")).to_have_text("unknown API key")
    await screenshot(admin_page, "signin")
    await sign_in(admin_page, stack, stack.admin_key)
    await expect(admin_page.locator("#who")).to_have_text("bootstrap-admin (admin)")
    cookie = next(c for c in await admin_page.context.cookies() if c["name"] == "acs_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and not cookie["secure"]  # plain HTTP here


async def test_find_a_device_by_serial_and_open_its_tree(admin_page: Page, api: httpx.AsyncClient,
                                                       fleet: Fleet) -> None:
    for index in range(4):
        await ready(api, cpe(fleet, index))
    device = cpe(fleet, 0)
    await admin_page.click("#nav a[href='#/devices']")
    await admin_page.fill("#device-search", device.serial)
    await admin_page.press("#device-search", "Enter")
    rows = admin_page.locator("#device-table tbody tr")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text(device.serial)
    await admin_page.fill("#device-search", device.serial[:-1])  # bare text: a serial prefix
    await admin_page.press("#device-search", "Enter")
    await expect(rows).to_have_count(4)
    await expect(admin_page.locator("#match-count")).to_have_text(" of 4")
    # Sort by serial, descending on the second click.
    await admin_page.click("#device-table th:has-text('Serial')")
    await admin_page.click("#device-table th:has-text('Serial')")
    await expect(rows.first).to_contain_text(cpe(fleet, 3).serial)
    # A parameter as a column.
    await admin_page.click("text=Columns")
    column = "InternetGatewayDevice.DeviceInfo.ModelName"
    await admin_page.fill("input[aria-label='parameter column']", column)
    await admin_page.press("input[aria-label='parameter column']", "Enter")
    await expect(admin_page.locator("#device-table thead")).to_contain_text(column)
    await expect(admin_page.locator(f"#device-table tr[data-id$='{device.serial}']")).to_contain_text("SimGW-098")
    # Multi-select and tag.
    for index in (0, 2):
        await admin_page.check(f"#device-table input[aria-label='select {cpe(fleet, index).id_string}']")
    await admin_page.fill("#selection-actions input[aria-label=tag]", "ui-lab")
    await admin_page.click("#selection-actions button:has-text('Add tag')")
    await expect(admin_page.locator(".notice")).to_contain_text("Tagged 2 device(s) ui-lab")
    tagged = (await api.get("/devices", params={"q": '{"tags": "ui-lab"}'})).json()["devices"]
    assert sorted(d["id"] for d in tagged) == sorted(cpe(fleet, i).id_string for i in (0, 2))
    await admin_page.click("text=Help")
    await expect(admin_page.locator(".help")).to_contain_text("has:")
    await screenshot(admin_page, "devices")
    await admin_page.click(f"#device-table a:text-is('{device.serial}')")
    tree = admin_page.locator("#parameter-tree")
    await expect(tree.locator("tr[data-name='InternetGatewayDevice.']")).to_be_visible()
    # Lazy: a subtree's rows are made when it is opened.
    info = tree.locator("tr[data-name='InternetGatewayDevice.DeviceInfo.']")
    await expect(info).to_be_visible()
    assert await tree.locator("tr[data-name='InternetGatewayDevice.DeviceInfo.SerialNumber']").count() == 0
    await info.locator("td").first.click()
    serial = tree.locator("tr[data-name='InternetGatewayDevice.DeviceInfo.SerialNumber']")
    await expect(serial.locator("td.value")).to_have_text(device.serial)
    await expect(admin_page.locator("#software-version")).to_have_text("1.0.0")


async def test_edit_a_writable_value_and_see_the_task_succeed(admin_page: Page, fleet: Fleet) -> None:
    device = cpe(fleet, 0)
    await open_device(admin_page, device)
    name = "InternetGatewayDevice.DeviceInfo.ProvisioningCode"
    await admin_page.fill("#tree-search", "ProvisioningCode")
    cell = admin_page.locator(f"#parameter-tree tr[data-name='{name}'] td.value")
    await cell.click()
    await cell.locator("input").fill("UI-CODE-1")
    await cell.locator("input").press("Enter")
    done = admin_page.locator("#device-tasks tr[data-status='succeeded']", has_text="setParameterValues")
    await expect(done).to_have_count(1, timeout=LONG)
    await expect(cell).to_contain_text("UI-CODE-1", timeout=LONG)
    await expect(cell.locator(".param-note")).to_have_text("set")
    assert device.values([name])[0].value.value == "UI-CODE-1"
    # The device.events timeline has the change, with its old and new value.
    change = admin_page.locator("#device-events tr[data-kind='value_changed']", has_text=name)
    await expect(change.first).to_contain_text("→ UI-CODE-1", timeout=LONG)
    await admin_page.fill("#tree-search", "")
    await screenshot(admin_page, "device", full=True)


async def test_a_read_only_parameter_edit_shows_the_cpe_fault(admin_page: Page, fleet: Fleet) -> None:
    device = cpe(fleet, 0)
    await open_device(admin_page, device)
    name = "InternetGatewayDevice.DeviceInfo.SerialNumber"
    await admin_page.fill("#tree-search", "DeviceInfo.SerialNumber")
    cell = admin_page.locator(f"#parameter-tree tr[data-name='{name}'] td.value")
    await cell.click()  # the confirmation ("read-only ... send anyway?") is accepted
    await cell.locator("input").fill("forged")
    await cell.locator("input").press("Enter")
    fault = cell.locator(".param-fault")
    await expect(fault).to_contain_text("9008", timeout=LONG)  # the CPE's own parameter fault
    await expect(fault).to_contain_text(name)
    await expect(admin_page.locator("#device-faults")).to_contain_text("9008")
    assert device.values([name])[0].value.value == device.serial


async def test_reboot_and_see_the_device_come_back(admin_page: Page, api: httpx.AsyncClient, fleet: Fleet) -> None:
    device = cpe(fleet, 2)
    before = (await api.get(f"/devices/{quote(device.id_string, safe='')}")).json()["last_boot"]
    await open_device(admin_page, device)
    await expect(admin_page.locator("#last-boot")).not_to_have_text("")
    shown = await admin_page.locator("#last-boot").inner_text()
    await admin_page.click("#reboot")
    await expect(admin_page.locator("#device-tasks tr[data-status='succeeded']", has_text="reboot")).to_have_count(
        1, timeout=LONG)
    await expect(admin_page.locator("#last-boot")).not_to_have_text(shown, timeout=LONG)
    after = (await api.get(f"/devices/{quote(device.id_string, safe='')}")).json()["last_boot"]
    assert after > before
    await expect(admin_page.locator("#device-summary")).to_contain_text("online")


async def test_upload_firmware_push_it_and_see_the_version_change(admin_page: Page, fleet: Fleet) -> None:
    device = cpe(fleet, 2)
    name = f"fw-{device.serial}-3.1.0.bin"
    await admin_page.click("#nav a[href='#/files']")
    await admin_page.set_input_files("#file-input", files=[{"name": name, "mimeType": "application/octet-stream",
                                                            "buffer": os.urandom(3_000_000)}])
    await admin_page.select_option("#file-type", "1 Firmware Upgrade Image")
    await admin_page.fill("#file-version", "3.1.0")
    await admin_page.click("#upload-form button[type=submit]")
    await expect(admin_page.locator("#upload-percent")).to_have_text("100 % uploaded", timeout=LONG)
    assert await admin_page.locator("#upload-progress").get_attribute("value") == "1"
    await expect(admin_page.locator(f"#file-list tr[data-file='{name}']")).to_contain_text("3.1.0")
    await screenshot(admin_page, "files")
    await open_device(admin_page, device)
    await admin_page.select_option("#firmware-file", name)
    await admin_page.click("#push-firmware")
    await expect(admin_page.locator("#device-tasks tr[data-status='succeeded']", has_text="download")).to_have_count(
        1, timeout=LONG)
    await expect(admin_page.locator("#software-version")).to_have_text("3.1.0", timeout=LONG)
    upgraded = admin_page.locator("#device-events tr[data-kind='firmware_upgraded']")
    await expect(upgraded.first).to_contain_text("1.0.0 → 3.1.0", timeout=LONG)


async def test_create_a_policy_and_see_a_bad_one_refused(admin_page: Page) -> None:
    await admin_page.click("#nav a[href='#/policies']")
    form = admin_page.locator("#policy-form")
    await form.locator("input[name=name]").fill("ui-provisioning-code")
    await form.locator("button[type=submit]").click()
    await expect(admin_page.locator("#policy-list tr[data-policy='ui-provisioning-code']")).to_be_visible()
    # A bad one: an unknown task name. The API's words show, at the field they concern.
    await form.locator("input[name=name]").fill("ui-bad")
    await form.locator("textarea[name=tasks]").fill('[{"name": "rebootNow"}]')
    await form.locator("button[type=submit]").click()
    problem = admin_page.locator(".problem")
    await expect(problem).to_contain_text("422")
    field_error = form.locator(".field-error[data-field=tasks]")
    await expect(field_error).to_contain_text("body.tasks")
    await expect(admin_page.locator("#policy-list tr[data-policy='ui-bad']")).to_have_count(0)
    await screenshot(admin_page, "policies")
    # Disable the good one (the API has no update: the console replaces it).
    good = admin_page.locator("#policy-list tr[data-policy='ui-provisioning-code']")
    await good.locator("button:has-text('Disable')").click()
    await expect(good.locator("td").nth(1)).to_have_text("no")
    await expect(good.locator("button:has-text('Enable')")).to_be_visible()


async def test_create_a_profile_preview_it_and_see_a_bad_one_refused(admin_page: Page) -> None:
    await admin_page.click("#nav a[href='#/profiles']")
    form = admin_page.locator("#profile-form")
    name = "ui-inform-" + uuid.uuid4().hex[:6]
    await form.locator("input[name=name]").fill(name)
    await form.locator("input[name=priority]").fill(str(7000 + uuid.uuid4().int % 1000))
    # Disabled, so that no session of the other tests applies it; a preview counts it as enabled.
    await form.locator("input[name=enabled]").uncheck()
    await form.locator("textarea[name=state]").fill(
        '{"selector": {"product_class": "IGD-SIM"}, "parameters": '
        '[{"name": "ManagementServer.PeriodicInformInterval", "value": 7200}]}')
    await form.locator("button[type=submit]").click()
    await expect(admin_page.locator(".notice")).to_contain_text(f"Profile {name} saved (version 1)")
    row = admin_page.locator(f"#profile-list tr[data-profile='{name}']")
    await expect(row.locator("td").nth(2)).to_have_text("no")
    await expect(row.locator("td.compliance")).to_contain_text("compliant 0")
    await row.locator("button:has-text('Preview')").click()
    preview = admin_page.locator(f"#profile-preview[data-profile='{name}']")
    matched = int(await preview.locator("[data-count=matched] .n").inner_text())
    assert matched >= 2  # the fleet's two TR-098 CPEs
    await expect(preview.locator("[data-count=would_change] .n")).to_have_text(str(matched))
    await expect(preview).to_contain_text("InternetGatewayDevice.ManagementServer.PeriodicInformInterval")
    await expect(preview.locator("td.sample-rpcs").first).to_contain_text("SetParameterValues")
    await expect(preview.locator("td.sample-rpcs").first).to_contain_text("7200")
    await screenshot(admin_page, "profiles", full=True)
    # A bad one: a selector the query language refuses. The API's words show, beside the editor.
    await form.locator("input[name=name]").fill("ui-bad-profile")
    await form.locator("textarea[name=state]").fill('{"selector": {"product_class": {"$near": 1}}}')
    await form.locator("button[type=submit]").click()
    await expect(admin_page.locator(".problem")).to_contain_text("422")
    await expect(form.locator(".field-error[data-field=state]")).to_contain_text("body.selector")
    await expect(admin_page.locator("#profile-list tr[data-profile='ui-bad-profile']")).to_have_count(0)
    # Versions: enabling makes version 2; a rollback to version 1 makes version 3, disabled again.
    await row.locator("button:has-text('Enable')").click()
    await expect(row.locator("td").nth(2)).to_have_text("yes")
    await row.locator("button:has-text('Disable')").click()
    await expect(row.locator("td").nth(2)).to_have_text("no")
    await row.locator("button:has-text('Versions')").click()
    versions = admin_page.locator(f"#profile-versions[data-profile='{name}']")
    await expect(versions.locator("tbody tr")).to_have_count(3)
    await versions.locator("tr[data-version='1'] button:has-text('Roll back')").click()
    await expect(versions.locator("tbody tr").first).to_contain_text("rolled back to version 1")
    await expect(row.locator("td").nth(4)).to_have_text("4")


async def test_create_a_campaign_in_draft_and_see_it_listed(admin_page: Page, api: httpx.AsyncClient) -> None:
    file_name = f"ui-campaign-{uuid.uuid4().hex[:6]}-3.2.0.bin"
    stored = await api.put(f"/files/{file_name}", content=os.urandom(1000), params={
        "file_type": "1 Firmware Upgrade Image", "version": "3.2.0", "product_class": "IGD-SIM"})
    assert stored.status_code in (200, 201), stored.text
    await admin_page.click("#nav a[href='#/campaigns']")
    name = "ui-campaign-" + uuid.uuid4().hex[:6]
    editor = admin_page.locator("#campaign-form textarea[name=campaign]")
    await editor.fill(json.dumps({"name": name, "query": {"product_class": "IGD-SIM"}, "draft": True,
                                  "firmware": [{"product_class": "IGD-SIM", "file_name": "no-such-file.bin"}]}))
    await admin_page.click("#campaign-form button[type=submit]")
    await expect(admin_page.locator(".problem")).to_contain_text("422")
    await expect(admin_page.locator(".problem")).to_contain_text("no-such-file.bin")
    await editor.fill(json.dumps({"name": name, "query": {"product_class": "IGD-SIM"}, "draft": True,
                                  "firmware": [{"product_class": "IGD-SIM", "file_name": file_name}]}))
    await admin_page.click("#campaign-form button[type=submit]")
    await expect(admin_page.locator(".notice")).to_contain_text(f"Campaign {name} created (draft")
    row = admin_page.locator(f"#campaign-list tr[data-campaign='{name}']")
    await expect(row.locator("td.campaign-state")).to_contain_text("draft")
    await expect(row.locator("td.campaign-wave")).to_have_text("1 of 2 (canary)")  # the default: canary, 100 %
    await expect(row.locator("button[data-action=start]")).to_be_visible()
    await screenshot(admin_page, "campaigns")
    await row.locator("a").click()
    await expect(admin_page.locator("#campaign-summary .campaign-state")).to_have_text("draft")
    await expect(admin_page.locator("#campaign-waves tr[data-wave='0']")).to_contain_text("canary")
    await screenshot(admin_page, "campaign")
    await admin_page.locator("#campaign-summary button[data-action=cancel]").click()
    await expect(admin_page.locator("#campaign-summary .campaign-state")).to_have_text("cancelled")
    await expect(admin_page.locator("#campaign-summary button")).to_have_count(0)


async def test_start_a_job_over_a_query_and_watch_it_reach_100(admin_page: Page, fleet: Fleet) -> None:
    devices = [cpe(fleet, 1), cpe(fleet, 3)]
    await admin_page.click("#nav a[href='#/jobs']")
    await admin_page.fill("#job-form input[aria-label='job query']",
                          f"serial_number:{devices[0].serial[:-6]}* has:Device.DeviceInfo.")
    await admin_page.select_option("#job-form select[name=task]", "getParameterValues")
    await admin_page.fill("#job-form input[name=parameter_names]", "Device.DeviceInfo.UpTime")
    await admin_page.click("#job-form button[type=submit]")
    await expect(admin_page.locator(".notice")).to_contain_text("started")
    row = admin_page.locator("#job-list tbody tr").first
    await expect(row.locator(".job-percent")).to_have_text("100 %", timeout=LONG)
    await expect(row).to_contain_text("succeeded 2")  # the two TR-181 devices, nothing else
    await screenshot(admin_page, "jobs")
    await admin_page.click("#nav a[href='#/tasks']")
    await expect(admin_page.locator("#task-list tr[data-status='succeeded']").first).to_be_visible()
    await screenshot(admin_page, "tasks")


async def test_overview_and_admin_pages(admin_page: Page) -> None:
    await admin_page.click("#nav a[href='#/overview']")
    await expect(admin_page.locator("#devices-total .n")).to_have_text(re.compile(r"^\d+$"))
    assert int(await admin_page.locator("#devices-total .n").inner_text()) >= 4
    await expect(admin_page.locator("#versions-chart")).to_contain_text("3.1.0")
    await expect(admin_page.locator("#recent-faults")).to_contain_text("9008")
    await screenshot(admin_page, "overview")
    await admin_page.click("#nav a[href='#/admin']")
    await admin_page.fill("#key-name", "ui-viewer-" + uuid.uuid4().hex[:6])
    await admin_page.select_option("#key-role", "read-only")
    await admin_page.click("#key-form button[type=submit]")
    await expect(admin_page.locator("#new-key")).to_have_text(re.compile(r"^acs_"))
    await screenshot(admin_page, "admin")


async def test_a_read_only_key_sees_no_write_control_and_a_forged_write_is_refused(
        browser: Browser, recorded: Recorded, admin_page: Page, api: httpx.AsyncClient, stack: Stack,
        fleet: Fleet) -> None:
    created = await api.post("/apikeys", json={"name": "ui-ro-" + uuid.uuid4().hex[:6], "role": "read-only"})
    key = created.json()["key"]
    context = await new_context(browser, recorded)
    page = await context.new_page()
    try:
        await sign_in(page, stack, key)
        assert not recorded.errors, recorded.errors
        await expect(page.locator("#who")).to_contain_text("(read-only)")
        assert await page.locator("#nav a[href='#/admin']").is_hidden()
        device = cpe(fleet, 0)
        await open_device(page, device)
        await expect(page.locator("#device-summary")).to_be_visible()
        for control in ("#reboot", "#factory-reset", "#push-firmware", "#connection-request"):
            assert await page.locator(control).count() == 0, control
        assert await page.locator("#parameter-tree td.value.editable").count() == 0
        assert await page.locator("#parameter-tree button").count() == 0
        assert await page.locator("#device-tasks button").count() == 0
        await page.click("#nav a[href='#/devices']")
        await expect(page.locator("#device-table")).to_be_visible()
        assert await page.locator("#start-job").count() == 0
        # No other page offers a write either.
        for nav, shown, gone in (("#/files", "#file-list tbody tr", "#upload-form, #file-list button.danger"),
                                 ("#/jobs", "#job-list tbody tr", "#job-form"),
                                 ("#/tasks", "#task-list tbody tr", "#task-list button"),
                                 ("#/policies", "#policy-list tbody tr", "#policy-list button"),
                                 ("#/profiles", "#profile-list tbody tr",
                                  "#profile-list button.danger, #profile-list button:has-text('Edit')"),
                                 ("#/campaigns", "#campaign-list tbody tr", "#campaign-form, #campaign-list button")):
            await page.click(f"#nav a[href='{nav}']")
            await expect(page.locator(shown).first).to_be_visible()  # the list is there, without its buttons
            assert await page.locator(gone).count() == 0, nav
        assert await page.locator("#policy-form").is_hidden()
        await page.click("#nav a[href='#/profiles']")
        assert await page.locator("#profile-form").is_hidden()
        # A forged write with the session's own CSRF token: the server refuses the role.
        status = await page.evaluate("""async (path) => {
            const session = await (await fetch('/console/api/session')).json();
            const answer = await fetch('/api/v1' + path, {method: 'POST', headers: {
                'Content-Type': 'application/json', 'X-CSRF-Token': session.csrf_token},
                body: JSON.stringify({name: 'reboot'})});
            return answer.status; }""", f"/devices/{quote(quote(device.id_string, safe=''), safe='')}/tasks")
        assert status == 403
    finally:
        await context.close()
    # An admin session's write without the CSRF token is refused too.
    status = await admin_page.evaluate("""async () => (await fetch('/api/v1/apikeys', {method: 'POST',
        headers: {'Content-Type': 'application/json'}, body: JSON.stringify({name: 'x', role: 'admin'})})).status""")
    assert status == 403


async def test_a_scoped_user_signs_in_with_password_and_totp_and_sees_only_its_devices(
        browser: Browser, recorded: Recorded, api: httpx.AsyncClient, stack: Stack, fleet: Fleet) -> None:
    mine, other = cpe(fleet, 1), cpe(fleet, 2)
    tag = "partner-" + uuid.uuid4().hex[:6]
    assert (await api.post(f"/devices/{quote(mine.id_string, safe='')}/tags/{tag}")).status_code == 200
    name, password = "ui-user-" + uuid.uuid4().hex[:6], "a long enough password"
    created = await api.post("/users", json={"username": name, "password": password, "role": "operator",
                                             "scope": {"tags": tag}})
    assert created.status_code == 201, created.text
    context = await new_context(browser, recorded)
    page = await context.new_page()
    try:
        await page.goto(console_url(stack) + "/")
        await page.fill("#username", name)
        await page.fill("#password", "not the password")
        await page.click("#signin-form button[type=submit]")
        await expect(page.locator("#signin-error")).to_have_text("wrong username or password")
        await page.fill("#username", name)
        await page.fill("#password", password)
        await page.click("#signin-form button[type=submit]")
        await expect(page.locator("#who")).to_contain_text(f"{name} (operator, scope")
        # Enrol a second factor through the API with the session, then sign in again with a code.
        secret = await page.evaluate("""async (name) => {
            const session = await (await fetch('/console/api/session')).json();
            const post = (path, body) => fetch('/api/v1/users/' + name + path, {method: 'POST', headers: {
                'Content-Type': 'application/json', 'X-CSRF-Token': session.csrf_token},
                body: body ? JSON.stringify(body) : undefined});
            return (await (await post('/totp')).json()).secret; }""", name)
        totp = pyotp.TOTP(secret)
        confirmed = await page.evaluate("""async ([name, code]) => {
            const session = await (await fetch('/console/api/session')).json();
            return (await fetch('/api/v1/users/' + name + '/totp/confirm', {method: 'POST', headers: {
                'Content-Type': 'application/json', 'X-CSRF-Token': session.csrf_token},
                body: JSON.stringify({code})})).status; }""", [name, totp.now()])
        assert confirmed == 200
        await page.click("#signout")
        await expect(page.locator("#signin")).to_be_visible()
        await asyncio.sleep(31 - time.time() % 30)  # the confirmation's code is used up: the next one
        await page.fill("#username", name)
        await page.fill("#password", password)
        await page.fill("#totp-code", totp.now())
        await page.click("#signin-form button[type=submit]")
        await expect(page.locator("#who")).to_contain_text(name)
        await page.click("#nav a[href='#/devices']")
        rows = page.locator("#device-table tbody tr")
        await expect(rows).to_have_count(1)
        await expect(rows.first).to_contain_text(mine.serial)
        status = await page.evaluate("async (path) => (await fetch('/api/v1/devices/' + path)).status",
                                     quote(quote(other.id_string, safe=""), safe=""))
        assert status == 404
        # Files are a catalogue shared by every scope: listed, but no upload or delete for a scoped operator.
        await page.click("#nav a[href='#/files']")
        await expect(page.locator("#file-list table")).to_be_visible()  # the API answers a scoped reader
        assert await page.locator("#upload-form, #file-list button.danger").count() == 0
        assert not recorded.errors, recorded.errors
    finally:
        await context.close()


async def test_users_and_audit_pages(browser: Browser, recorded: Recorded, api: httpx.AsyncClient,
                                     stack: Stack) -> None:
    """Admin: create a user, end its sessions, lock and unlock it, reset its password; then find
    those writes in the audit trail (filters, cursor paging, before/after). Anyone else sees
    neither page's controls."""
    name, password, new_password = "ui-acct-" + uuid.uuid4().hex[:6], "first long password", "second long password"
    ghost = "ui-ghost-" + uuid.uuid4().hex[:6]
    console = console_url(stack)
    context = await new_context(browser, recorded)
    page = await context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    try:
        await sign_in(page, stack, stack.admin_key)
        await page.click("#nav a[href='#/users']")
        await page.fill("#user-name", name)
        await page.fill("#user-password", password)
        await page.select_option("#user-role", "read-only")
        await page.fill("#user-scope", '{"tags": "ui-nothing"}')
        await page.click("#user-form button[type=submit]")
        await expect(page.locator("#user-message")).to_contain_text(f"User {name} (read-only) created.")
        row = page.locator(f"#user-list tr[data-user='{name}']")
        await expect(row).to_contain_text('{"tags":"ui-nothing"}')
        # Its console session, listed and ended from the page.
        async with httpx.AsyncClient(base_url=console, timeout=30) as outside:
            opened = await outside.post("/console/api/session", json={"username": name, "password": password})
            assert opened.status_code == 201, opened.text
            outside.cookies.clear()  # the session's cookie goes with the requests below only
            cookie = {"Cookie": f"acs_session={opened.cookies['acs_session']}"}
            assert (await outside.get("/api/v1/devices", params={"limit": 1}, headers=cookie)).status_code == 200
            await row.locator("button:has-text('Sessions')").click()
            await expect(page.locator("#user-sessions tbody tr")).to_have_count(1)
            await page.click("#revoke-all-sessions")
            await expect(page.locator("#user-message")).to_contain_text(f"Ended 1 session(s) of {name}.")
            await expect(page.locator("#user-sessions")).to_contain_text("No open session.")
            assert (await outside.get("/api/v1/devices", params={"limit": 1}, headers=cookie)).status_code == 401
            # Lock and unlock.
            await row.locator("button:has-text('Lock')").click()
            await expect(row).to_contain_text("locked")
            locked = await outside.post("/console/api/session", json={"username": name, "password": password})
            assert locked.status_code == 401 and "locked" in locked.json()["detail"]
            await row.locator("button:has-text('Unlock')").click()
            await expect(row).to_contain_text("active")
            # Reset the password.
            await row.locator("button:has-text('Reset password')").click()
            await expect(page.locator("#reset-name")).to_have_value(name)
            await page.fill("#reset-password", new_password)
            await page.click("#reset-form button[type=submit]")
            await expect(page.locator("#user-message")).to_contain_text(f"Password of {name} set")
            assert (await outside.post("/console/api/session", json={"username": name,
                                                                     "password": password})).status_code == 401
            signed = await outside.post("/console/api/session", json={"username": name, "password": new_password})
            assert signed.status_code == 201
            await screenshot(page, "users")

            # The audit trail: the writes just made, filtered, with their before and after.
            for _ in range(55):  # refused writes, enough for two pages of one target
                assert (await api.post(f"/users/{ghost}/password", json={"new_password": "x" * 12})).status_code == 404
            await page.click("#nav a[href='#/audit']")
            await page.fill("#audit-target", f"/api/v1/users/{name}")
            await page.select_option("#audit-method", "PATCH")
            rows = page.locator("#audit-list tbody tr")
            await expect(rows).to_have_count(2)  # the lock and the unlock
            await expect(rows.first).to_contain_text("200 ok")
            await rows.first.click()
            detail = page.locator("#audit-detail")
            await expect(detail).to_contain_text('"locked":true')  # before the unlock
            await expect(detail).to_contain_text('"locked":false')  # after it
            await expect(detail).to_contain_text("bootstrap-admin")
            await screenshot(page, "audit")
            await page.select_option("#audit-method", "")
            await page.fill("#audit-target", f"/api/v1/users/{ghost}")
            await page.locator("#audit-target").dispatch_event("change")
            await expect(rows).to_have_count(50)
            await expect(rows.first).to_contain_text("404 refused")
            stored = (await api.get("/audit", params={"path_prefix": f"/api/v1/users/{ghost}", "limit": 1000})).json()
            assert len(stored["records"]) == 55, [(r["service"], r["method"], r["path"]) for r in stored["records"][:3]]
            await page.click("#audit-older")
            await expect(rows).to_have_count(5)
            await expect(page.locator(".pager")).to_contain_text("page 2")
            await page.click("#audit-newer")
            await expect(rows).to_have_count(50)
            # A time range that ended before the test: nothing.
            await page.fill("#audit-until", "2020-01-01T00:00:00")
            await page.locator("#audit-until").dispatch_event("change")
            await expect(page.locator("#audit-list")).to_contain_text("No record matches.")
            await page.fill("#audit-until", "")
            await page.locator("#audit-until").dispatch_event("change")
            await page.fill("#audit-target", "")
            await page.locator("#audit-target").dispatch_event("change")
            await expect(rows).to_have_count(50)
            page_text = await page.locator("#view").inner_text()
            assert password not in page_text and new_password not in page_text
        await page.click("#signout")
        await expect(page.locator("#signin")).to_be_visible()
        # The user itself (read-only, scoped): no link, and the pages show no control.
        await page.fill("#username", name)
        await page.fill("#password", new_password)
        await page.click("#signin-form button[type=submit]")
        await expect(page.locator("#who")).to_contain_text(f"{name} (read-only, scope")
        for link in ("#/users", "#/audit"):
            assert await page.locator(f"#nav a[href='{link}']").is_hidden()
            await page.goto(console + "/#" + link[1:])
            await expect(page.locator("#view")).to_contain_text("Shown to unscoped admins only.")
            assert await page.locator("#view form, #view button").count() == 0
        assert not recorded.errors, recorded.errors
    finally:
        await context.close()


async def test_sign_out_ends_the_session(admin_page: Page, stack: Stack) -> None:
    token = next(c for c in await admin_page.context.cookies() if c["name"] == "acs_session")["value"]
    async with httpx.AsyncClient(base_url=stack.api_url, cookies={"acs_session": token}) as client:
        assert (await client.get("/devices", params={"limit": 1})).status_code == 200
        await admin_page.click("#signout")
        await expect(admin_page.locator("#signin")).to_be_visible()
        assert (await client.get("/devices", params={"limit": 1})).status_code == 401
    assert not [c for c in await admin_page.context.cookies() if c["name"] == "acs_session"]


def test_no_request_of_the_page_left_127_0_0_1(recorded: Recorded) -> None:
    assert len(recorded.urls) > 50
    assert recorded.hosts() <= {"127.0.0.1", "data"}, sorted(recorded.hosts())
    assert not recorded.errors, recorded.errors
