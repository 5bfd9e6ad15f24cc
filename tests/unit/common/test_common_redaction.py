"""Secret parameters: which names, the shapes they are hidden in, configured patterns, log lines."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from services.bus.events import DeviceEvent, ValueChange
from services.common import redaction
from services.common.logs import JsonFormatter
from services.common.redaction import REDACTED, is_secret, redact, redact_model


@pytest.fixture(autouse=True)
def _default_patterns() -> Iterator[None]:
    yield
    redaction.configure([])


@pytest.mark.parametrize("name", [
    "Device.ManagementServer.Password", "InternetGatewayDevice.ManagementServer.ConnectionRequestPassword",
    "Device.WiFi.AccessPoint.1.Security.KeyPassphrase", "Device.WiFi.AccessPoint.1.Security.PreSharedKey",
    "InternetGatewayDevice.LANDevice.1.WLANConfiguration.1.WEPKey.1.WEPKey",
    "InternetGatewayDevice.LANDevice.1.WLANConfiguration.1.PreSharedKey.1.KeyPassphrase",
    "Device.Services.VoiceService.1.SIP.Client.1.AuthPassword", "Device.X_ACME_Passphrase",
])
def test_secret_names(name: str) -> None:
    assert is_secret(name)


@pytest.mark.parametrize("name", ["Device.ManagementServer.Username", "Device.WiFi.SSID.1.SSID",
                                  "Device.WiFi.AccessPoint.1.Security.ModeEnabled", "Device.ManagementServer.URL"])
def test_other_names(name: str) -> None:
    assert not is_secret(name)


def test_configured_patterns_match_the_last_segment_or_the_whole_name() -> None:
    assert not is_secret("Device.X_ACME_Token")
    redaction.configure(["X_ACME_Token", "Device.Services.*.Pin"])
    assert is_secret("Device.X_ACME_Token") and is_secret("device.x_acme_token")
    assert is_secret("Device.Services.Voice.1.Pin") and not is_secret("Device.Other.Pin")
    redaction.configure([])
    assert not is_secret("Device.X_ACME_Token")


def test_every_shape_is_redacted_and_empty_stays_empty() -> None:
    psk = "Device.WiFi.AccessPoint.1.Security.KeyPassphrase"
    data = {
        "args": {"parameter_values": [{"name": psk, "value": "k1", "type": "xsd:string"},
                                      {"name": "Device.WiFi.SSID.1.SSID", "value": "home"}]},
        "pairs": [[psk, "k2"], ["Device.WiFi.SSID.1.SSID", "home"]],
        "wire": [{"name": psk, "value": {"value": "k3", "type": "xsd:string"}}],
        "keyed": {psk: {"value": "k4", "type": "xsd:string", "writable": True}, "Device.A.Password": "k5"},
        "change": {"name": psk, "old": "k6", "new": ""},
        "password": "k7", "unset": {"name": "Device.ManagementServer.Password", "value": ""},
    }
    out = redact(data)
    assert not any(f"k{i}" in json.dumps(out) for i in range(1, 8))
    assert out["args"]["parameter_values"][1]["value"] == "home" and out["pairs"][1] == ["Device.WiFi.SSID.1.SSID",
                                                                                         "home"]
    assert out["wire"][0]["value"] == {"value": REDACTED, "type": "xsd:string"}
    assert out["keyed"][psk] == {"value": REDACTED, "type": "xsd:string", "writable": True}
    assert out["change"] == {"name": psk, "old": REDACTED, "new": ""}
    assert out["unset"]["value"] == ""
    assert data["password"] == "k7"  # a copy: the original is untouched


def test_events_and_log_lines_carry_no_secret() -> None:
    event = DeviceEvent(kind="value_changed", device_id="d", changes=[
        ValueChange(name="Device.WiFi.AccessPoint.1.Security.KeyPassphrase", old="old-key", new="new-key")],
        details={"parameters": [{"name": "Device.ManagementServer.Password", "value": "pw"}]})
    clean = redact_model(event)
    assert "key\"" not in clean.model_dump_json() and "old-key" not in clean.model_dump_json()
    assert clean.changes[0].new == REDACTED and clean.event_id == event.event_id
    record = logging.makeLogRecord({"msg": "planned", "levelname": "INFO", "device_id": "d",
                                    "rpc": {"parameter_list": [{"name": "Device.ManagementServer.Password",
                                                                "value": {"value": "pw-in-log"}}]},
                                    "password": "pw2"})
    line = JsonFormatter("test").format(record)
    assert "pw-in-log" not in line and "pw2" not in line and json.loads(line)["device_id"] == "d"
