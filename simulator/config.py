"""Fleet configuration: one object shared by every device of a run (never copied per device)."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["AuthMode", "FleetSettings", "HttpMode"]


def _in_share(index: int, share: float) -> bool:
    """Spread ``share`` evenly over the integers: index i is in it when floor((i+1)s) > floor(i s)."""
    return share > 0 and math.floor((index + 1) * share + 1e-9) > math.floor(index * share + 1e-9)


class AuthMode(StrEnum):
    """How devices authenticate towards the ACS.

    ``digest``: wait for the 401 challenge and answer it; Digest or Basic, whichever the ACS
    offers (a CPE must support both and the ACS chooses, checklist A1). ``basic``: send Basic
    credentials on every request without waiting for a challenge (cwmp-sim, CPEs over TLS).
    ``none``: never send credentials; a 401 fails the session.
    """

    DIGEST = "digest"
    BASIC = "basic"
    NONE = "none"


class HttpMode(StrEnum):
    """How devices use TCP connections towards the ACS (measurements in docs/simulator.md).

    ``session``: a new connection per session, closed at its end, as real CPEs do; a whole
    session stays on one connection unless the ACS closes it, so an ACS that keys sessions by
    connection (``ignore_cookies``) works. ``device``: one connection per device kept open
    between sessions (keep-alive; costs one idle socket per device). ``shared``: idle
    connections go back to a fleet-wide pool and the next session of any device reuses one, as
    behind a keep-alive proxy (genieacs#281); cheapest on file descriptors.
    """

    SESSION = "session"
    SHARED = "shared"
    DEVICE = "device"


@dataclass
class FleetSettings:
    acs_url: str = "http://127.0.0.1:7547/"
    devices: int = 1
    model: str = "tr098"  # tr098 | tr181 | mixed (even indexes TR-098, odd TR-181)
    first_index: int = 0
    serial_prefix: str = "SIM"
    serial_width: int = 6
    sw_version: str = "1.0.0"
    # Data-model defaults (the ACS may change them per device with SetParameterValues).
    periodic_interval: int = 300
    periodic_enable: bool = True
    jitter: float = 0.05  # extra random delay of periodic Informs, as a fraction of the interval
    retry_min_wait: int = 5  # CWMPRetryMinimumWaitInterval
    retry_multiplier: int = 2000  # CWMPRetryIntervalMultiplier
    # Patterns with {serial}, {oui}, {product_class}, {index}, {device_id}.
    acs_username: str = "{device_id}"
    acs_password: str = ""
    cr_username: str = "{serial}"
    cr_password: str = "cr-{serial}"
    auth: AuthMode = AuthMode.DIGEST
    ignore_cookies: bool = False  # behave like cwmp-sim: never send cookies back
    cwmp_version: str = "1.2"  # 1.0 / 1.1 / 1.2 namespace, or 1.4 (cwmp-1-2 + SupportedCWMPVersions)
    strict_types: bool = True  # SetParameterValues with the wrong xsi:type gets 9006
    # ProductClass of every device instead of the model's (IGD-SIM, DEV-SIM); spaces allowed,
    # as in "easy cwmp", which the ACS percent-encodes into the device id.
    product_class: str = ""
    # Behaviours of real agents, off by default.
    # A sloppy Digest client: it answers a challenge once (nc=00000001) and sends that very
    # header again on every later request, of the session and of the device's next sessions,
    # until a 401 brings a new challenge.
    digest_reuse_nc: bool = False
    # A Digest client that keeps the last challenge's nonce across sessions: the next session's
    # Inform carries it pre-emptively with the next nonce count (RFC 7616 3.4), so the ACS can
    # skip the 401 leg while the nonce is valid; a 401 (stale or not) brings a new one.
    digest_keep_nonce: bool = False
    # Vendor quirks (docs/quirks.md) as some agents have them. ``bool_style`` "numeric": a
    # SetParameterValues whose xsd:boolean values are written true/false is refused with 9007
    # (only 1/0 accepted); "any" accepts both, as the standard says.
    bool_style: str = "any"
    # An RFC 2069 Digest client: it ignores the challenge's qop and sends no qop, nc or cnonce.
    digest_without_qop: bool = False
    # A CPE that cannot answer GetParameterNames with NextLevel=true: fault 9003.
    gpn_next_level: bool = True
    # Once per device, instead of answering the N-th ACS request of a session, drop the TCP
    # connection and come back at once with a new Inform on a new connection (still sending the
    # dropped session's cookie, as a client with a cookie jar does, unless ignore_cookies).
    drop_mid_session: int = 0
    # Fetch files as agents that shell out to wget or curl do: the Download's Username and
    # Password go into the URL as they are (http://user:pass@host/...), and the client
    # percent-decodes them from there.
    credentials_in_url: bool = False
    # Parameters (names relative to the root: "Time.NTPServer1") the device applies only at its
    # next boot: a SetParameterValues that sets one answers Status 1 and keeps the old value
    # until then, as CPEs that commit some settings on reboot do.
    apply_after_reboot: tuple[str, ...] = ()
    # Grow every device's data model to at least this many parameters (0: the template's own),
    # with a vendor table of 20 parameters per entry (simulator.template.load_big_template); a
    # session may then carry at least that many messages (a discovery walk of it needs them).
    parameters: int = 0
    # Firmware campaigns' trouble (docs/simulator.md). A share of the devices, spread evenly over the
    # indexes (any run of consecutive devices holds that share), whose firmware download fails with
    # ``fail_fault``: at ``fail_stage`` "transfer" the CPE accepts the Download and reports the fault
    # in its TransferComplete; at "download" it answers the Download RPC with the fault.
    fail_share: float = 0.0
    fail_fault: int = 9010
    fail_stage: str = "transfer"
    # A share of the devices (spread the same way, counted from the other end) that accept a
    # firmware Download and then go offline for good: no transfer, no session, no Inform.
    offline_share: float = 0.0
    # Slow downloads: every download's body is read over this many seconds (a thin line).
    download_seconds: float = 0.0
    # Connection requests.
    # Where the devices keep what they must remember across runs (their own ACS credentials, the
    # acknowledged BOOTSTRAP), as a CPE's flash does (memory.py); "" keeps nothing.
    memory_file: str = ""
    cr_host: str = "127.0.0.1"
    cr_port: int = 0  # 0: any free port
    cr_base_url: str = ""  # filled in once the listener is bound
    # XMPP connection requests (Annex K, simulator/xmppmode.py): "host:port" of the XMPP server, or "".
    xmpp_server: str = ""
    xmpp_domain: str = "acs.local"
    xmpp_password: str = "xmpp-{serial}"
    # XMPP client mode with the account the ACS provisions instead (no xmpp_server): a TR-181 device
    # logs in once the ACS enabled the Device.XMPP.Connection.{i} that ConnReqXMPPConnection names.
    xmpp_provisioned: bool = False
    # STUN client mode (Annex G, simulator/stunmode.py): a device whose STUNEnable the ACS set learns
    # its UDPConnectionRequestAddress from its STUN server and takes UDP connection requests.
    stun: bool = False
    # Simulated carrier-grade NAT: ConnectionRequestURL on 100.64.0.0/10 (unreachable), NATDetected true.
    behind_nat: bool = False
    # A UDP connection request whose ts is further than this from the device's clock is refused.
    udp_clock_skew: float = 300.0
    # Runtime behaviour.
    http_mode: HttpMode = HttpMode.SESSION
    max_sessions: int = 1000  # concurrent sessions (file descriptors and ACS load)
    http_timeout: float = 30.0  # T6: a CPE waits at least 30 s for an HTTP response
    transfer_timeout: float = 300.0
    ramp: float = 0.0  # seconds over which the first boots are spread
    reboot_delay: float = 2.0  # seconds a reboot keeps the device offline
    max_messages: int = 2000  # per session, so that a looping ACS cannot hold a device forever
    user_agent: str = "acs-simulator/0.1"
    seed: int | None = None
    keep_records: int = 10_000
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def __post_init__(self) -> None:
        self.auth = AuthMode(self.auth)
        self.http_mode = HttpMode(self.http_mode)
        if self.seed is not None:
            self.rng.seed(self.seed)
        if self.model not in ("tr098", "tr181", "mixed"):
            raise ValueError(f"model must be tr098, tr181 or mixed, not {self.model!r}")
        if self.cwmp_version not in ("1.0", "1.1", "1.2", "1.4"):
            raise ValueError(f"cwmp_version must be 1.0, 1.1, 1.2 or 1.4, not {self.cwmp_version!r}")
        if self.devices < 1 or self.max_sessions < 1:
            raise ValueError("devices and max_sessions must be at least 1")
        if self.parameters < 0:
            raise ValueError("parameters must be 0 (the template's own) or a parameter count")
        self.max_messages = max(self.max_messages, self.parameters)
        if not (0 <= self.fail_share <= 1 and 0 <= self.offline_share <= 1):
            raise ValueError("fail_share and offline_share are shares of the devices, from 0 to 1")
        if self.fail_stage not in ("transfer", "download"):
            raise ValueError(f"fail_stage must be transfer or download, not {self.fail_stage!r}")
        if self.xmpp_provisioned and self.xmpp_server:
            raise ValueError("xmpp_provisioned takes the XMPP server from the ACS: leave xmpp_server empty")
        if self.drop_mid_session < 0:
            raise ValueError("drop_mid_session must be 0 (never) or the number of an ACS request")

    def fails(self, index: int) -> bool:
        """Whether the device at ``index`` is in the failing share (an even spread: 0.3 fails 3 in 10)."""
        return _in_share(index, self.fail_share)

    def goes_offline(self, index: int) -> bool:
        """Whether the device at ``index`` goes offline after accepting a firmware Download."""
        return _in_share(-1 - index, self.offline_share)

    def template_for(self, index: int) -> str:
        if self.model == "mixed":
            return "tr098" if index % 2 == 0 else "tr181"
        return self.model
