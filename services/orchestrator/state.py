"""The data the pure planner works on: the orchestrator's view of a device and of a session,
its configuration, and the few impure things it needs (clock, ids, secrets) passed in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.common.quirks import NO_QUIRKS, Quirks
from services.common.settings import Settings
from services.orchestrator.tasks import aware

TR098_ROOT = "InternetGatewayDevice."
TR181_ROOT = "Device."


class DeviceState(BaseModel):
    """Collection ``orchestrator_devices``: what the orchestrator must remember between sessions.

    Parameter values live in the inventory; we keep only what decisions need: the data model
    root and where and how to wake the device: nothing that grows with its data model, so that a
    routine Inform costs the same for a device of 20 parameters or 50,000. The connection request
    password is needed in clear for Digest, so it is stored, but it never appears in logs, task
    results or API answers.
    """

    model_config = ConfigDict(extra="ignore")

    id: str
    oui: str = ""
    product_class: str = ""
    serial_number: str = ""
    manufacturer: str = ""
    data_model: str | None = None
    software_version: str | None = None
    connection_request_url: str | None = None
    udp_connection_request_address: str | None = None
    # ManagementServer.NATDetected as last reported (Annex G); None: never reported.
    nat_detected: bool | None = None
    # Bootstrap turned STUN on and the CPE took it (the "stun" SetParameterValues succeeded).
    stun_enabled: bool = False
    xmpp_jid: str | None = None  # ManagementServer.ConnReqJabberID (Annex K)
    cr_username: str | None = None
    cr_password: str | None = None
    # Minted at bootstrap, used once the CPE has accepted them (SetParameterValues succeeded).
    pending_cr_username: str | None = None
    pending_cr_password: str | None = None
    # The device's own ACS credentials (ManagementServer.Username/Password), set at bootstrap
    # when ACS_CPE_CREDENTIALS=provisioned. Never the password: it is derived from the nonce with
    # ACS_SECRET_KEY when the SetParameterValues is built (cpecreds.py), and the gateway's store
    # holds only its HA1s. Pending until the CPE's SetParameterValuesResponse confirms them.
    cpe_username: str | None = None
    cpe_nonce: str | None = None
    pending_cpe_username: str | None = None
    pending_cpe_nonce: str | None = None
    first_seen: datetime | None = None
    last_inform: datetime | None = None
    bootstrapped_at: datetime | None = None
    # Configuration profiles (profiles.py): per managed parameter (encoded name; "@" + name for its
    # attributes) the digest of the value the CPE accepted; per applicable profile where the device
    # stands; the due values that failed (not planned again until the desired state changes).
    profile_applied: dict[str, str] = Field(default_factory=dict)
    profile_status: dict[str, dict[str, Any]] = Field(default_factory=dict)
    profile_failed: dict[str, Any] | None = None
    version: int = 0

    @field_validator("first_seen", "last_inform", "bootstrapped_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        return aware(value) if value is not None else None

    def to_document(self) -> dict[str, Any]:
        document = self.model_dump(exclude={"id"})
        document["_id"] = self.id
        return document

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> DeviceState:
        values = dict(document)
        values["id"] = values.pop("_id")
        return cls.model_validate(values)

    def __repr__(self) -> str:  # never let the password reach a log through repr()
        return f"DeviceState(id={self.id!r}, data_model={self.data_model!r})"

    __str__ = __repr__


class RpcRef(BaseModel):
    """Which task (and which step of it) a planned RPC belongs to."""

    task_id: str
    key: str
    method: str
    attempt: int
    answered: bool = False
    # Names the RPC touched, kept so that a 9005 fault can be healed without the RPC itself.
    names: list[str] = Field(default_factory=list)


# A session keeps the RPCs of its current plan only: an answered RPC is dropped from ``rpcs``
# (its task and attempt go to ``answered``), so that a long walk does not grow the document.


class SessionState(BaseModel):
    """Collection ``orchestrator_sessions``: one live CWMP session, from Inform to SessionEnded."""

    model_config = ConfigDict(extra="ignore")

    session_id: str
    device_id: str
    gateway_id: str
    reply_to: str
    task_ids: list[str] = Field(default_factory=list)
    rpcs: dict[str, RpcRef] = Field(default_factory=dict)
    # "<task id>:<attempt>" of every task attempt that got at least one answer in this session.
    answered: list[str] = Field(default_factory=list)
    batch: list[str] = Field(default_factory=list)
    more: bool = False
    plans: int = 0
    # The last plan sent, so that a redelivered event is answered with the very same plan.
    last_in_reply_to: str | None = None
    last_plan: list[dict[str, Any]] = Field(default_factory=list)
    created_at: datetime
    updated_at: datetime

    @field_validator("created_at", "updated_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return aware(value)

    def batch_answered(self) -> bool:
        return all(self.rpcs[rpc_id].answered for rpc_id in self.batch if rpc_id in self.rpcs)

    def to_document(self) -> dict[str, Any]:
        document = self.model_dump()
        document["_id"] = self.session_id
        return document

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> SessionState:
        values = dict(document)
        values.pop("_id", None)
        return cls.model_validate(values)


@dataclass(frozen=True, slots=True)
class PlanConfig:
    """Knobs of the planner. Values not (yet) in Settings have their defaults here."""

    gpv_batch_size: int = 32
    periodic_inform_interval: int = 3600
    download_timeout: float = 3600.0
    reboot_timeout: float = 600.0
    max_attempts: int = 5
    retry_base_seconds: float = 60.0
    retry_max_seconds: float = 3600.0
    # Enough for a session's worth of queued work, small enough that one plan stays one message.
    max_rpcs_per_plan: int = 64
    walk_max_depth: int = 8
    # GetParameterNames per walk at most (one per object of a level-by-level walk).
    walk_max_rpcs: int = 10_000
    # Parameters per walk at most (ACS_WALK_MAX_PARAMETERS): beyond, the walk stops, "truncated".
    walk_max_parameters: int = 50_000
    # A walk's parameters go into its task's result up to this many; beyond, the API reads them
    # from the walk's own items.
    walk_result_inline: int = 2_000
    # Walk RPCs (GetParameterNames and GetParameterValues) per plan of one walk; the rest follow
    # in the next plans, so that a plan's size does not grow with the data model.
    walk_fanout: int = 16
    discovery_subtrees: tuple[str, ...] = ("DeviceInfo.", "ManagementServer.")
    bootstrap_provisioning: bool = True
    # Give each device its own ManagementServer.Username/Password at bootstrap (provisioned mode).
    provision_cpe_credentials: bool = False
    # STUN for UDP connection requests through NAT (Annex G), set at bootstrap where the CPE has
    # ManagementServer.STUNEnable: the server as the CPEs reach it ("" : not provisioned), its port,
    # STUNUsername/STUNPassword when set, the keep-alive bounds (ACS_STUN_*).
    stun_server: str = ""
    stun_port: int = 3478
    stun_username: str = ""
    stun_password: str = field(default="", repr=False)
    stun_min_keepalive: int = 30
    stun_max_keepalive: int = -1
    # XMPP for the CPEs (Annex K), set at bootstrap where the CPE has Device.XMPP.: the server as
    # the CPEs reach it ("host:port"; "": not provisioned), their accounts' domain, and the ACS's
    # bare JID (the only sender ConnReqAllowedJabberIDs lets through).
    xmpp_cpe_server: str = ""
    xmpp_cpe_domain: str = ""
    xmpp_acs_jid: str = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> PlanConfig:
        acs_jid = settings.xmpp_jid.split("/", 1)[0]  # bare: no resource
        return cls(
            gpv_batch_size=settings.gpv_batch_size,
            periodic_inform_interval=settings.periodic_inform_interval,
            download_timeout=settings.download_timeout,
            reboot_timeout=settings.reboot_timeout,
            walk_max_parameters=settings.walk_max_parameters,
            # Not in Settings yet: read them if a later version adds them, else the defaults here.
            max_attempts=settings.task_max_attempts,
            retry_base_seconds=settings.task_retry_base_seconds,
            retry_max_seconds=settings.task_retry_max_seconds,
            provision_cpe_credentials=settings.cpe_credentials == "provisioned",
            stun_server=settings.stun_server, stun_port=settings.stun_port,
            stun_username=settings.stun_username, stun_password=settings.stun_password,
            stun_min_keepalive=settings.stun_min_keepalive, stun_max_keepalive=settings.stun_max_keepalive,
            xmpp_cpe_server=settings.xmpp_cpe_server if settings.xmpp_jid else "",
            xmpp_cpe_domain=settings.xmpp_cpe_domain or acs_jid.partition("@")[2],
            xmpp_acs_jid=acs_jid,
        )


@dataclass(frozen=True, slots=True)
class Env:
    """The impure inputs of a decision, injected so that tests pin them down."""

    now: datetime
    new_id: Callable[[], str]
    # A random URL-safe token (connection request credentials).
    new_secret: Callable[[], str]
    # (file name, device id) -> (username, password) for one Download/Upload.
    mint_credentials: Callable[[str, str], tuple[str, str]]
    # File name -> the URL a CPE PUTs an upload to.
    upload_url: Callable[[str], str]
    # (username, nonce) -> the device's own ACS password (cpecreds.derive_password); None: the
    # planner sets no ManagementServer credentials.
    cpe_password: Callable[[str, str], str] | None = None
    # Device id -> the password of the device's XMPP account (cpecreds.derive_xmpp_password); None:
    # bootstrap provisions no XMPP account.
    xmpp_password: Callable[[str], str] | None = None
    # (OUI, ProductClass, software version) -> the device's per-vendor quirks (docs/quirks.md).
    quirks_of: Callable[[str, str, str | None], Quirks] | None = None

    def quirks(self, device: DeviceState) -> Quirks:
        if self.quirks_of is None:
            return NO_QUIRKS
        return self.quirks_of(device.oui, device.product_class, device.software_version)
