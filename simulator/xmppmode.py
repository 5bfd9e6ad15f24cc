"""The simulator's XMPP client mode (TR-069 Annex K): each device keeps an XMPP connection open
and takes connection requests over it, besides its HTTP connection-request listener.

A device logs in as ``cpe-<serial>@<domain>/cwmp`` (registering the account in-band on first use,
as the local prosody of ``acs up`` and the tests allows), then reports that full JID in
``ManagementServer.ConnReqJabberID``, whose forced active notification brings it to the ACS in a
"4 VALUE CHANGE" Inform. A ``connectionRequest`` iq is checked as TR-069 K.2 says: the sender must
be in ``ConnReqAllowedJabberIDs`` when that list is not empty, and the username and password must be
the device's ConnectionRequestUsername/Password; then the device answers ``result`` and opens a
session with "6 CONNECTION REQUEST" (``not-authorized`` / ``service-unavailable`` otherwise).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from xml.etree import ElementTree as ET

from cwmp import xmpp
from services.common.xmppclient import XmppClient, XmppError

from .device import Device

log = logging.getLogger(__name__)


def jid_of(device: Device, domain: str) -> str:
    return f"cpe-{device.serial.lower()}@{domain}"


class DeviceXmpp:
    """One device's XMPP connection."""

    def __init__(self, device: Device, host: str, port: int, domain: str, password: str,
                 accept: Callable[[Device], str]) -> None:
        self.device, self.accept = device, accept
        self.requests: list[str] = []  # outcomes, for tests and logs: accepted / busy / not-authorized
        self.client = XmppClient(jid_of(device, domain), password, host, port, resource="cwmp", register=True,
                                 on_iq=self._on_iq)

    async def start(self) -> None:
        await self.client.connect()
        name = f"{self.device.model.root_path}ManagementServer.ConnReqJabberID"
        if self.device.model.set_internal(name, self.client.full_jid):
            self.device.value_changed([name])

    async def stop(self) -> None:
        await self.client.close()

    async def _on_iq(self, client: XmppClient, iq: ET.Element) -> None:
        request = xmpp.read_connection_request(iq)
        if request is None:
            return
        model = self.device.model
        ms = f"{model.root_path}ManagementServer."
        allowed = [j.strip() for j in model.get_or(ms + "ConnReqAllowedJabberIDs", "").split(",") if j.strip()]
        bare = request.sender.split("/", 1)[0]
        if allowed and request.sender not in allowed and bare not in allowed:
            outcome = "not-authorized"
        elif (request.username, request.password) != (model.get_or(ms + "ConnectionRequestUsername", ""),
                                                       model.get_or(ms + "ConnectionRequestPassword", "")):
            outcome = "not-authorized"
        else:
            outcome = "accepted" if self.accept(self.device) == "accepted" else "service-unavailable"
        self.requests.append(outcome)
        try:
            if outcome == "accepted":
                client.send(xmpp.build_result(request.iq_id, request.sender))
            else:
                client.send(xmpp.build_error(request.iq_id, request.sender, outcome,
                                             "auth" if outcome == "not-authorized" else "wait"))
        except XmppError:
            log.warning("XMPP answer not sent", extra={"serial": self.device.serial})
