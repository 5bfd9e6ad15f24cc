"""The device's own ACS credentials (ManagementServer.Username/Password), set at bootstrap.

With ACS_CPE_CREDENTIALS=provisioned the shared pair of the settings is good for a device's first
contact only: its bootstrap sets a username (the device id) and a password of its own, and the
gateway accepts only those for it once the CPE has confirmed them (docs/security.md).

No password is stored anywhere. The orchestrator keeps a random nonce per device and derives the
password from it with ACS_SECRET_KEY whenever it builds the SetParameterValues (a retried
bootstrap sends the same password again); the gateway's store (services.inventory.credentials)
holds only the Digest HA1s. :func:`changes` says what the store must learn from one decision:
the planner stays pure, the engine writes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from typing import Literal

from services.orchestrator.state import DeviceState

_PURPOSE = b"acs-cpe-password\x00"
_XMPP_PURPOSE = b"acs-cpe-xmpp-password\x00"


def derive_password(secret_key: str, username: str, nonce: str) -> str:
    """The ACS password of ``username`` for ``nonce``: 32 URL-safe characters (192 bits)."""
    mac = hmac.new(secret_key.encode(), _PURPOSE + username.encode() + b"\x00" + nonce.encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()[:24]).decode()


def derive_xmpp_password(secret_key: str, device_id: str) -> str:
    """The password of the device's XMPP account (provisioned at bootstrap, Annex K).

    Derived, never stored, and the same for every bootstrap of the device: the account it
    registered on the XMPP server keeps working after a re-bootstrap that sets it again.
    """
    mac = hmac.new(secret_key.encode(), _XMPP_PURPOSE + device_id.encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()[:24]).decode()


@dataclass(frozen=True, slots=True)
class CredentialChange:
    kind: Literal["pending", "confirmed", "forgotten"]
    device_id: str
    username: str = ""
    nonce: str = ""


def changes(before: DeviceState | None, after: DeviceState | None) -> list[CredentialChange]:
    """What the credential store must learn from a decision that turned ``before`` into ``after``.

    ``after`` is None when the decision left the device as it was. Pending credentials must be
    stored before the plan that sets them goes out; confirmed ones once the CPE took them.
    """
    if after is None:
        return []
    out: list[CredentialChange] = []
    if after.pending_cpe_username and after.pending_cpe_nonce and (
            before is None or before.pending_cpe_nonce != after.pending_cpe_nonce):
        out.append(CredentialChange("pending", after.id, after.pending_cpe_username, after.pending_cpe_nonce))
    if after.cpe_username and after.cpe_nonce and (before is None or before.cpe_nonce != after.cpe_nonce):
        out.append(CredentialChange("confirmed", after.id, after.cpe_username, after.cpe_nonce))
    if (before is not None and (before.cpe_nonce or before.pending_cpe_nonce)
            and not (after.cpe_nonce or after.pending_cpe_nonce)):
        out.append(CredentialChange("forgotten", after.id))
    return out


def forget_updates(device: DeviceState) -> dict[str, None]:
    """Device updates after a factory reset: the CPE is back on its factory (shared) credentials."""
    if not (device.cpe_nonce or device.pending_cpe_nonce):
        return {}
    return {"cpe_username": None, "cpe_nonce": None, "pending_cpe_username": None, "pending_cpe_nonce": None}
