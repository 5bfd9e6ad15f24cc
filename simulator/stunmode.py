"""The simulator's STUN client mode (TR-069 Annex G): UDP connection requests through NAT.

With ``FleetSettings.stun`` on, a device whose ``ManagementServer.STUNEnable`` is true (the ACS
sets it at bootstrap) opens one UDP socket, its UDP connection-request socket, and from it:

* sends RFC 5389 Binding requests (with Annex G's CONNECTION-REQUEST-BINDING attribute, BINDING-
  CHANGE after the mapping changed, USERNAME and MESSAGE-INTEGRITY when STUNUsername is set) to
  ``STUNServerAddress:STUNServerPort``, retransmitted after 0.5, 1 and 2 s, and again every
  ``STUNMinimumKeepAlivePeriod`` seconds (30 when 0) to keep the NAT mapping open;
* learns the mapped address from the answer, sets ``UDPConnectionRequestAddress`` to it and
  ``NATDetected`` to whether it differs from the device's own address (the host of its
  ConnectionRequestURL); the forced active notification of UDPConnectionRequestAddress brings
  the change to the ACS in a "4 VALUE CHANGE" Inform;
* takes the ACS's UDP connection requests on that same socket (cwmp/udp.py): the signature with
  the device's ConnectionRequestUsername/Password, the timestamp within ``udp_clock_skew`` of
  its clock and not older than the last accepted one, duplicates of one id ignored; then opens a
  session with "6 CONNECTION REQUEST".

``FleetSettings.behind_nat`` simulates a carrier-grade NAT in front of the devices: each reports a
ConnectionRequestURL on 100.64.0.0/10 (its "WAN address", which the ACS cannot reach) while its
STUN server sees it at 127.0.0.1, so NATDetected is true and only the UDP path wakes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from cwmp import stun
from cwmp.udp import UdpConnectionRequestVerifier, format_host_port

from .device import Device

log = logging.getLogger(__name__)

RETRANSMITS = (0.5, 1.0, 2.0)  # RFC 5389 7.2.1: RTO doubling; fewer tries than Rc=7 to notice a dead server sooner
DEFAULT_KEEPALIVE = 30.0


def parse_boolean(value: str) -> bool:
    return value.strip().lower() in ("true", "1")


class DeviceStun(asyncio.DatagramProtocol):
    """One device's STUN client and UDP connection-request listener."""

    def __init__(self, device: Device, host: str, accept: Callable[[Device], str],
                 count: Callable[[str], None] | None = None, clock_skew: float | None = 300.0) -> None:
        self.device, self.host, self.accept = device, host, accept
        self.count = count or (lambda _outcome: None)
        self.transport: asyncio.DatagramTransport | None = None
        self.mapped: tuple[str, int] | None = None
        self.last_error = ""
        self.requests: list[str] = []  # UDP connection requests: accepted / busy / the refusal reason
        self.bindings = 0  # Binding requests answered
        self._pending: dict[bytes, asyncio.Future[tuple[str, int]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._changed = False
        self.verifier = UdpConnectionRequestVerifier("", "", max_clock_skew=clock_skew)

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        if self.transport is not None:
            self.transport.close()  # a client turned off and on again: a new socket, a new mapping
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=(self.host, 0))
        self._task = asyncio.create_task(self._keep_alive())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.transport is not None:
            self.transport.close()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def local_address(self) -> tuple[str, int]:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    # -- the device's STUN settings ----------------------------------------------------------

    def _ms(self, name: str) -> str:
        return f"{self.device.model.root_path}ManagementServer.{name}"

    def _get(self, name: str, default: str = "") -> str:
        return self.device.model.get_or(self._ms(name), default)

    @property
    def enabled(self) -> bool:
        return parse_boolean(self._get("STUNEnable", "false"))

    def _server(self) -> tuple[str, int]:
        # An empty STUNServerAddress means the ACS's host (TR-098/TR-181).
        host = self._get("STUNServerAddress") or (urlsplit(self.device.acs_url).hostname or "127.0.0.1")
        port = int(self._get("STUNServerPort", "3478") or 3478)
        return host, port

    def _keepalive_seconds(self) -> float:
        minimum = int(self._get("STUNMinimumKeepAlivePeriod", "0") or 0)
        return float(minimum) if minimum > 0 else DEFAULT_KEEPALIVE

    # -- STUN ---------------------------------------------------------------------------------

    async def binding(self) -> tuple[str, int]:
        """One Binding transaction (with retransmissions): the mapped address, or StunError."""
        assert self.transport is not None
        host, port = self._server()
        loop = asyncio.get_running_loop()
        tid = stun.new_transaction_id()
        username = self._get("STUNUsername")
        request = stun.build_binding_request(tid, username=username, password=self._get("STUNPassword"),
                                             binding_change=self._changed)
        future: asyncio.Future[tuple[str, int]] = loop.create_future()
        self._pending[tid] = future
        try:
            for wait in RETRANSMITS:
                self.transport.sendto(request, (host, port))
                done, _ = await asyncio.wait({future}, timeout=wait)
                if done:
                    return future.result()
            raise stun.StunError(f"no answer from the STUN server {format_host_port(host, port)}")
        finally:
            self._pending.pop(tid, None)

    async def refresh(self) -> bool:
        """A Binding request now; True when the mapping changed (and the ACS was told)."""
        try:
            mapped = await self.binding()
        except (stun.StunError, OSError) as exc:
            self.last_error = str(exc)
            log.warning("STUN binding failed", extra={"serial": self.device.serial, "error": self.last_error})
            return False
        self.last_error = ""
        self.bindings += 1
        self._changed = False
        if mapped == self.mapped:
            return False
        self.mapped = mapped
        self._changed = True  # BINDING-CHANGE in the next Binding request (Annex G)
        model = self.device.model
        address, nat = self._ms("UDPConnectionRequestAddress"), self._ms("NATDetected")
        changed = [name for name, value in ((address, format_host_port(*mapped)),
                                            (nat, "true" if self._behind_nat(mapped) else "false"))
                   if model.set_internal(name, value)]
        if changed:
            self.device.value_changed(changed)
        return True

    def _behind_nat(self, mapped: tuple[str, int]) -> bool:
        """Annex G: NAT when the mapping is not the device's own address and port."""
        own_host = urlsplit(self.device.cr_url).hostname or self.host
        try:
            same_host = ipaddress.ip_address(own_host) == ipaddress.ip_address(mapped[0])
        except ValueError:
            same_host = own_host == mapped[0]
        return not same_host or mapped[1] != self.local_address[1]

    async def _keep_alive(self) -> None:
        while self.enabled:
            await self.refresh()
            await asyncio.sleep(self._keepalive_seconds() if self.mapped else RETRANSMITS[-1])

    # -- datagrams ----------------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if stun.is_stun(data):
            self._stun_answer(data)
        else:
            self._connection_request(data)

    def _stun_answer(self, data: bytes) -> None:
        try:
            message = stun.parse_message(data)
        except stun.StunError:
            return
        future = self._pending.get(message.transaction_id[-12:])
        if future is None or future.done():
            return
        try:
            future.set_result(stun.mapped_address(message))
        except stun.StunError as exc:
            future.set_exception(exc)

    def _connection_request(self, data: bytes) -> None:
        self.verifier.username, self.verifier.password = self.device.cr_credentials
        if not self.verifier.password:
            outcome = "no credentials"
        else:
            verdict = self.verifier.verify(data)
            if verdict.duplicate:
                return  # the ACS sends copies of one request: one session
            outcome = self.accept(self.device) if verdict.accepted else verdict.reason
        self.requests.append(outcome)
        self.count(f"udp {outcome}")
