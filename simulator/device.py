"""One simulated CPE: identity, data model, pending events, timers and the ACS-RPC handlers.

No I/O here. The fleet (:mod:`simulator.fleet`) owns the clock, the sockets and the scheduling;
a device only records what it wants (a session, a reboot, a transfer) and answers RPCs. Times
are the fleet's monotonic clock (``loop.time()``) except where the protocol carries wall-clock
times (CurrentTime, StartTime, ...).

Event bookkeeping follows checklist T23-T26: single events ("2 PERIODIC") appear once, "M"
events once per CommandKey; delivered events are dropped when the InformResponse arrives,
except "7 TRANSFER COMPLETE" and "M Download"/"M Upload"/"M ScheduleDownload", which stay until
the ACS acknowledges the matching TransferComplete.
"""

from __future__ import annotations

import ipaddress
import uuid as uuid_module
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from cwmp.faults import CpeFault, CwmpFault
from cwmp.httputil import make_device_id
from cwmp.models import (
    AddObject,
    AddObjectResponse,
    AllQueuedTransferStruct,
    ArgStruct,
    CancelTransfer,
    CancelTransferResponse,
    ChangeDUState,
    ChangeDUStateResponse,
    CwmpMessage,
    DeleteObject,
    DeleteObjectResponse,
    DeploymentUnitFaultStruct,
    DeviceId,
    Download,
    DownloadResponse,
    DUStateChangeComplete,
    EventStruct,
    FactoryReset,
    FactoryResetResponse,
    FaultStruct,
    GetAllQueuedTransfers,
    GetAllQueuedTransfersResponse,
    GetParameterAttributes,
    GetParameterAttributesResponse,
    GetParameterNames,
    GetParameterNamesResponse,
    GetParameterValues,
    GetParameterValuesResponse,
    GetQueuedTransfers,
    GetQueuedTransfersResponse,
    GetRPCMethods,
    GetRPCMethodsResponse,
    Inform,
    InstallOpStruct,
    OpResultStruct,
    ParameterValueStruct,
    QueuedTransferStruct,
    Reboot,
    RebootResponse,
    RequestDownload,
    ScheduleDownload,
    ScheduleDownloadResponse,
    ScheduleInform,
    ScheduleInformResponse,
    SetParameterAttributes,
    SetParameterAttributesResponse,
    SetParameterValues,
    SetParameterValuesResponse,
    TransferComplete,
    UninstallOpStruct,
    UpdateOpStruct,
    Upload,
    UploadResponse,
)
from cwmp.values import UNKNOWN_TIME, format_datetime, parse_boolean, parse_datetime

from .backoff import retry_wait
from .datamodel import DataModel
from .template import ParamSpec, Template

if TYPE_CHECKING:
    from .config import FleetSettings

__all__ = [
    "CPE_METHODS",
    "MAX_QUEUED_TRANSFERS",
    "PROFILES",
    "Device",
    "DeviceState",
    "Profile",
    "Transfer",
]

MAX_QUEUED_TRANSFERS = 16  # GetAllQueuedTransfers lists at most 16 (R20)
MAX_EVENTS = 64  # EventStruct[64] in the Inform (T23)
_TRANSFER_EVENTS = frozenset({"M Download", "M Upload", "M ScheduleDownload", "M ChangeDUState"})
# The single event each kind of pending CPE request is announced with.
_REQUEST_EVENT = {"TransferComplete": "7 TRANSFER COMPLETE", "DUStateChangeComplete": "11 DU STATE CHANGE COMPLETE",
                  "RequestDownload": "9 REQUEST DOWNLOAD"}
PendingRequest = TransferComplete | DUStateChangeComplete | RequestDownload

CPE_METHODS: tuple[str, ...] = (
    "GetRPCMethods", "SetParameterValues", "GetParameterValues", "GetParameterNames",
    "SetParameterAttributes", "GetParameterAttributes", "AddObject", "DeleteObject", "Reboot",
    "Download", "Upload", "FactoryReset", "ScheduleInform", "GetQueuedTransfers",
    "GetAllQueuedTransfers", "ScheduleDownload", "CancelTransfer", "ChangeDUState",
)
"""What GetRPCMethodsResponse lists: every ACS request this simulator implements."""


@dataclass(frozen=True, slots=True)
class Profile:
    """Identity defaults of one data model's devices."""

    template: str
    manufacturer: str
    oui: str
    product_class: str
    model_name: str
    hw_version: str


PROFILES: dict[str, Profile] = {
    "tr098": Profile("tr098", "SimCPE", "00D09E", "IGD-SIM", "SimGW-098", "1.0"),
    "tr181": Profile("tr181", "SimCPE", "00D09E", "DEV-SIM", "SimGW-181", "2.0"),
}


