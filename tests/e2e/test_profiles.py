"""Configuration profiles on the whole ACS (`acs up --external` on the real servers) with simulated
TR-098 and TR-181 devices: convergence in one session by relative names, priority, per-device
variables from a CSV, preview equal to what then happens, drift corrected (enforce) or only
reported (report-only).

``ACS_E2E_PROFILE_DEVICES`` sets the fleet size per data model (default 60; the issue's 1,000-device
run is ``ACS_E2E_PROFILE_DEVICES=500``), ``ACS_E2E_PROFILE_SECONDS`` how long to wait for convergence
(default 0.6 s per device of a model, at least 90 s).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from cwmp.httputil import make_device_id
from simulator.config import FleetSettings
from simulator.device import Device, DeviceState
from simulator.fleet import Fleet
from tests.e2e.conftest import Stack
from tests.e2e.test_device_lifecycle import api, eventually

pytestmark = pytest.mark.e2e
__all__ = ["api"]  # fixture

PER_MODEL = int(os.environ.get("ACS_E2E_PROFILE_DEVICES", "60"))
# Bootstrapping runs at some 20 devices/s on two cores (docs/benchmarks.md): wait in proportion.
CONVERGE_SECONDS = float(os.environ.get("ACS_E2E_PROFILE_SECONDS", max(90.0, PER_MODEL * 0.6)))
SSID = {"tr098": "InternetGatewayDevice.LANDevice.1.WLANConfiguration.1.SSID", "tr181": "Device.WiFi.SSID.1.SSID"}
PSK = {"tr098": "InternetGatewayDevice.LANDevice.1.WLANConfiguration.1.KeyPassphrase",
       "tr181": "Device.WiFi.AccessPoint.1.Security.KeyPassphrase"}


def _fleet(stack: Stack, model: str, product_class: str, devices: int, serial_prefix: str | None = None,
           **settings: Any) -> Fleet:
    return Fleet(FleetSettings(acs_url=stack.gateway_url + "/", devices=devices, model=model,
                               product_class=product_class, serial_prefix=serial_prefix or product_class[:6],
                               acs_username=stack.cpe_username, acs_password=stack.cpe_password,
                               periodic_interval=3600, seed=5, ramp=max(2.0, devices / 20), reboot_delay=0.5,
                               **settings))


@pytest.fixture
async def fleets(stack: Stack) -> AsyncIterator[dict[str, tuple[str, Fleet]]]:
    tag = uuid.uuid4().hex[:6].upper()
    made = {model: (f"P{model[2:]}{tag}", None) for model in ("tr098", "tr181")}
    out = {model: (pc, _fleet(stack, model, pc, PER_MODEL)) for model, (pc, _) in made.items()}
    try:
        yield out
    finally:
        for _, fleet in out.values():
            await fleet.stop()


def _dpath(device: Device) -> str:
    return quote(device.id_string, safe="")


async def _wake(device: Device) -> None:
    await eventually(lambda: asyncio.sleep(0, device.state == DeviceState.IDLE), seconds=60)
    username, password = device.cr_credentials
    async with httpx.AsyncClient(auth=httpx.DigestAuth(username, password)) as client:
        assert (await client.get(device.cr_url)).status_code in (200, 204)


async def _profile_tasks(api: httpx.AsyncClient, device: Device) -> list[dict[str, Any]]:
    found = (await api.get(f"/devices/{_dpath(device)}/tasks", params={"limit": 200})).json()["tasks"]
    return [t for t in found if t["origin"] == "profile"]


async def _compliant(api: httpx.AsyncClient, profile_id: str, count: int) -> bool:
    counts = (await api.get(f"/profiles/{profile_id}/compliance")).json()["counts"]
    return bool(counts["compliant"] == count)


async def test_a_fleet_converges_in_one_session_and_preview_tells_what_then_happens(
        api: httpx.AsyncClient, fleets: dict[str, tuple[str, Fleet]]) -> None:
    (pc98, fleet98), (pc181, fleet181) = fleets["tr098"], fleets["tr181"]
    devices = {"tr098": fleet98.devices, "tr181": fleet181.devices}
    # Per-device variables from a CSV, before the devices ever informed (their ids are known).
    ids = {model: [make_device_id("00D09E", pc, f"{s.serial_prefix}{s.first_index + i:0{s.serial_width}d}")
                   for i in range(PER_MODEL)]
           for model, pc, s in (("tr098", pc98, fleet98.settings), ("tr181", pc181, fleet181.settings))}
    rows = ["device_id,ssid,psk"] + [f"{device_id},net-{device_id[-5:]},psk-{device_id[-5:]}-secret"
                                     for model in ids for device_id in ids[model]]
    imported = await api.post("/profiles/variables", params={"secret": "psk"}, content="\n".join(rows),
                              headers={"Content-Type": "text/csv"})
    assert imported.status_code == 200, imported.text
    assert imported.json() == {"imported": 2 * PER_MODEL, "secret": ["psk"]}

    base = 1000 + int(uuid.uuid4().hex[:4], 16)  # priorities are unique across the stack's profiles
    both = {"product_class": {"$in": [pc98, pc181]}}
    created = []
    for body in (
        {"name": f"ntp-{pc98}", "priority": base, "selector": both, "parameters": [
            {"name": "Time.NTPServer1", "value": "ntp.{oui}.example"},
            {"name": "Time.NTPServer2", "value": "low-priority.example"}]},
        {"name": f"ntp2-{pc98}", "priority": base + 1, "selector": both, "parameters": [
            {"name": "Time.NTPServer2", "value": "ntp2-{serial_number}.example"}]},
        {"name": f"wifi-{pc98}", "priority": base + 2, "selector": {"product_class": pc98}, "parameters": [
            {"name": "LANDevice.1.WLANConfiguration.1.SSID", "value": "{vars.ssid}"},
            {"name": "LANDevice.1.WLANConfiguration.1.KeyPassphrase", "value": "{vars.psk}"}]},
        {"name": f"wifi-{pc181}", "priority": base + 3, "selector": {"product_class": pc181}, "parameters": [
            {"name": "WiFi.SSID.1.SSID", "value": "{vars.ssid}"},
            {"name": "WiFi.AccessPoint.1.Security.KeyPassphrase", "value": "{vars.psk}"}]},
    ):
        response = await api.post("/profiles", json=body)
        assert response.status_code == 201, response.text
        created.append(response.json())
    tie = await api.post("/profiles", json={"name": f"tie-{pc98}", "priority": base + 1, "parameters": []})
    assert tie.status_code == 409 and "priority" in tie.json()["detail"]

    try:
        started = time.monotonic()
        await asyncio.gather(fleet98.start(), fleet181.start())
        everyone = [*devices["tr098"], *devices["tr181"]]
        for profile in created:
            count = PER_MODEL * (2 if "$in" in str(profile["selector"]) else 1)
            try:
                await eventually(lambda p=profile, c=count: _compliant(api, p["id"], c),  # type: ignore[misc]
                                 seconds=CONVERGE_SECONDS)
            except TimeoutError:
                counts = (await api.get(f"/profiles/{profile['id']}/compliance")).json()
                pytest.fail(f"{profile['name']} did not converge on {count} devices: {counts}")
        print(f"{len(everyone)} devices converged in {time.monotonic() - started:.1f} s")
        for model, fleet_devices in devices.items():
            for device in fleet_devices:
                model_values = device.model
                suffix = device.id_string[-5:]
                root = "InternetGatewayDevice." if model == "tr098" else "Device."
                assert model_values.get(f"{root}Time.NTPServer1") == "ntp.00D09E.example"
                assert model_values.get(f"{root}Time.NTPServer2") == f"ntp2-{device.serial}.example"
                assert model_values.get(SSID[model]) == f"net-{suffix}"
                assert model_values.get(PSK[model]) == f"psk-{suffix}-secret"
        # One session each: one profile task per device, sent in its bootstrap session, never a second.
        sample = everyone[:: max(1, len(everyone) // 20)]
        for device in sample:
            tasks = await _profile_tasks(api, device)
            assert [t["status"] for t in tasks] == ["succeeded"], tasks
            shown = {v["name"]: v["value"] for v in tasks[0]["args"]["parameter_values"]}
            assert shown[PSK["tr098" if device in devices["tr098"] else "tr181"]] == "********"
            desired = (await api.get(f"/devices/{_dpath(device)}/desired")).json()
            by_name = {p["name"]: p for p in desired["parameters"]}
            assert all(p["applied"] for p in by_name.values())
            ntp2 = next(p for n, p in by_name.items() if n.endswith("Time.NTPServer2"))
            assert ntp2["profile_name"] == f"ntp2-{pc98}"  # the higher priority won
            assert next(p for n, p in by_name.items() if n.endswith("KeyPassphrase"))["value"] == "********"
            variables = (await api.get(f"/devices/{_dpath(device)}/variables")).json()
            assert variables["variables"]["psk"] == "********"

        # Preview a new profile before enabling it; then what happens is what it said.
        interval = await api.post("/profiles", json={
            "name": f"inform-{pc181}", "priority": base + 4, "enabled": False, "selector": {"product_class": pc181},
            "parameters": [{"name": "ManagementServer.PeriodicInformInterval", "value": 7200}]})
        assert interval.status_code == 201, interval.text
        async def previewed() -> dict[str, Any] | None:  # once the inventory has recorded every device
            found = (await api.post(f"/profiles/{interval.json()['id']}/preview", params={"sample": 2})).json()
            return found if found["matched"] == PER_MODEL else None
        preview = await eventually(previewed)
        assert (preview["matched"], preview["would_change"], preview["unchanged"]) == (PER_MODEL, PER_MODEL, 0)
        assert preview["changes"] == {"Device.ManagementServer.PeriodicInformInterval": PER_MODEL}
        assert preview["sample"][0]["rpcs"] == [{"method": "SetParameterValues", "parameters": [
            {"name": "Device.ManagementServer.PeriodicInformInterval", "value": "7200", "type": "xsd:unsignedInt"}]}]
        assert (await api.post(f"/profiles/{interval.json()['id']}/enable")).status_code == 200
        await asyncio.sleep(1.2)  # the orchestrator's cache notices the change within a second
        await asyncio.gather(*(_wake(d) for d in everyone))
        await eventually(lambda: _compliant(api, interval.json()["id"], PER_MODEL), seconds=CONVERGE_SECONDS)
        assert all(d.model.get("Device.ManagementServer.PeriodicInformInterval") == "7200" for d in devices["tr181"])
        changed = [d for d in everyone if len(await _profile_tasks(api, d)) == 2]
        assert len(changed) == preview["would_change"] == PER_MODEL
        assert set(changed) == set(devices["tr181"])
        again = (await api.post(f"/profiles/{interval.json()['id']}/preview")).json()
        assert (again["would_change"], again["unchanged"]) == (0, PER_MODEL)
        created.append(interval.json())
    finally:
        for profile in created:
            await api.delete(f"/profiles/{profile['id']}")


@pytest.mark.parametrize("mode", ["enforce", "report"])
async def test_a_value_changed_on_the_device_is_corrected_or_only_reported(
        api: httpx.AsyncClient, stack: Stack, mode: str) -> None:
    pc = f"D{mode[:3]}{uuid.uuid4().hex[:6].upper()}"
    fleet = _fleet(stack, "tr181", pc, 2)
    priority = 5000 + int(uuid.uuid4().hex[:4], 16)
    created = await api.post("/profiles", json={
        "name": f"drift-{pc}", "priority": priority, "mode": mode, "selector": {"product_class": pc},
        "parameters": [{"name": "Time.NTPServer1", "value": "pool.ntp.org"}],
        "attributes": [{"name": "Time.NTPServer1", "notification": 2}]})
    assert created.status_code == 201, created.text
    profile_id = created.json()["id"]
    try:
        await fleet.start()
        device = fleet.devices[0]
        if mode == "enforce":
            # Notification is set by the profile: the device will report its own changes.
            await eventually(lambda: asyncio.sleep(0, device.model.notification.get("Device.Time.NTPServer1") == 2),
                             seconds=60)
            await eventually(lambda: _compliant(api, profile_id, 2), seconds=60)
        else:
            # Report-only sets nothing: set the notification by hand so the change gets reported.
            await eventually(lambda: asyncio.sleep(0, device.state == DeviceState.IDLE and device.bootstrapped_url),
                             seconds=60)
            task = await api.post(f"/devices/{_dpath(device)}/tasks", json={
                "name": "setParameterAttributes", "parameters": [{"name": "Device.Time.NTPServer1",
                                                                  "notification": 2}]})
            assert task.status_code == 201, task.text
            await _wake(device)
            await eventually(lambda: asyncio.sleep(0, device.model.notification.get("Device.Time.NTPServer1") == 2))
        await eventually(lambda: asyncio.sleep(0, device.state == DeviceState.IDLE))
        assert device.change_locally("Device.Time.NTPServer1", "rogue.example")  # active: a session at once

        async def status() -> dict[str, Any] | None:
            desired = (await api.get(f"/devices/{_dpath(device)}/desired")).json()
            entry = next((p for p in desired["profiles"] if p["profile_id"] == profile_id), None)
            return entry
        if mode == "enforce":
            await eventually(lambda: asyncio.sleep(0, device.model.get("Device.Time.NTPServer1") == "pool.ntp.org"),
                             seconds=30)
            assert (await eventually(status))["state"] in ("compliant", "pending")
            await eventually(lambda: _compliant(api, profile_id, 2))
        else:
            async def drifted() -> bool:
                entry = await status()
                return bool(entry and entry["state"] == "drifted")
            await eventually(drifted, seconds=30)
            assert device.model.get("Device.Time.NTPServer1") == "rogue.example"  # only reported
            counts = (await api.get(f"/profiles/{profile_id}/compliance")).json()["counts"]
            assert counts["drifted"] == 1
            assert await _profile_tasks(api, device) == []  # report-only never sends anything
    finally:
        await fleet.stop()
        await api.delete(f"/profiles/{profile_id}")


async def test_a_firmware_profile_upgrades_only_the_devices_below_its_version(
        api: httpx.AsyncClient, stack: Stack) -> None:
    pc = f"FW{uuid.uuid4().hex[:6].upper()}"
    name = f"fw-{pc}-3.1.0.bin"
    uploaded = await api.put(f"/files/{name}", content=os.urandom(50_000),
                             params={"file_type": "1 Firmware Upgrade Image", "version": "3.1.0"})
    assert uploaded.status_code == 201, uploaded.text
    old = _fleet(stack, "tr181", pc, 3, serial_prefix="OLD", sw_version="3.0.9")
    new = _fleet(stack, "tr181", pc, 2, serial_prefix="NEW", sw_version="3.10.0")  # above: 3.10 > 3.1
    created = await api.post("/profiles", json={"name": f"fw-{pc}", "priority": 9000 + int(uuid.uuid4().hex[:4], 16),
                                                "selector": {"product_class": pc},
                                                "firmware": {"file_name": name}})
    assert created.status_code == 201, created.text
    profile = created.json()
    assert profile["firmware"]["version"] == "3.1.0" and profile["firmware"]["file_size"] == 50_000
    try:
        await asyncio.gather(old.start(), new.start())
        await eventually(lambda: asyncio.sleep(0, all(d.sw_version == "3.1.0" for d in old.devices)), seconds=60)
        await eventually(lambda: _compliant(api, profile["id"], 5), seconds=60)
        # Preview now: nothing left to do; with a newer file, only the devices below it would change.
        async def settled() -> dict[str, Any] | None:  # the inventory records the devices a moment later
            found = (await api.post(f"/profiles/{profile['id']}/preview")).json()
            return found if found["matched"] == 5 else None
        preview = await eventually(settled)
        assert preview["would_change"] == 0, preview
        newer = f"fw-{pc}-3.11.0.bin"
        assert (await api.put(f"/files/{newer}", content=b"x" * 1000, params={
            "file_type": "1 Firmware Upgrade Image", "version": "3.11.0"})).status_code == 201
        await api.patch(f"/profiles/{profile['id']}", json={"enabled": False, "firmware": {"file_name": newer}})
        preview = (await api.post(f"/profiles/{profile['id']}/preview")).json()
        assert (preview["matched"], preview["would_change"]) == (5, 5)
        assert preview["sample"][0]["rpcs"][0]["method"] == "Download"
        await api.post(f"/profiles/{profile['id']}/rollback", json={"version": 1})
        await eventually(lambda: _compliant(api, profile["id"], 5), seconds=60)
        assert all((d.sw_version or d.settings.sw_version) == "3.10.0" for d in new.devices)  # untouched
        for device in new.devices:
            assert await _profile_tasks(api, device) == []
        for device in old.devices:
            tasks = await _profile_tasks(api, device)
            assert [(t["name"], t["status"]) for t in tasks] == [("download", "succeeded")], tasks
    finally:
        await old.stop()
        await new.stop()
        await api.delete(f"/profiles/{profile['id']}")


PORT_MAPPING = {"tr098": ("WANDevice.1.WANConnectionDevice.1.WANIPConnection.1.PortMapping.", "PortMappingProtocol",
                          "PortMappingEnabled"),
                "tr181": ("NAT.PortMapping.", "Protocol", "Enable")}


async def test_object_instances_converge_created_once_and_unwanted_ones_deleted(
        api: httpx.AsyncClient, stack: Stack) -> None:
    tag = uuid.uuid4().hex[:6].upper()
    fleets = {model: _fleet(stack, model, f"O{model[2:]}{tag}", 2) for model in PORT_MAPPING}
    ids: list[str] = []
    try:
        for fleet in fleets.values():
            await fleet.start()
        for fleet in fleets.values():
            for device in fleet.devices:
                await eventually(lambda d=device: asyncio.sleep(0, d.state == DeviceState.IDLE  # type: ignore[misc]
                                                                and d.bootstrapped_url), seconds=60)
                # A row the operator does not want, made by the device itself.
                device.model.add_object(device.model.root_path + PORT_MAPPING[fleet.settings.model][0], "",
                                        internal=True)
        for n, (model, fleet) in enumerate(fleets.items()):
            path, protocol, enable = PORT_MAPPING[model]
            created = await api.post("/profiles", json={
                "name": f"pm-{model}-{tag}", "priority": 7000 + n * 1000 + int(tag[:3], 16) % 900,
                "selector": {"product_class": fleet.settings.product_class},
                "objects": [{"path": path, "keys": [{"name": "ExternalPort", "value": 8080},
                                                    {"name": protocol, "value": "TCP"}],
                             "values": [{"name": "InternalClient", "value": "192.168.1.10"},
                                        {"name": "InternalPort", "value": 80}, {"name": enable, "value": True}]},
                            {"path": path, "keys": [{"name": enable, "value": False}], "present": False}]})
            assert created.status_code == 201, created.text
            ids.append(created.json()["id"])
        for fleet in fleets.values():
            for device in fleet.devices:
                await _wake(device)
        for profile_id in ids:
            await eventually(lambda pid=profile_id: _compliant(api, pid, 2), seconds=90)  # type: ignore[misc]

        def rows(device: Device) -> dict[str, dict[str, str]]:
            table = device.model.root_path + PORT_MAPPING[device.settings.model][0]
            out: dict[str, dict[str, str]] = {}
            for info in device.model.get_parameter_names(table, False):
                rest = info.name[len(table):]
                number, _, leaf = rest.partition(".")
                if leaf and not leaf.endswith("."):
                    out.setdefault(number, {})[leaf] = device.model.get(info.name)
            return out

        for model, fleet in fleets.items():
            _, protocol, enable = PORT_MAPPING[model]
            for device in fleet.devices:
                found = rows(device)
                # The disabled row is gone; one row is the wanted one, with its values.
                assert [r["ExternalPort"] for r in found.values()] == ["8080"], found
                (row,) = found.values()
                assert (row[protocol], row["InternalClient"], row["InternalPort"], row[enable]) == (
                    "TCP", "192.168.1.10", "80", "true")
        # More sessions (a connection request each) create nothing more.
        device = fleets["tr098"].devices[0]
        before = dict(rows(device))
        await _wake(device)
        await eventually(lambda: asyncio.sleep(0, device.state == DeviceState.IDLE), seconds=30)
        await asyncio.sleep(1.0)
        assert rows(device) == before
        tasks = await _profile_tasks(api, device)
        assert [t["name"] for t in tasks] == ["profileObjects"] and tasks[0]["status"] == "succeeded"
        desired = (await api.get(f"/devices/{_dpath(device)}/desired")).json()
        assert {o["present"]: o["applied"] for o in desired["objects"]} == {True: True, False: True}
    finally:
        for fleet in fleets.values():
            await fleet.stop()
        for profile_id in ids:
            await api.delete(f"/profiles/{profile_id}")


async def test_values_applied_after_a_reboot_stay_pending_until_read_back(
        api: httpx.AsyncClient, stack: Stack) -> None:
    pc = f"S1{uuid.uuid4().hex[:6].upper()}"
    # The device answers Status 1 for the NTP server and applies it only when it boots.
    fleet = _fleet(stack, "tr181", pc, 1, apply_after_reboot=("Time.NTPServer1",))
    created = await api.post("/profiles", json={
        "name": f"later-{pc}", "priority": 9000 + int(uuid.uuid4().hex[:3], 16), "selector": {"product_class": pc},
        "parameters": [{"name": "Time.NTPServer1", "value": "after-boot.example"}]})
    assert created.status_code == 201, created.text
    profile_id = created.json()["id"]
    try:
        await fleet.start()
        device = fleet.devices[0]

        async def state() -> dict[str, Any] | None:
            desired = (await api.get(f"/devices/{_dpath(device)}/desired")).json()
            return next((p for p in desired.get("profiles", []) if p["profile_id"] == profile_id), None)

        async def settled() -> bool:
            tasks = await _profile_tasks(api, device)
            return bool(tasks) and all(t["status"] in ("succeeded", "failed") for t in tasks) and \
                device.state == DeviceState.IDLE
        await eventually(settled, seconds=60)
        assert device.after_boot == {"Device.Time.NTPServer1": "after-boot.example"}
        assert (await eventually(state))["state"] == "pending"  # Status 1: not compliant yet
        # The next session reads it back: still the old value, so it waits for the boot.
        await _wake(device)
        await eventually(lambda: _reads(api, device, 1), seconds=30)
        await eventually(settled, seconds=30)
        assert (await state() or {})["state"] == "pending"
        assert [t["name"] for t in await _profile_tasks(api, device)].count("setParameterValues") == 1
        # A reboot applies it; the Inform after it brings a read that confirms it.
        reboot = await api.post(f"/devices/{_dpath(device)}/tasks", json={"name": "reboot"})
        assert reboot.status_code == 201, reboot.text
        await _wake(device)
        await eventually(lambda: _reads(api, device, 2), seconds=60)
        await eventually(lambda: _compliant(api, profile_id, 1), seconds=30)
        assert device.model.get("Device.Time.NTPServer1") == "after-boot.example"
        assert [t["name"] for t in await _profile_tasks(api, device)].count("setParameterValues") == 1
    finally:
        await fleet.stop()
        await api.delete(f"/profiles/{profile_id}")


async def _reads(api: httpx.AsyncClient, device: Device, count: int) -> bool:
    reads = [t for t in await _profile_tasks(api, device)
             if t["name"] == "getParameterValues" and t["status"] == "succeeded"]
    return len(reads) >= count


async def test_full_discovery_walks_a_big_model_level_by_level_at_bootstrap(
        api: httpx.AsyncClient, stack: Stack) -> None:
    pc = f"FD{uuid.uuid4().hex[:6].upper()}"
    created = await api.post("/profiles", json={
        "name": f"full-{pc}", "priority": 11000 + int(uuid.uuid4().hex[:3], 16), "selector": {"product_class": pc},
        "discovery": {"full": True}})
    assert created.status_code == 201, created.text
    fleet = _fleet(stack, "tr181", pc, 1, parameters=3000)
    try:
        await fleet.start()
        device = fleet.devices[0]

        async def walked() -> dict[str, Any] | None:
            found = (await api.get(f"/devices/{_dpath(device)}/tasks", params={"limit": 50})).json()["tasks"]
            walk = next((t for t in found if t["origin"] == "profile-discovery"), None)
            return walk if walk and walk["status"] in ("succeeded", "failed") else None
        walk = await eventually(walked, seconds=120)
        assert walk["status"] == "succeeded", walk
        assert walk["args"] == {"parameter_path": "Device.", "read_values": True, "depth": 32}
        leaves = [i.name for i in device.model.get_parameter_names("Device.", False) if not i.name.endswith(".")]
        assert len(leaves) > 3000
        # Every name of the model, found level by level (and too many for the task document).
        assert walk["result"]["parameters_count"] == len(leaves) and walk["result"]["parameters_stored"]
        full = (await api.get(f"/tasks/{walk['id']}")).json()["result"]
        assert {p["name"] for p in full["parameters"]} == set(leaves)
    finally:
        await fleet.stop()
        await api.delete(f"/profiles/{created.json()['id']}")
