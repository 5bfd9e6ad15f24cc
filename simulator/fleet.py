"""The fleet: thousands of simulated CPEs in one asyncio event loop.

Idle devices cost no task and no socket: one scheduler task keeps a heap of (time, device)
wake-ups (periodic Informs, retries, scheduled Informs, boots, connection requests) and starts
a session task only when a device has something to say. Concurrent sessions are bounded by
``max_sessions`` (a semaphore), so a fleet that boots at once queues instead of exhausting file
descriptors; the wait shows up as "start lag" in the metrics, which is how a benchmark tells
a slow ACS from a saturated simulator.

Per device, the fleet runs: boot -> sessions -> (after a session) reboot / factory reset /
file transfers, exactly as :class:`simulator.device.Device` asks for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

from cwmp.digest import DigestClient
from services.common.xmppclient import XmppError

from . import memory
from .config import FleetSettings, HttpMode
from .connreq import ConnectionRequestApp, bind_socket, make_server
from .device import PROFILES, Device, DeviceState, Transfer, now_iso
from .http11 import Connection, HttpError, Origin, origin_of
from .metrics import Metrics, SessionRecord
from .session import CpeSession, OutKind, SessionFailed
from .stunmode import DeviceStun
from .template import load_big_template, load_template
from .transport import AcsChannel, credentials_through_url, download, ssl_context, upload
from .xmppmode import Account, DeviceXmpp, jid_of, provisioned

__all__ = ["Fleet"]

log = logging.getLogger("simulator")


class Fleet:
    """Build with settings, ``await start()``, let it run, ``await stop()``."""

    def __init__(self, settings: FleetSettings) -> None:
        self.settings = settings
        self.metrics = Metrics(settings.keep_records)
        self.devices: list[Device] = []
        self.in_flight = 0
        self._heap: list[tuple[float, int, int]] = []
        self._seq = itertools.count()
        self._wakeup: asyncio.Event | None = None
        self._slots: asyncio.Semaphore | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._scheduler: asyncio.Task[None] | None = None
        self._cr_server: Any = None
        self._cr_task: asyncio.Task[None] | None = None
        self._idle: dict[Origin, list[Connection]] = {}  # shared mode: keep-alive connections
        self._stopping = False
        self.session_listeners: list[Callable[[Device, SessionRecord, CpeSession], None]] = []
        # Client behaviours that outlive a session, kept only when their option is on.
        self._reused_auth: dict[int, tuple[str, str]] = {}  # digest_reuse_nc: index -> header
        self._digests: dict[int, DigestClient] = {}  # digest_keep_nonce: index -> last challenge
        self._dropped: set[int] = set()  # drop_mid_session: the devices that did (once each)
        self._cookie_jar: dict[int, dict[str, str]] = {}  # ... and the cookies their next session sends
        self.xmpp: dict[int, DeviceXmpp] = {}  # XMPP client mode: device index -> its XMPP link
        self.stun: dict[int, DeviceStun] = {}  # STUN client mode: device index -> its UDP socket
        if settings.stun:
            self.session_listeners.append(self._stun_after_session)
        if settings.xmpp_provisioned:
            self.session_listeners.append(self._xmpp_after_session)

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        loop = asyncio.get_running_loop()
        s.clock = loop.time  # one clock for timers, records and the devices
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(s.max_sessions)
        sock = bind_socket(s.cr_host, s.cr_port)
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        s.cr_base_url = f"http://{shown}:{port}"
        app = ConnectionRequestApp(self.device_by_index, self._accept_connection_request,
                                   self._count_cr)
        self._cr_server = make_server(app)
        self._cr_task = asyncio.create_task(self._cr_server.serve(sockets=[sock]))
        now = s.clock()
        profiles = {name: dataclasses.replace(profile, product_class=s.product_class or profile.product_class)
                    for name, profile in PROFILES.items()}  # shared by the devices of a model
        remembered = memory.load(s.memory_file, s.acs_url) if s.memory_file else {}
        for pos in range(s.devices):
            index = s.first_index + pos
            name = s.template_for(index)
            template = load_big_template(name, s.parameters) if s.parameters else load_template(name)
            device = Device(index, profiles[name], template, s, self._wake)
            memory.recall(device, remembered)
            self.devices.append(device)
            # Spread the first boots over `ramp` seconds, in index order.
            self._wake(device, now + (s.ramp * pos / s.devices if s.devices > 1 else 0.0))
        self._scheduler = asyncio.create_task(self._schedule())
        if s.xmpp_server:
            await self._start_xmpp()
        while not self._cr_server.started:
            if self._cr_task.done():
                self._cr_task.result()
                raise RuntimeError("connection-request listener did not start")
            await asyncio.sleep(0.005)

    async def _start_xmpp(self) -> None:
        """XMPP client mode: every device logs in to the XMPP server (simulator/xmppmode.py)."""
        s = self.settings
        host, _, port = s.xmpp_server.rpartition(":")
        for device in self.devices:
            account = Account(jid_of(device, s.xmpp_domain), s.xmpp_password.replace("{serial}", device.serial),
                              host, int(port))
            link = DeviceXmpp(device, account, self._accept_connection_request)
            await link.start()
            self.xmpp[device.index] = link

    def _xmpp_after_session(self, device: Device, _record: SessionRecord, _session: CpeSession) -> None:
        """Provisioned XMPP mode: (re)connect with the account the ACS set, once it is complete and
        enabled, or disconnect when it was disabled (simulator/xmppmode.py)."""
        wanted = provisioned(device)
        link = self.xmpp.get(device.index)
        if self._stopping or (link.account if link is not None else None) == wanted:
            return
        task = asyncio.create_task(self._relink_xmpp(device, link, wanted))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _relink_xmpp(self, device: Device, old: DeviceXmpp | None, wanted: Account | None) -> None:
        if old is not None:
            self.xmpp.pop(device.index, None)
            await old.stop()
        if wanted is None:
            return
        link = DeviceXmpp(device, wanted, self._accept_connection_request)
        self.xmpp[device.index] = link  # before the login: the next session's check sees it coming
        try:
            await link.start()
        except XmppError as exc:
            log.warning("XMPP login failed: %s", exc, extra={"serial": device.serial})
            if self.xmpp.get(device.index) is link:
                del self.xmpp[device.index]  # the next session tries again

    async def stop(self, grace: float = 5.0) -> None:
        """Stop scheduling, let running sessions finish for ``grace`` seconds, then cancel."""
        s = self.settings
        self._stopping = True
        for link in self.xmpp.values():
            await link.stop()
        if self._scheduler is not None:
            self._scheduler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scheduler
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for stun_link in self.stun.values():  # after the tasks: one of them may have just started a link
            await stun_link.stop()
        for xmpp_link in list(self.xmpp.values()):  # likewise a provisioned XMPP login
            await xmpp_link.stop()
        if self._cr_server is not None:
            self._cr_server.should_exit = True
            if self._cr_task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait_for(self._cr_task, 10)
        connections = [d.http_client for d in self.devices if isinstance(d.http_client, Connection)]
        connections += [c for idle in self._idle.values() for c in idle]
        self._idle.clear()
        for connection in connections:
            await connection.close()
        if s.memory_file:
            memory.save(s.memory_file, s.acs_url, self.devices)

    async def run(self, duration: float | None, *, report_every: float = 5.0,
                  report: Callable[[dict[str, Any]], None] | None = None,
                  stop: asyncio.Event | None = None,
                  on_start: Callable[[], None] | None = None) -> dict[str, Any]:
        """Run for ``duration`` seconds (None: until ``stop`` is set); return the summary."""
        await self.start()
        if on_start is not None:
            on_start()
        clock = self.settings.clock
        deadline = None if duration is None else clock() + duration
        stop = stop or asyncio.Event()
        try:
            while not stop.is_set() and (deadline is None or clock() < deadline):
                wait = report_every if deadline is None else min(report_every, deadline - clock())
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(wait, 0.0)):  # not wait_for: see _schedule
                        await stop.wait()
                if report is not None and not stop.is_set():
                    report(self.metrics.interval(self.in_flight))
        finally:
            await self.stop()
        return self.metrics.summary()

    # -- lookups used by tests and the CR listener ------------------------------------------

    def device_by_index(self, index: int) -> Device | None:
        pos = index - self.settings.first_index
        return self.devices[pos] if 0 <= pos < len(self.devices) else None

    def _stun_after_session(self, device: Device, _record: SessionRecord, _session: CpeSession) -> None:
        """STUN client mode: start the device's STUN client once the ACS turned STUNEnable on, stop it
        when it turned it off (simulator/stunmode.py)."""
        link = self.stun.get(device.index)
        if link is None:
            link = DeviceStun(device, self.settings.cr_host, self._accept_connection_request, self._count_cr,
                              self.settings.udp_clock_skew)
        if link.enabled and not link.running and not self._stopping:
            self.stun[device.index] = link
            task = asyncio.create_task(link.start())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif not link.enabled and link.running:
            task = asyncio.create_task(link.stop())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _count_cr(self, outcome: str) -> None:
        self.metrics.connection_requests[outcome] += 1

    def _accept_connection_request(self, device: Device) -> str:
        if device.state != DeviceState.IDLE:
            return "busy"
        if not device.cr_pending:
            device.cr_pending = True
            device.add_event("6 CONNECTION REQUEST")
            self._wake(device, self.settings.clock())
        return "accepted"

    # -- scheduling -----------------------------------------------------------------------

    def _wake(self, device: Device, when: float) -> None:
        heapq.heappush(self._heap, (when, next(self._seq), device.index - self.settings.first_index))
        if self._wakeup is not None and self._heap[0][0] == when:
            self._wakeup.set()

    async def _schedule(self) -> None:
        assert self._wakeup is not None
        clock = self.settings.clock
        while True:
            now = clock()
            heap = self._heap
            while heap and heap[0][0] <= now:
                due, _seq, pos = heapq.heappop(heap)
                try:
                    self._process(self.devices[pos], now, due)
                except Exception:
                    log.exception("device %s: scheduling failed", self.devices[pos].index)
            self._wakeup.clear()
            timeout = heap[0][0] - clock() if heap else None
            if timeout is not None and timeout <= 0:
                await asyncio.sleep(0)  # let sessions run between bursts of wake-ups
                continue
            # Not wait_for: on Python 3.11 it can swallow a cancellation that arrives as the event
            # is set, and stop() then waits for this loop forever (seen in the fleet tests).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wakeup.wait()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _process(self, device: Device, now: float, due: float) -> None:
        if self._stopping:
            return
        if device.state == DeviceState.OFF:
            device.boot(now)
            return
        if device.state == DeviceState.GONE:
            return
        if device.state != DeviceState.IDLE:
            return  # checked again when the session or reboot ends
        if device.factory_reset_pending or device.reboot_key is not None or device.firmware_pending:
            device.state = DeviceState.REBOOTING
            self._spawn(self._reboot(device))
            return
        for transfer in device.transfers_to_start():
            self._spawn(self._transfer(device, transfer))
        device.tick(now)
        if device.wants_session(now):
            device.state = DeviceState.SESSION
            device.cr_pending = False  # this session is the answer to it
            self._spawn(self._session(device, due))

    # -- sessions -------------------------------------------------------------------------

    def _connection_for(self, device: Device, url: str) -> Connection:
        """The connection a session starts on, according to ``http_mode``."""
        s = self.settings
        try:
            origin, _target = origin_of(url)
        except HttpError:
            origin = Origin("http", "invalid", 0)  # the channel reports the bad URL
        if s.http_mode is HttpMode.DEVICE:
            connection = device.http_client
            if not isinstance(connection, Connection) or connection.origin != origin:
                connection = device.http_client = Connection(origin, user_agent=s.user_agent,
                                                             ssl_context=ssl_context())
            return connection
        if s.http_mode is HttpMode.SHARED:
            idle = self._idle.get(origin)
            if idle:
                return idle.pop()
        return Connection(origin, user_agent=s.user_agent, ssl_context=ssl_context())

    async def _release(self, connection: Connection, ok: bool) -> None:
        mode = self.settings.http_mode
        if mode is HttpMode.SHARED and ok and connection.is_open:
            # Reused by the next session of any device, as through a keep-alive proxy.
            self._idle.setdefault(connection.origin, []).append(connection)
        elif mode is not HttpMode.DEVICE or not ok:
            await connection.close()  # a real CPE closes its connection when the session ends

    async def _session(self, device: Device, due: float) -> None:
        assert self._slots is not None
        s = self.settings
        async with self._slots:
            started = s.clock()
            start_wall = time.time()
            t0 = time.perf_counter()  # uvloop's clock ticks in milliseconds: too coarse here
            self.in_flight += 1
            self.metrics.max_in_flight = max(self.metrics.max_in_flight, self.in_flight)
            url = device.acs_url
            session = CpeSession(device, url=url, cwmp_version=s.cwmp_version, max_messages=s.max_messages)
            connection = self._connection_for(device, url)
            username, password = device.acs_credentials
            channel = AcsChannel(connection, url, auth=s.auth, username=username, password=password,
                                 ignore_cookies=s.ignore_cookies, timeout=s.http_timeout,
                                 user_agent=s.user_agent, reuse_nc=s.digest_reuse_nc,
                                 reused=self._reused_auth.get(device.index),
                                 cookies=self._cookie_jar.pop(device.index, None),
                                 digest=self._digests.get(device.index) if s.digest_keep_nonce else None,
                                 digest_without_qop=s.digest_without_qop)
            ok, reason, retry_after, dropped = True, "", None, False
            try:
                out = session.start()
                while out is not None:
                    if self._drops_now(device, session, out.kind):
                        # The ACS's request stays unanswered; the device comes back at once.
                        await connection.close()
                        self._dropped.add(device.index)
                        self._cookie_jar[device.index] = dict(channel.cookies)
                        dropped = True
                        raise SessionFailed(f"dropped mid-session (drop_mid_session): "
                                            f"{session.rpcs[-1]} left unanswered")
                    reply = await channel.exchange(out)
                    out = session.receive(reply.status, reply.body, reply.content_type)
            except SessionFailed as exc:
                ok, reason, retry_after = False, exc.reason, exc.retry_after
            except Exception as exc:
                log.exception("device %s: session crashed", device.index)
                ok, reason = False, f"internal: {type(exc).__name__}: {exc}"
            finally:
                self.in_flight -= 1
                await channel.aclose()
                await self._release(connection, ok)
                if channel.reused is not None:
                    self._reused_auth[device.index] = channel.reused
                if s.digest_keep_nonce and channel.digest is not None:
                    self._digests[device.index] = channel.digest
        record = SessionRecord(
            device=device.index, start=start_wall, end=start_wall + (time.perf_counter() - t0), ok=ok,
            reason=reason, events=session.event_codes, rpcs=len(session.rpcs),
            http_requests=channel.requests, retry_count=session.inform.retry_count if session.inform else 0,
            lag=max(0.0, started - due), inform_acked=session.inform_acked,
            cookies=tuple(channel.cookies.items()),
        )
        self.metrics.record(record)
        self.metrics.rpcs.update(session.rpcs)
        self.metrics.faults_sent.update(session.faults_sent)
        device.state = DeviceState.IDLE
        device.session_ended(ok, s.clock(), retry_after, at_once=dropped)
        for listener in self.session_listeners:
            listener(device, record, session)
        self._wake(device, s.clock())

    def _drops_now(self, device: Device, session: CpeSession, kind: OutKind) -> bool:
        """drop_mid_session: is ``out``, the answer to the N-th ACS request, the one not sent?"""
        n = self.settings.drop_mid_session
        return bool(n) and kind is OutKind.RESPONSE and len(session.rpcs) == n \
            and device.index not in self._dropped

    async def _reboot(self, device: Device) -> None:
        factory = device.factory_reset_pending
        await asyncio.sleep(self.settings.reboot_delay)
        device.boot(self.settings.clock(), factory_reset=factory)

    async def _transfer(self, device: Device, transfer: Transfer) -> None:
        s = self.settings
        if transfer.delay > 0:
            await asyncio.sleep(transfer.delay)
        if transfer not in device.rt.transfers:
            return  # cancelled (CancelTransfer) while it waited
        firmware = transfer.is_download and transfer.file_type.startswith("1 ")
        if firmware and s.goes_offline(device.index):
            device.state = DeviceState.GONE  # offline for good: the scheduler never runs it again
            self.metrics.transfers["download offline"] += 1
            return
        transfer.state = 2
        start = now_iso()
        if firmware and s.fail_stage == "transfer" and s.fails(device.index):
            transfer.state = 3
            self.metrics.transfers[f"download {s.fail_fault}"] += 1
            device.transfer_finished(transfer, device.transfer_result(transfer, start, s.fail_fault,
                                                                      "firmware download failed (fail_share)"), None)
            return
        if transfer.is_download:
            url, username, password = transfer.url, transfer.username, transfer.password
            if s.credentials_in_url:
                url, username, password = credentials_through_url(url, username, password)
            outcome = await download(url, username, password, transfer.file_size, transfer.target_file_name,
                                     io_timeout=s.transfer_timeout, user_agent=s.user_agent,
                                     slow_seconds=s.download_seconds)
        else:
            outcome = await upload(transfer.url, transfer.username, transfer.password,
                                   device.config_dump(), io_timeout=s.transfer_timeout, user_agent=s.user_agent)
        transfer.state = 3
        kind = "download" if transfer.is_download else "upload"
        self.metrics.transfers[f"{kind} {'ok' if outcome.code == 0 else outcome.code}"] += 1
        new_version = None
        if transfer.is_download and outcome.code == 0 and transfer.file_type.startswith("1 "):
            # A firmware image: the device runs it after a reboot. Without a version in the
            # name or metadata, the version is derived from the content.
            new_version = outcome.version or f"sha256-{outcome.sha256[:12]}"
        result = device.transfer_result(transfer, start, outcome.code, outcome.message)
        device.transfer_finished(transfer, result, new_version)