class DeviceState:
    """What a device is doing now (plain strings: cheap, readable in logs)."""

    OFF = "off"  # not booted yet (staggered start)
    IDLE = "idle"
    SESSION = "session"  # in a session, or waiting for a session slot
    REBOOTING = "rebooting"
    GONE = "gone"  # offline for good (FleetSettings.offline_share)


@dataclass(slots=True)
class Transfer:
    """A Download, Upload or ScheduleDownload accepted with Status 1 and not finished yet."""

    command_key: str
    is_download: bool
    file_type: str
    url: str
    username: str
    password: str
    file_size: int
    target_file_name: str
    delay: float
    event: str  # "M Download" / "M Upload" / "M ScheduleDownload"
    state: int = 1  # 1 not started, 2 in progress, 3 completed (QueuedTransferStruct)
    started: bool = False  # handed to the fleet's transfer runner


@dataclass(slots=True)
class _Runtime:
    """Everything that exists only once a device has booted; keeps Device itself small."""

    events: list[tuple[str, str]] = field(default_factory=list)  # (code, command key), ordered
    # Events the ACS has seen but that stay until a TransferComplete is acknowledged (T26):
    # they go into every Inform, but do not by themselves justify a new session.
    # A list, not a set: it holds 0-3 entries, and an empty set costs 216 bytes per device.
    delivered: list[tuple[str, str]] = field(default_factory=list)
    value_changes: dict[str, None] = field(default_factory=dict)  # ordered set of names
    transfers: list[Transfer] = field(default_factory=list)
    # (event, message): TransferCompletes and DUStateChangeCompletes waiting for the ACS's answer.
    pending_tcs: list[tuple[str, PendingRequest]] = field(default_factory=list)
    scheduled: list[tuple[float, str]] = field(default_factory=list)  # (due, command key)


def now_iso() -> str:
    return format_datetime(datetime.now(UTC))


