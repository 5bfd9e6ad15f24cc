"""Whole sessions of simulated CPEs against a tiny ACS on a loopback port.

The ACS (simulator.miniacs) demands Digest, runs each session through cwmp.session.AcsSession
(so every message the simulator sends is parsed by cwmp.codec and checked against the session
rules), sends scripted RPCs, and serves files behind Digest itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from cwmp.codec import parse_envelope
from cwmp.models import (
    Download,
    DownloadResponse,
    FactoryReset,
    GetParameterValues,
    GetParameterValuesResponse,
    Inform,
    ParameterValueStruct,
    Reboot,
    SetParameterValues,
    TransferComplete,
    Upload,
    UploadResponse,
)
from cwmp.session import InformReceived, RequestReceived, ResponseReceived
from cwmp.values import ParameterValue
from simulator.config import FleetSettings
from simulator.fleet import Fleet
from simulator.miniacs import MiniAcs, eventually, serving

FIRMWARE = hashlib.sha256(b"seed").digest() * 4096  # 128 KiB
FILE_USER, FILE_PASS = "dl-user", "dl-pass"
IGD = "InternetGatewayDevice."


def codes(inform: Inform) -> list[tuple[str, str]]:
    return [(e.event_code, e.command_key) for e in inform.event]


def params(inform: Inform) -> dict[str, str]:
    return {p.name: p.value.value for p in inform.parameter_list}



@asynccontextmanager
async def fleet_against(acs: MiniAcs, base_url: list[str] | None = None,
                        **settings: object) -> AsyncIterator[tuple[Fleet, str]]:
    """Serve ``acs``, put its base URL in ``base_url`` (for plans), start a fleet against it."""
    async with serving(acs) as base:
        if base_url is not None:
            base_url.append(base)
        options: dict[str, object] = {"acs_url": base + "/cwmp", "devices": 1, "acs_password": "secret",
                                      "reboot_delay": 0.05, "periodic_interval": 3600, "seed": 1}
        options.update(settings)
        fleet = Fleet(FleetSettings(**options))  # type: ignore[arg-type]
        await fleet.start()
        try:
            yield fleet, base
        finally:
            await fleet.stop()


def digest_acs(plan: Callable[[Inform], list], **kwargs: object) -> MiniAcs:  # type: ignore[type-arg]
    return MiniAcs(auth="digest", password_for=lambda _user: "secret", plan=plan,
                   files={"fw-2.4.1.bin": FIRMWARE}, file_credentials=(FILE_USER, FILE_PASS), **kwargs)  # type: ignore[arg-type]


def transfer_completes(acs: MiniAcs) -> list[TransferComplete]:
    return [e.request for e in acs.received(RequestReceived) if isinstance(e.request, TransferComplete)]


async def test_bootstrap_gpv_and_firmware_download_then_transfer_complete() -> None:
    def plan(inform: Inform) -> list:  # type: ignore[type-arg]
        if ("0 BOOTSTRAP", "") not in codes(inform):
            return []
        return [GetParameterValues([IGD + "DeviceInfo.", IGD + "ManagementServer.PeriodicInformInterval"]),
                Download(command_key="dl-1", file_type="1 Firmware Upgrade Image",
                         url=f"{base_url[0]}/files/fw-2.4.1.bin", username=FILE_USER, password=FILE_PASS,
                         file_size=len(FIRMWARE))]

    base_url: list[str] = []
    acs = digest_acs(plan)
    async with fleet_against(acs, base_url) as (fleet, _base):
        await eventually(lambda: bool(transfer_completes(acs)) and acs.sessions_completed >= 2)
        summary = fleet.metrics.summary()

    assert acs.violations == []
    assert acs.auth_failures == 0
    informs = [e.inform for e in acs.received(InformReceived)]
    first, second = informs[0], informs[1]
    assert codes(first) == [("0 BOOTSTRAP", ""), ("1 BOOT", "")]
    assert params(first)[IGD + "DeviceInfo.SoftwareVersion"] == "1.0.0"

    responses = [e.response for e in acs.received(ResponseReceived)]
    gpv = next(r for r in responses if isinstance(r, GetParameterValuesResponse))
    values = {p.name: p.value for p in gpv.parameter_list}
    assert values[IGD + "DeviceInfo.SerialNumber"] == ParameterValue("SIM000000", "xsd:string")
    assert values[IGD + "ManagementServer.PeriodicInformInterval"] == ParameterValue("3600", "xsd:unsignedInt")
    download = next(r for r in responses if isinstance(r, DownloadResponse))
    assert download.status == 1 and download.start_time.startswith("0001-01-01")

    # The firmware was fetched with Digest (challenge, then success), then the device rebooted.
    assert acs.file_requests == [("GET", "/files/fw-2.4.1.bin", 401), ("GET", "/files/fw-2.4.1.bin", 200)]
    assert set(codes(second)) == {("1 BOOT", ""), ("4 VALUE CHANGE", ""), ("7 TRANSFER COMPLETE", ""),
                                  ("M Download", "dl-1")}
    assert params(second)[IGD + "DeviceInfo.SoftwareVersion"] == "2.4.1"
    [tc] = transfer_completes(acs)
    assert tc.command_key == "dl-1" and tc.fault_struct.fault_code == 0
    assert not tc.start_time.startswith("0001") and not tc.complete_time.startswith("0001")
    assert summary["transfers"] == {"download ok": 1}
    assert summary["sessions_failed"] == 0


async def test_raw_messages_of_a_session_parse_with_the_codec() -> None:
    """Record the raw bodies on the wire, not only what AcsSession made of them."""
    acs = digest_acs(lambda inform: [GetParameterValues(["Device.DeviceInfo.UpTime"])])
    bodies: list[bytes] = []

    async def recorder(scope, receive, send):  # type: ignore[no-untyped-def]
        async def tee():  # type: ignore[no-untyped-def]
            message = await receive()
            bodies.append(message.get("body", b""))
            return message
        await acs(scope, tee, send)

    async with serving(recorder) as base:
        fleet = Fleet(FleetSettings(acs_url=base + "/", devices=1, model="tr181", acs_password="secret",
                                    periodic_interval=3600, cwmp_version="1.0"))
        await fleet.start()
        try:
            await eventually(lambda: acs.sessions_completed >= 1)
        finally:
            await fleet.stop()
    envelopes = [parse_envelope(b) for b in bodies if b.strip()]
    assert [e.method for e in envelopes] == ["Inform", "Inform", "GetParameterValuesResponse"]
    assert {e.cwmp_ns for e in envelopes} == {"urn:dslforum-org:cwmp-1-0"}
    # Unauthenticated Inform, the Inform again with Digest, the empty POST, the GPV response
    # (which the ACS answers with 204: nothing more on either side, the session is over).
    assert len(bodies) == 4 and bodies[2] == b""
    assert acs.violations == []


async def test_failed_downloads_report_their_fault_and_keep_the_version() -> None:
    cases = {
        "bad-auth": ("/files/fw-2.4.1.bin", "wrong", len(FIRMWARE), 9012),
        "bad-size": ("/files/fw-2.4.1.bin", FILE_PASS, len(FIRMWARE) + 1, 9018),
        "missing": ("/files/nope-9.9.bin", FILE_PASS, 0, 9010),
    }
    base_url: list[str] = []

    def plan(inform: Inform) -> list:  # type: ignore[type-arg]
        if ("0 BOOTSTRAP", "") not in codes(inform):
            return []
        return [Download(command_key=key, url=base_url[0] + path, username=FILE_USER, password=password,
                         file_size=size) for key, (path, password, size, _code) in cases.items()]

    acs = digest_acs(plan)
    async with fleet_against(acs, base_url) as (fleet, _base):
        await eventually(lambda: len(transfer_completes(acs)) == 3)
        device = fleet.devices[0]
        await eventually(lambda: not device.rt.pending_tcs)

    results = {tc.command_key: tc.fault_struct for tc in transfer_completes(acs)}
    assert {key: fault.fault_code for key, fault in results.items()} == {k: c[3] for k, c in cases.items()}
    assert all(fault.fault_string for fault in results.values())
    informs = [e.inform for e in acs.received(InformReceived)]
    assert all(("1 BOOT", "") not in codes(i) for i in informs[1:])  # no reboot without new firmware
    assert params(informs[-1])[IGD + "DeviceInfo.SoftwareVersion"] == "1.0.0"
    assert acs.violations == []


async def test_upload_puts_the_configuration_file() -> None:
    base_url: list[str] = []

    def plan(inform: Inform) -> list:  # type: ignore[type-arg]
        if ("0 BOOTSTRAP", "") not in codes(inform):
            return []
        return [Upload(command_key="up-1", file_type="1 Vendor Configuration File",
                       url=base_url[0] + "/upload/cfg", username=FILE_USER, password=FILE_PASS)]

    acs = digest_acs(plan)
    async with fleet_against(acs, base_url, model="tr181") as (_fleet, _base):
        await eventually(lambda: bool(transfer_completes(acs)))
    assert isinstance(next(e.response for e in acs.received(ResponseReceived)), UploadResponse)
    [tc] = transfer_completes(acs)
    assert tc.command_key == "up-1" and tc.fault_struct.fault_code == 0
    assert b"Device.DeviceInfo.SerialNumber=SIM000000\n" in acs.uploads["cfg"]
    second = [e.inform for e in acs.received(InformReceived)][1]
    assert set(codes(second)) == {("7 TRANSFER COMPLETE", ""), ("M Upload", "up-1")}


async def test_reboot_and_factory_reset_with_parameter_key() -> None:
    ms = IGD + "ManagementServer."
    step = iter([
        [SetParameterValues([ParameterValueStruct(ms + "PeriodicInformInterval",
                                                  ParameterValue("600", "xsd:unsignedInt"))], "pk-1"),
         Reboot(command_key="rb-1")],
        [FactoryReset()],
    ])
    acs = digest_acs(lambda inform: next(step, []))
    async with fleet_against(acs) as (_fleet, _base):
        await eventually(lambda: len(acs.received(InformReceived)) >= 3)
    _first, after_reboot, after_reset = [e.inform for e in acs.received(InformReceived)][:3]
    assert codes(after_reboot) == [("1 BOOT", ""), ("M Reboot", "rb-1")]
    assert params(after_reboot)[ms + "ParameterKey"] == "pk-1"
    assert codes(after_reset) == [("0 BOOTSTRAP", ""), ("1 BOOT", "")]
    assert params(after_reset)[ms + "ParameterKey"] == ""  # the data model is back to defaults
    assert acs.violations == []


async def test_hold_requests_and_a_cpe_that_ignores_cookies() -> None:
    """TransferComplete waits for the 204; the session is keyed by the TCP connection."""
    base_url: list[str] = []

    def plan(inform: Inform) -> list:  # type: ignore[type-arg]
        if ("0 BOOTSTRAP", "") in codes(inform):
            return [Download(command_key="cfg-1", file_type="3 Vendor Configuration File",
                             url=base_url[0] + "/files/fw-2.4.1.bin", username=FILE_USER, password=FILE_PASS)]
        if ("7 TRANSFER COMPLETE", "") in codes(inform):
            return [GetParameterValues([IGD + "DeviceInfo.UpTime"])]
        return []

    acs = digest_acs(plan, hold_requests=True)
    async with fleet_against(acs, base_url, ignore_cookies=True) as (_fleet, _base):
        await eventually(lambda: bool(transfer_completes(acs)) and acs.sessions_completed >= 2)
    assert acs.violations == []  # AcsSession would flag a request sent under HoldRequests
    sid, _tc = next((sid, e) for sid, e in acs.log
                         if isinstance(e, RequestReceived) and isinstance(e.request, TransferComplete))
    kinds = [type(e).__name__ for s, e in acs.log if s == sid]
    # Inform, then the ACS's GPV answered, then (after the 204) the TransferComplete.
    assert kinds.index("ResponseReceived") < kinds.index("RequestReceived")
    # A configuration file is not firmware: no reboot.
    informs = [e.inform for e in acs.received(InformReceived)]
    assert ("1 BOOT", "") not in codes(informs[1])
