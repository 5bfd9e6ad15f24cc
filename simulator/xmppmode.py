"""The simulator's XMPP client mode (TR-069 Annex K): each device keeps an XMPP connection open
and takes connection requests over it, besides its HTTP connection-request listener.

Two ways to get an account. With a fixed one (``xmpp_server``), a device logs in as
``cpe-<serial>@<domain>/cwmp`` when the fleet starts. Provisioned (``xmpp_provisioned``), a TR-181
device has no account at first and logs in once the ACS has configured and enabled the
``Device.XMPP.Connection.{i}`` that ``ManagementServer.ConnReqXMPPConnection`` names, with its
Username, Password, Domain, Resource and first enabled ``Server.{i}`` (:func:`provisioned`); the
fleet checks after every session, as a CPE applies its new settings once the session is over.
Either way the account is registered in-band on first use (as the local prosody of ``acs up`` and
the tests allows), and the device reports its full JID in ``ManagementServer.ConnReqJabberID``,
whose forced active notification brings it to the ACS in a "4 VALUE CHANGE" Inform.

A ``connectionRequest`` iq is checked as TR-069 K.2 says: the sender must
be in ``ConnReqAllowedJabberIDs`` when that list is not empty, and the username and password must be
the device's ConnectionRequestUsername/Password; then the device answers ``result`` and opens a
session with "6 CONNECTION REQUEST" (``not-authorized`` / ``service-unavailable`` otherwise).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from xml.etree import ElementTree as ET

from cwmp import xmpp
from cwmp.faults import CwmpFault
from cwmp.values import parse_boolean
from services.common.xmppclient import XmppClient, XmppError

from .device import Device

log = logging.getLogger(__name__)


def jid_of(device: Device, domain: str) -> str:
    return f"cpe-{device.serial.lower()}@{domain}"


@dataclass(frozen=True, slots=True)
class Account:
    """What a device logs in with: its bare JID, password, resource, and the XMPP server."""

    jid: str
    password: str = field(repr=False)
    host: str
    port: int
    resource: str = "cwmp"
    connection: str = ""  # the Device.XMPP.Connection.{i}. it came from ("": a fixed account)


def provisioned(device: Device) -> Account | None:
    """The account the ACS provisioned, once the connection ConnReqXMPPConnection names is enabled
    with a username, a domain and an enabled server; None before."""
    model = device.model
    reference = model.get_or(f"{model.root_path}ManagementServer.ConnReqXMPPConnection", "").strip().rstrip(".")
    if not reference:
        return None
    connection = reference + "."
    if not parse_boolean(model.get_or(connection + "Enable", "false")):
        return None
    username, domain = model.get_or(connection + "Username", ""), model.get_or(connection + "Domain", "")
    if not (username and domain):
        return None
    try:
        rows = [info.name for info in model.get_parameter_names(connection + "Server.", True)]
    except CwmpFault:
        return None
    for row in sorted(rows, key=lambda name: int(name.rstrip(".").rsplit(".", 1)[-1])):
        address = model.get_or(row + "ServerAddress", "")
        if address and parse_boolean(model.get_or(row + "Enable", "false")):
            return Account(f"{username}@{domain}", model.get_or(connection + "Password", ""), address,
                           int(model.get_or(row + "Port", "5222") or 5222),
                           model.get_or(connection + "Resource", "") or "cwmp", connection)
    return None


class DeviceXmpp:
    """One device's XMPP connection."""

    def __init__(self, device: Device, account: Account, accept: Callable[[Device], str]) -> None:
        self.device, self.account, self.accept = device, account, accept
        self.requests: list[str] = []  # outcomes, for tests and logs: accepted / busy / not-authorized
        self.client = XmppClient(account.jid, account.password, account.host, account.port,
                                 resource=account.resource, register=True, on_iq=self._on_iq)

    async def start(self) -> None:
        await self.client.connect()
        model = self.device.model
        if self.account.connection:  # read-only status of the provisioned connection (no notification)
            model.set_internal(self.account.connection + "JabberID", self.client.full_jid)
            model.set_internal(self.account.connection + "Status", "Up")
        name = f"{model.root_path}ManagementServer.ConnReqJabberID"
        if model.set_internal(name, self.client.full_jid):
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