class Device:
    """A CPE of the fleet. See the module docstring."""

    __slots__ = (
        "_id_counter",
        "_serial",
        "_wake",
        "after_boot",
        "boot_time",
        "bootstrapped_url",
        "cr_pending",
        "factory_reset_pending",
        "firmware_pending",
        "http_client",
        "index",
        "model",
        "must_retry",
        "periodic_base",
        "periodic_due",
        "profile",
        "reboot_key",
        "retry_at",
        "retry_count",
        "rt",
        "settings",
        "state",
        "sw_version",
    )

    def __init__(self, index: int, profile: Profile, template: Template, settings: FleetSettings,
                 wake: Callable[[Device, float], None]) -> None:
        self.index = index
        self.profile = profile
        self.settings = settings
        self._wake = wake
        self._serial: str | None = None
        self.model = DataModel(template, self)
        self.rt = _Runtime()
        self.state = DeviceState.OFF
        self.boot_time = 0.0
        self.sw_version: str | None = None  # None: the fleet's default version
        self.firmware_pending: str | None = None  # version active after the next boot
        self.after_boot: dict[str, str] = {}  # values set with Status 1, applied at the next boot
        self.bootstrapped_url: str | None = None  # ACS URL of the last acknowledged BOOTSTRAP
        self.retry_count = 0
        self.retry_at = 0.0
        self.must_retry = False
        self.cr_pending = False
        self.reboot_key: str | None = None  # Reboot RPC received: reboot after the session
        self.factory_reset_pending = False
        self.periodic_base = 0.0
        self.periodic_due: float | None = None
        self.http_client: object | None = None  # the fleet's per-device connection ("device" mode)
        self._id_counter = 0

    # -- identity -------------------------------------------------------------------------

    @property
    def serial(self) -> str:
        if self._serial is None:
            self._serial = f"{self.settings.serial_prefix}{self.index:0{self.settings.serial_width}d}"
        return self._serial

    @property
    def device_id(self) -> DeviceId:
        p = self.profile
        return DeviceId(p.manufacturer, p.oui, p.product_class, self.serial)

    @property
    def id_string(self) -> str:
        """``OUI-ProductClass-Serial``, percent-encoded: the ACS's device id (A2)."""
        p = self.profile
        return make_device_id(p.oui, p.product_class, self.serial)

    def _format(self, pattern: str) -> str:
        p = self.profile
        return pattern.format(serial=self.serial, oui=p.oui, product_class=p.product_class,
                              index=self.index, device_id=self.id_string)

    def _ms(self, name: str) -> str:
        return f"{self.model.root_path}ManagementServer.{name}"

    @property
    def acs_url(self) -> str:
        return self.model.get_or(self._ms("URL"), self.settings.acs_url)

    @property
    def acs_credentials(self) -> tuple[str, str]:
        return self.model.get_or(self._ms("Username"), ""), self.model.get_or(self._ms("Password"), "")

    @property
    def cr_credentials(self) -> tuple[str, str]:
        return (self.model.get_or(self._ms("ConnectionRequestUsername"), ""),
                self.model.get_or(self._ms("ConnectionRequestPassword"), ""))

    @property
    def cr_url(self) -> str:
        if self.settings.behind_nat:
            # Its WAN address behind a carrier-grade NAT (RFC 6598), which the ACS cannot reach.
            port, n = urlsplit(self.settings.cr_base_url).port, self.index + 1
            return f"http://100.64.{(n >> 8) & 0xFF}.{n & 0xFF}:{port}/{self.index}"
        return f"{self.settings.cr_base_url}/{self.index}"

    def next_cwmp_id(self) -> str:
        self._id_counter += 1
        return f"{self.index}.{self._id_counter}"

    # -- placeholders (simulator.datamodel.Context) ------------------------------------------

    def placeholder(self, name: str, offset: int, instance: int | None) -> str:
        s = self.settings
        p = self.profile
        if name == "serial":
            return self.serial
        if name == "sw_version":
            return self.sw_version or s.sw_version
        if name == "uptime":
            return str(max(0, int(s.clock() - self.boot_time)))
        if name == "now":
            return now_iso()
        if name == "mac":
            return _mac(p.oui, self.index, offset)
        if name == "lan_host_mac":
            # Locally administered, unique per device and host instance.
            n = (self.index << 8) | ((instance or 0) & 0xFF)
            return ":".join(f"{b:02X}" for b in (0x02, *(n.to_bytes(5, "big")[0:5])))
        if name == "wan_ip":
            return str(ipaddress.IPv4Address(int(ipaddress.IPv4Address("100.64.0.2")) + self.index % 4_000_000))
        if name == "wan_gateway":
            return "100.64.0.1"
        if name == "ssid":
            return f"{p.product_class}-{self.serial[-4:]}"
        simple = {
            "manufacturer": p.manufacturer, "oui": p.oui, "product_class": p.product_class,
            "model_name": p.model_name, "hw_version": p.hw_version, "index": str(self.index),
            "cr_url": self.cr_url, "acs_url": s.acs_url,
            "periodic_interval": str(s.periodic_interval),
            "periodic_enable": "true" if s.periodic_enable else "false",
            "retry_min_wait": str(s.retry_min_wait), "retry_multiplier": str(s.retry_multiplier),
        }
        if name in simple:
            return simple[name]
        if name in ("acs_username", "acs_password", "cr_username", "cr_password"):
            return self._format(getattr(s, name))
        raise KeyError(f"unknown template placeholder {{{name}}}")

    # -- events and timers ----------------------------------------------------------------

    def add_event(self, code: str, command_key: str = "") -> None:
        events = self.rt.events
        multiple = code.startswith("M ")
        for existing, key in events:
            if existing == code and (not multiple or key == command_key):
                return
        events.append((code, command_key))

    def has_event(self, code: str) -> bool:
        return any(c == code for c, _k in self.rt.events)

    def boot(self, now: float, *, factory_reset: bool = False) -> None:
        """Power-on: "1 BOOT" (+ "M Reboot"), or a factory-fresh "0 BOOTSTRAP" + "1 BOOT"."""
        rt = self.rt
        old_sw = self.sw_version or self.settings.sw_version
        if self.firmware_pending is not None:
            self.sw_version, self.firmware_pending = self.firmware_pending, None
        deferred, self.after_boot = self.after_boot, {}
        if not factory_reset:
            for name, value in deferred.items():
                self.model.set_internal(name, value)
        if factory_reset:
            self.model.reset()
            self.bootstrapped_url = None
            rt.transfers.clear()
            rt.pending_tcs.clear()
            rt.scheduled.clear()
        # Undelivered events do not survive a reboot, except the ones still owed an
        # acknowledgement (T26): a transfer result must reach the ACS whatever happens.
        keep = {_key_of(tc) for _e, tc in rt.pending_tcs}
        waiting = {_REQUEST_EVENT[tc.METHOD] for _e, tc in rt.pending_tcs}
        rt.events = [(c, k) for c, k in rt.events if c in waiting or (c in _TRANSFER_EVENTS and k in keep)]
        rt.delivered = [e for e in rt.delivered if e in rt.events]
        rt.value_changes.clear()
        self.add_event("1 BOOT")
        if self.reboot_key is not None:
            self.add_event("M Reboot", self.reboot_key)
        self.reboot_key = None
        self.factory_reset_pending = False
        self.boot_time = now
        self.retry_count = 0
        self.must_retry = False
        self.cr_pending = False
        self.state = DeviceState.IDLE
        if (self.sw_version or self.settings.sw_version) != old_sw:
            self.value_changed([f"{self.model.root_path}DeviceInfo.SoftwareVersion"])
        self.reschedule_periodic(now, first=True)
        for due, _key in rt.scheduled:
            self._wake(self, due)
        self._wake(self, now)

    def value_changed(self, names: list[str]) -> None:
        """Parameters the device changed itself: "4 VALUE CHANGE" if anyone asked to know."""
        active = False
        for name in names:
            resolved = self.model.resolve(name)
            if resolved is None or not isinstance(resolved.node, ParamSpec):
                continue
            level = self.model.notification_of(name, resolved.node)
            if level:
                self.rt.value_changes[name] = None
                active = active or level == 2
        if self.rt.value_changes:
            self.add_event("4 VALUE CHANGE")
        if active:
            self._wake(self, self.settings.clock())

    def change_locally(self, name: str, value: str) -> bool:
        """A value changed on the device side (a user in the web UI, a local app): the model takes
        it without checks, and "4 VALUE CHANGE" follows if the ACS set notification on it (active
        notification opens a session at once). False when the name is unknown or the value the same."""
        resolved = self.model.resolve(name)
        if resolved is None or not isinstance(resolved.node, ParamSpec) or not self.model.set_internal(name, value):
            return False
        self.value_changed([name])
        return True

    def reschedule_periodic(self, now: float, *, first: bool = False) -> None:
        """(Re)compute the next periodic Inform from ManagementServer.Periodic*."""
        model = self.model
        enabled = parse_boolean(model.get_or(self._ms("PeriodicInformEnable"), "false"))
        try:
            interval = max(1, int(model.get_or(self._ms("PeriodicInformInterval"), "0")))
        except ValueError:
            interval = 0
        if not enabled or interval <= 0:
            self.periodic_due = None
            return
        anchor = parse_datetime(model.get_or(self._ms("PeriodicInformTime"), UNKNOWN_TIME))
        rng = self.settings.rng
        if anchor is not None:
            # Informs at PeriodicInformTime + k * interval (TR-069 A.3.2.1 ManagementServer).
            wall = datetime.now(UTC).timestamp()
            ahead = (anchor.timestamp() - wall) % interval or interval
            self.periodic_base = now + ahead
        elif first:
            # Spread the fleet over one interval so that it does not inform in lockstep.
            self.periodic_base = now + rng.uniform(0, interval)
        else:
            self.periodic_base = now + interval
        self.periodic_due = self.periodic_base + rng.uniform(0, self.settings.jitter * interval)
        self._wake(self, self.periodic_due)

    def _advance_periodic(self, now: float) -> None:
        try:
            interval = max(1, int(self.model.get_or(self._ms("PeriodicInformInterval"), "0")))
        except ValueError:
            self.periodic_due = None
            return
        base = self.periodic_base + interval
        if base <= now:  # asleep for more than a period (overloaded host): do not burst
            base = now + interval
        self.periodic_base = base
        self.periodic_due = base + self.settings.rng.uniform(0, self.settings.jitter * interval)
        self._wake(self, self.periodic_due)

    def tick(self, now: float) -> None:
        """Turn due timers into events."""
        if self.state == DeviceState.OFF:
            return
        if self.periodic_due is not None and self.periodic_due <= now:
            self.add_event("2 PERIODIC")
            self._advance_periodic(now)
        scheduled = self.rt.scheduled
        if scheduled:
            due = [entry for entry in scheduled if entry[0] <= now]
            if due:
                self.rt.scheduled = [entry for entry in scheduled if entry[0] > now]
                for _when, key in due:
                    self.add_event("3 SCHEDULED")
                    self.add_event("M ScheduleInform", key)

    def wants_session(self, now: float) -> bool:
        if self.state != DeviceState.IDLE:
            return False
        if self.cr_pending:
            return True  # a connection request does not wait for the retry backoff
        rt = self.rt
        if not self.must_retry and all(event in rt.delivered for event in rt.events):
            return False
        return self.retry_count == 0 or now >= self.retry_at

    def session_ended(self, ok: bool, now: float, retry_after: float | None = None, *,
                      at_once: bool = False) -> None:
        """``at_once``: the device itself cut the session short and starts over without backoff."""
        if ok:
            self.retry_count = 0
            self.must_retry = False
            return
        # T16: a failed session is retried with backoff, RetryCount + 1.
        self.retry_count += 1
        self.must_retry = True
        min_wait, multiplier = self._retry_policy()
        wait = 0.0 if at_once else retry_wait(self.retry_count, min_wait, multiplier, self.settings.rng)
        if retry_after is not None:
            wait = max(wait, retry_after)
        self.retry_at = now + wait
        self._wake(self, self.retry_at)

    def _retry_policy(self) -> tuple[float, int]:
        try:
            min_wait = float(self.model.get_or(self._ms("CWMPRetryMinimumWaitInterval"), "5"))
            multiplier = int(self.model.get_or(self._ms("CWMPRetryIntervalMultiplier"), "2000"))
        except ValueError:
            return 5.0, 2000
        return min_wait, multiplier

    # -- Inform and acknowledgements ---------------------------------------------------------

    def build_inform(self, url: str) -> Inform:
        """The Inform for a session to ``url``; "0 BOOTSTRAP" when this URL never acknowledged one."""
        if self.bootstrapped_url != url and not self.has_event("0 BOOTSTRAP"):
            self.rt.events.insert(0, ("0 BOOTSTRAP", ""))
        events = sorted(self.rt.events, key=_event_order)[:MAX_EVENTS]
        params = self.model.forced_inform()
        names = {p.name for p in params}
        extra = [n for n in self.rt.value_changes if n not in names]
        extra += [n for n in self._inform_parameter_names() if n not in names and n not in extra]
        params += self.model.values_of(extra)
        return Inform(
            device_id=self.device_id,
            event=tuple(EventStruct(code, key) for code, key in events),
            max_envelopes=1,
            current_time=now_iso(),
            retry_count=self.retry_count,
            parameter_list=tuple(params),
        )

    def _inform_parameter_names(self) -> list[str]:
        """TR-181 ManagementServer.InformParameter.{i}: extra parameters the ACS asked for."""
        base = self._ms("InformParameter.")
        resolved = self.model.resolve(base)
        if resolved is None:
            return []
        out = []
        for item in self.model.get_parameter_names(base, True):
            enable = self.model.get_or(item.name + "Enable", "false")
            name = self.model.get_or(item.name + "ParameterName", "")
            if name and parse_boolean(enable):
                out.append(name)
        return out

    def inform_acked(self, inform: Inform, url: str) -> None:
        delivered = {(e.event_code, e.command_key) for e in inform.event}
        if ("0 BOOTSTRAP", "") in delivered:
            self.bootstrapped_url = url
        tc_keys = {_key_of(tc) for _e, tc in self.rt.pending_tcs}
        waiting = {_REQUEST_EVENT[tc.METHOD] for _e, tc in self.rt.pending_tcs}
        self.rt.events = [
            (c, k) for c, k in self.rt.events
            if (c, k) not in delivered
            or c in waiting
            or (c in _TRANSFER_EVENTS and k in tc_keys)
        ]
        self.rt.delivered = [e for e in self.rt.events if e in delivered or e in self.rt.delivered]
        for param in inform.parameter_list:
            self.rt.value_changes.pop(param.name, None)

    def transfer_complete_acked(self, message: PendingRequest) -> None:
        """The ACS answered a TransferComplete or DUStateChangeComplete: its events may go."""
        rt = self.rt
        for i, (event, tc) in enumerate(rt.pending_tcs):
            if tc is message:
                del rt.pending_tcs[i]
                rt.events = [(c, k) for c, k in rt.events if not (c == event and k == _key_of(tc))]
                break
        waiting = {_REQUEST_EVENT[tc.METHOD] for _e, tc in rt.pending_tcs}
        rt.events = [(c, k) for c, k in rt.events if c not in set(_REQUEST_EVENT.values()) - waiting]
        rt.delivered = [e for e in rt.delivered if e in rt.events]

    def pending_requests(self) -> list[PendingRequest]:
        return [tc for _e, tc in self.rt.pending_tcs]

    def transfer_finished(self, transfer: Transfer, result: TransferComplete,
                          new_version: str | None) -> None:
        """A transfer ended: queue its TransferComplete; a new firmware needs a reboot."""
        rt = self.rt
        if transfer in rt.transfers:
            rt.transfers.remove(transfer)
        rt.pending_tcs.append((transfer.event, result))
        self.add_event("7 TRANSFER COMPLETE")
        self.add_event(transfer.event, transfer.command_key)
        if new_version is not None:
            self.firmware_pending = new_version
        self._wake(self, self.settings.clock())

    # -- RPC handling ---------------------------------------------------------------------

    def handle(self, request: CwmpMessage) -> CwmpMessage:
        """Answer one ACS request; raises CwmpFault (9000 for unsupported methods)."""
        handler = _HANDLERS.get(type(request))
        if handler is None:
            raise CwmpFault.from_code(CpeFault.METHOD_NOT_SUPPORTED)
        return handler(self, request)

    def _get_rpc_methods(self, _req: GetRPCMethods) -> CwmpMessage:
        return GetRPCMethodsResponse(method_list=CPE_METHODS)

    def _gpn(self, req: GetParameterNames) -> CwmpMessage:
        if req.next_level and not self.settings.gpn_next_level:
            # The quirk of some agents: NextLevel=true is not implemented.
            raise CwmpFault.from_code(CpeFault.INVALID_ARGUMENTS, "Invalid arguments: NextLevel=true not supported")
        return GetParameterNamesResponse(self.model.get_parameter_names(req.parameter_path, req.next_level))

    def _gpv(self, req: GetParameterValues) -> CwmpMessage:
        return GetParameterValuesResponse(self.model.get_parameter_values(req.parameter_names))

    def _spv(self, req: SetParameterValues) -> CwmpMessage:
        later = {self.model.root_path + name for name in self.settings.apply_after_reboot}
        before = {i.name: self.model.get(i.name) for i in req.parameter_list if i.name in later}
        changed = self.model.set_parameter_values(req.parameter_list, req.parameter_key,
                                                  strict_types=self.settings.strict_types)
        if before:
            # Taken (checked, all or nothing), applied at the next boot: Status 1.
            for name, old in before.items():
                self.after_boot[name] = self.model.get(name)
                self.model.set_internal(name, old)
            return SetParameterValuesResponse(status=1)
        periodic = {self._ms("PeriodicInformEnable"), self._ms("PeriodicInformInterval"),
                    self._ms("PeriodicInformTime")}
        if periodic.intersection(changed):
            self.reschedule_periodic(self.settings.clock())
        return SetParameterValuesResponse(status=0)

    def _gpa(self, req: GetParameterAttributes) -> CwmpMessage:
        return GetParameterAttributesResponse(self.model.get_parameter_attributes(req.parameter_names))

    def _spa(self, req: SetParameterAttributes) -> CwmpMessage:
        self.model.set_parameter_attributes(req.parameter_list)
        return SetParameterAttributesResponse()

    def _add_object(self, req: AddObject) -> CwmpMessage:
        return AddObjectResponse(instance_number=self.model.add_object(req.object_name, req.parameter_key),
                                 status=0)

    def _delete_object(self, req: DeleteObject) -> CwmpMessage:
        self.model.delete_object(req.object_name, req.parameter_key)
        return DeleteObjectResponse(status=0)

    def _reboot(self, req: Reboot) -> CwmpMessage:
        self.reboot_key = req.command_key
        return RebootResponse()

    def _factory_reset(self, _req: FactoryReset) -> CwmpMessage:
        self.factory_reset_pending = True
        return FactoryResetResponse()

    def _schedule_inform(self, req: ScheduleInform) -> CwmpMessage:
        if req.delay_seconds <= 0:
            raise CwmpFault.from_code(CpeFault.INVALID_ARGUMENTS, "Invalid arguments: DelaySeconds must be > 0")
        due = self.settings.clock() + req.delay_seconds
        self.rt.scheduled.append((due, req.command_key))
        self._wake(self, due)
        return ScheduleInformResponse()

    def _queue_transfer(self, transfer: Transfer) -> None:
        scheme = urlsplit(transfer.url).scheme.lower()
        if scheme not in ("http", "https"):
            # Refused synchronously, as a SOAP fault to the RPC (F6 note).
            raise CwmpFault.from_code(CpeFault.UNSUPPORTED_TRANSFER_PROTOCOL,
                                      f"Unsupported protocol for file transfer: {scheme or 'none'}")
        if len(self.rt.transfers) >= MAX_QUEUED_TRANSFERS:
            raise CwmpFault.from_code(CpeFault.RESOURCES_EXCEEDED, "Resources exceeded: transfer queue full")
        self.rt.transfers.append(transfer)

    def _download(self, req: Download) -> CwmpMessage:
        s = self.settings
        if req.file_type.startswith("1 ") and s.fail_stage == "download" and s.fails(self.index):
            raise CwmpFault.from_code(s.fail_fault)
        self._queue_transfer(Transfer(req.command_key, True, req.file_type, req.url, req.username,
                                      req.password, req.file_size, req.target_file_name,
                                      float(req.delay_seconds), "M Download"))
        # Status 1: done later, reported by TransferComplete (F5).
        return DownloadResponse(status=1, start_time=UNKNOWN_TIME, complete_time=UNKNOWN_TIME)

    def _upload(self, req: Upload) -> CwmpMessage:
        self._queue_transfer(Transfer(req.command_key, False, req.file_type, req.url, req.username,
                                      req.password, 0, "", float(req.delay_seconds), "M Upload"))
        return UploadResponse(status=1, start_time=UNKNOWN_TIME, complete_time=UNKNOWN_TIME)

    def _schedule_download(self, req: ScheduleDownload) -> CwmpMessage:
        windows = req.time_window_list
        if not 1 <= len(windows) <= 2 or any(w.window_end < w.window_start for w in windows):
            raise CwmpFault.from_code(CpeFault.INVALID_ARGUMENTS, "Invalid arguments: TimeWindowList")
        # This simulator is never busy: it starts at the opening of the first window.
        self._queue_transfer(Transfer(req.command_key, True, req.file_type, req.url, req.username,
                                      req.password, req.file_size, req.target_file_name,
                                      float(windows[0].window_start), "M ScheduleDownload"))
        return ScheduleDownloadResponse()

    def _get_queued_transfers(self, _req: GetQueuedTransfers) -> CwmpMessage:
        return GetQueuedTransfersResponse(
            [QueuedTransferStruct(t.command_key, t.state) for t in self.rt.transfers])

    def _get_all_queued_transfers(self, _req: GetAllQueuedTransfers) -> CwmpMessage:
        return GetAllQueuedTransfersResponse([
            AllQueuedTransferStruct(t.command_key, t.state, t.is_download, t.file_type, t.file_size,
                                    t.target_file_name)
            for t in self.rt.transfers
        ])

    def _cancel_transfer(self, req: CancelTransfer) -> CwmpMessage:
        for transfer in self.rt.transfers:
            if transfer.command_key == req.command_key:
                # Still waiting for its delay or time window (state 1): it may go; once the
                # transfer runs (2) or ran (3), 9021.
                if transfer.state != 1:
                    raise CwmpFault.from_code(CpeFault.CANCEL_NOT_PERMITTED)
                self.rt.transfers.remove(transfer)
                return CancelTransferResponse()
        raise CwmpFault.from_code(CpeFault.INVALID_ARGUMENTS,
                                  f"Invalid arguments: no transfer with CommandKey {req.command_key!r}")

    def request_download(self, file_type: str, args: dict[str, str] | None = None) -> None:
        """Ask the ACS for a file (RequestDownload, A.4.2.2) in a new session ("9 REQUEST DOWNLOAD")."""
        message = RequestDownload(file_type, tuple(ArgStruct(k, v) for k, v in (args or {}).items()))
        self.rt.pending_tcs.append(("9 REQUEST DOWNLOAD", message))
        self.add_event("9 REQUEST DOWNLOAD")
        self._wake(self, self.settings.clock())

    # -- deployment units (TR-157 SoftwareModules.DeploymentUnit.) --------------------------------

    def _change_du_state(self, req: ChangeDUState) -> CwmpMessage:
        """Apply the operations at once (this simulator fetches no package from the URL: it checks
        the URL's scheme only), then report them in a DUStateChangeComplete in a new session."""
        start = now_iso()
        results = tuple(self._du_operation(op, start) for op in req.operations)
        message = DUStateChangeComplete(results=results, command_key=req.command_key)
        self.rt.pending_tcs.append(("M ChangeDUState", message))
        self.add_event("11 DU STATE CHANGE COMPLETE")
        self.add_event("M ChangeDUState", req.command_key or "")
        self._wake(self, self.settings.clock())
        return ChangeDUStateResponse()

    def _du_table(self) -> str:
        return f"{self.model.root_path}SoftwareModules.DeploymentUnit."

    def _du_row(self, uuid: str | None, url: str | None = None) -> str | None:
        table = self._du_table()
        if self.model.resolve(table) is None:
            return None
        for item in self.model.get_parameter_names(table, True):
            if (uuid and self.model.get_or(item.name + "UUID", "") == uuid) or \
                    (not uuid and url and self.model.get_or(item.name + "URL", "") == url):
                return item.name
        return None

    def _du_operation(self, op: object, start: str) -> OpResultStruct:
        def failed(code: CpeFault, text: str, uuid: str = "", version: str = "") -> OpResultStruct:
            return OpResultStruct(uuid=uuid, version=version, current_state="Failed", resolved=False,
                                  start_time=start, complete_time=now_iso(),
                                  fault=DeploymentUnitFaultStruct(int(code), text))

        model = self.model
        if isinstance(op, InstallOpStruct):
            if urlsplit(op.url).scheme.lower() not in ("http", "https"):
                return failed(CpeFault.UNSUPPORTED_TRANSFER_PROTOCOL, "Unsupported protocol for file transfer")
            uuid = op.uuid or _uuid_for(op.url)
            if self._du_row(uuid) is not None:
                return failed(CpeFault.DUPLICATE_DU, "Duplicate deployment unit", uuid)
            table = self._du_table()
            number = model.add_object(table, "", internal=True)
            row = f"{table}{number}."
            for name, value in (("UUID", uuid), ("URL", op.url), ("Name", op.url.rsplit("/", 1)[-1]),
                                ("ExecutionEnvRef", op.execution_env_ref or ""), ("Status", "Installed")):
                model.set_internal(row + name, value)
            self.value_changed([f"{self.model.root_path}SoftwareModules.DeploymentUnitNumberOfEntries"])
            return OpResultStruct(uuid=uuid, deployment_unit_ref=row[:-1], version=model.get(row + "Version"),
                                  current_state="Installed", resolved=True, start_time=start,
                                  complete_time=now_iso(), fault=DeploymentUnitFaultStruct(0, None))
        if isinstance(op, UpdateOpStruct):
            row = self._du_row(op.uuid, op.url)
            if row is None:
                return failed(CpeFault.UNKNOWN_DU, "Unknown deployment unit", op.uuid or "")
            version = op.version or _next_version(model.get(row + "Version"))
            model.set_internal(row + "Version", version)
            if op.url:
                model.set_internal(row + "URL", op.url)
            return OpResultStruct(uuid=model.get(row + "UUID"), deployment_unit_ref=row[:-1], version=version,
                                  current_state="Installed", resolved=True, start_time=start,
                                  complete_time=now_iso(), fault=DeploymentUnitFaultStruct(0, None))
        assert isinstance(op, UninstallOpStruct)
        row = self._du_row(op.uuid)
        if row is None or (op.version and model.get(row + "Version") != op.version):
            return failed(CpeFault.UNKNOWN_DU, "Unknown deployment unit", op.uuid, op.version or "")
        version = model.get(row + "Version")
        model.delete_object(row, "", internal=True)
        self.value_changed([f"{self.model.root_path}SoftwareModules.DeploymentUnitNumberOfEntries"])
        return OpResultStruct(uuid=op.uuid, deployment_unit_ref=row[:-1], version=version,
                              current_state="Uninstalled", resolved=False, start_time=start,
                              complete_time=now_iso(), fault=DeploymentUnitFaultStruct(0, None))

    # -- helpers for transfers ------------------------------------------------------------------

    def transfers_to_start(self) -> list[Transfer]:
        out = [t for t in self.rt.transfers if not t.started]
        for t in out:
            t.started = True
        return out

    def config_dump(self) -> bytes:
        """The "vendor configuration file" an Upload sends: every value, one per line."""
        lines = [f"{p.name}={p.value.value}" for p in self.model.get_parameter_values([""])]
        return ("\n".join(lines) + "\n").encode("utf-8")

    def transfer_result(self, transfer: Transfer, start: str, code: int, message: str) -> TransferComplete:
        return TransferComplete(transfer.command_key, FaultStruct(int(code), message if code else ""),
                                start, now_iso())

    def describe(self) -> dict[str, object]:
        """A small snapshot for logs and tests."""
        return {
            "index": self.index, "serial": self.serial, "state": self.state,
            "events": list(self.rt.events), "retry_count": self.retry_count,
            "sw_version": self.sw_version or self.settings.sw_version,
            "pending_tcs": [_key_of(tc) for _e, tc in self.rt.pending_tcs],
            "transfers": [t.command_key for t in self.rt.transfers],
        }

    def values(self, names: list[str]) -> list[ParameterValueStruct]:
        return self.model.get_parameter_values(names)


