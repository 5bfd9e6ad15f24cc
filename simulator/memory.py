"""What a simulated CPE keeps across runs, as a real one keeps it in flash.

Since the ACS gives every device its own ManagementServer.Username/Password at bootstrap and then
refuses the shared first-contact pair for it, a fleet that forgot those on exit could never
inform again under the same serial numbers: every re-run of ``acs sim`` would fail with 401. The
memory file keeps, per ACS URL and device, the ACS credentials and the URL whose BOOTSTRAP was
acknowledged (a device that remembers it sends ``1 BOOT``, not ``0 BOOTSTRAP``, on its next run).
A factory reset forgets both, as on a real CPE.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .device import Device

VERSION = 1


def load(path: str, acs_url: str) -> dict[str, dict[str, str]]:
    """The remembered devices of ``acs_url``: device id -> {username, password, bootstrapped}."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the simulator memory {path}: {exc}") from exc
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise ValueError(f"{path} is not a simulator memory file (version {VERSION})")
    remembered = data.get("acs", {}).get(acs_url, {})
    return remembered if isinstance(remembered, dict) else {}


def recall(device: Device, remembered: dict[str, dict[str, str]]) -> None:
    """Give ``device`` back what it remembered, if anything."""
    entry = remembered.get(device.id_string)
    if not entry:
        return
    root = device.model.root_path
    device.model.set_internal(f"{root}ManagementServer.Username", entry.get("username", ""))
    device.model.set_internal(f"{root}ManagementServer.Password", entry.get("password", ""))
    device.bootstrapped_url = entry.get("bootstrapped") or None


def save(path: str, acs_url: str, devices: list[Device]) -> None:
    """Write the devices' memory for ``acs_url``, keeping what the file holds for other ACSs."""
    target = Path(path)
    try:
        data: dict[str, Any] = json.loads(target.read_text())
        if not isinstance(data, dict) or data.get("version") != VERSION:
            data = {}
    except (OSError, ValueError):
        data = {}
    mine = {}
    for device in devices:
        if device.bootstrapped_url is None:
            continue  # never got past a first contact: the shared pair still applies
        username, password = device.acs_credentials
        mine[device.id_string] = {"username": username, "password": password,
                                  "bootstrapped": device.bootstrapped_url}
    acs = data.setdefault("acs", {})
    acs[acs_url] = {**acs.get(acs_url, {}), **mine}
    data["version"] = VERSION
    target.parent.mkdir(parents=True, exist_ok=True)
    # Written whole then renamed: a run killed while saving leaves the previous memory intact.
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".tmp")
    with os.fdopen(fd, "w") as out:
        json.dump(data, out)
    os.chmod(tmp, 0o600)  # it holds passwords
    os.replace(tmp, target)