def _key_of(request: PendingRequest) -> str:
    """The CommandKey a pending request reports on ("" for a RequestDownload, which has none)."""
    return "" if isinstance(request, RequestDownload) else request.command_key or ""


def _uuid_for(url: str) -> str:
    """TR-069 A.4.1.10: a CPE without a UUID from the ACS makes one (here a name-based UUID)."""
    return str(uuid_module.uuid5(uuid_module.NAMESPACE_URL, url))


def _next_version(version: str) -> str:
    head, _, last = version.rpartition(".")
    return f"{head}.{int(last) + 1}" if last.isdigit() and head else f"{version}.1"


def _event_order(event: tuple[str, str]) -> tuple[int, int, str]:
    code = event[0]
    head = code.split(" ", 1)[0]
    if head.isdigit():
        return 0, int(head), code
    return (1, 0, code) if head == "M" else (2, 0, code)


def _mac(oui: str, index: int, offset: int) -> str:
    """A MAC address in the device's OUI: the low 24 bits carry index * 16 + offset."""
    low = (index * 16 + offset) & 0xFFFFFF
    raw = bytes.fromhex(oui.ljust(6, "0")[:6]) + low.to_bytes(3, "big")
    return ":".join(f"{b:02X}" for b in raw)


_HANDLERS: dict[type, Callable[[Device, object], CwmpMessage]] = {
    GetRPCMethods: Device._get_rpc_methods,
    GetParameterNames: Device._gpn,
    GetParameterValues: Device._gpv,
    SetParameterValues: Device._spv,
    GetParameterAttributes: Device._gpa,
    SetParameterAttributes: Device._spa,
    AddObject: Device._add_object,
    DeleteObject: Device._delete_object,
    Reboot: Device._reboot,
    FactoryReset: Device._factory_reset,
    ScheduleInform: Device._schedule_inform,
    Download: Device._download,
    Upload: Device._upload,
    ScheduleDownload: Device._schedule_download,
    GetQueuedTransfers: Device._get_queued_transfers,
    GetAllQueuedTransfers: Device._get_all_queued_transfers,
    CancelTransfer: Device._cancel_transfer,
    ChangeDUState: Device._change_du_state,
}  # type: ignore[dict-item]
