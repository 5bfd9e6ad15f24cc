"""Every setting of every service, read from the environment (prefix ``ACS_``).

One class for the whole ACS keeps names consistent between docker-compose, Kubernetes and
``acs up``: a variable means the same thing to every process that reads it. The README lists
them all with their defaults.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.forwarding import Network, parse_networks

# The host of the URLs derived from port settings: every process of `acs up` runs on this machine.
LOCAL_HOST = "127.0.0.1"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ACS_", extra="ignore")

    # --- infrastructure -------------------------------------------------------------------------
    kafka_bootstrap: str = "127.0.0.1:9092"
    # Idempotent producers need a real Kafka broker; the local Tansu broker rejects them.
    kafka_idempotence: bool = False
    kafka_partitions: int = Field(12, ge=1)
    kafka_replication: int = Field(1, ge=1)
    kafka_topic_prefix: str = ""
    # How the services reach the brokers: PLAINTEXT, or TLS (SSL) and SASL to protect the internal
    # topics (docs/deploy.md#protecting-the-internal-topics). Files are PEM paths.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_ssl_cafile: str | None = None
    kafka_ssl_certfile: str | None = None
    kafka_ssl_keyfile: str | None = None
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = None
    # How long a service waits for the broker to acknowledge a message before giving up on it.
    kafka_publish_timeout: float = Field(5.0, gt=0)
    # A consumer group member that sends no heartbeat for this long is out of the group. Apache
    # Kafka is fine with the 10 s default. The local Tansu holds every group join for half of it
    # and a rejoin after a restart for about twice it, so the local launcher (acs.infra,
    # LOCAL_BROKER_ENV) gives it 3 s: a service then starts in 1.5 s instead of 5 s (18 s on restart).
    kafka_session_timeout_ms: int = Field(10_000, ge=1_000)
    mongodb_url: str = "mongodb://127.0.0.1:27017/?directConnection=true"
    mongodb_database: str = "acs"
    s3_endpoint: str = "127.0.0.1:9000"
    s3_access_key: str = "acs"
    s3_secret_key: str = "acs-secret-key"
    s3_bucket: str = "acs-files"
    s3_secure: bool = False
    s3_region: str = "us-east-1"

    # --- listeners ------------------------------------------------------------------------------
    bind_host: str = "127.0.0.1"
    gateway_port: int = 7547
    # The gateway's /metrics (and probes): never on the CPE-facing port.
    gateway_admin_port: int = 7548
    api_port: int = 7557
    orchestrator_port: int = 7560
    inventory_port: int = 7561
    fileserver_port: int = 7562
    # The operator console (web UI); the router serves it at / on ACS_API_PORT.
    console_port: int = 7563
    downloads_port: int = 7567
    # Where the services reach each other, and the base URL that CPEs fetch files from (put in
    # Download RPCs). Unset, each is http://127.0.0.1:<its port setting>, so that moving a port
    # moves the URLs that point at it; set them where the services are on other hosts.
    inventory_url: str = ""
    orchestrator_url: str = ""
    fileserver_url: str = ""
    files_public_url: str = ""
    console_url: str = ""

    # --- security -------------------------------------------------------------------------------
    # HMAC key shared by the instances of a deployment: Digest nonces, minted download credentials.
    secret_key: str = Field("change-me-in-production", min_length=16)
    # Bootstrap admin API key; more keys are created through the API and stored hashed.
    admin_api_key: str | None = None
    cpe_auth: Literal["digest", "basic", "none"] = "digest"
    # Basic sends the password in clear: allowed only behind TLS unless explicitly enabled.
    cpe_allow_basic_without_tls: bool = False
    # How CPEs authenticate (docs/security.md#cpe-credentials). "provisioned": the shared pair
    # below is good for the first contact of a device only; at bootstrap the ACS sets the device's
    # own ManagementServer.Username/Password and from then on accepts only those for it.
    # "per-device": only credentials imported through the API. "shared": everyone uses the pair.
    cpe_credentials: Literal["provisioned", "shared", "per-device"] = "provisioned"
    cpe_username: str = "testcpe"
    cpe_password: str = "testcpe"
    cpe_realm: str = "acs"
    # Reverse proxies whose X-Forwarded-For / Forwarded (and -Proto) are believed: CIDRs or
    # addresses, comma-separated. Default none, not even loopback: from anyone else the headers
    # are ignored, or a CPE could rotate them past every per-address limit.
    trusted_proxies: str = ""
    # Which addresses the orchestrator may send connection requests to (the URL and UDP address a
    # CPE reports), comma-separated networks. Loopback, link-local, unspecified, multicast and the
    # orchestrator host's own addresses are refused unless a network given here lies within them
    # (e.g. 127.0.0.0/8 for simulated CPEs on this machine); the refused networks always win.
    connection_request_allowed_networks: str = "0.0.0.0/0,::/0"
    # Networks never called, whatever the allow-list says: the ACS's own (pod, service, management).
    connection_request_refused_networks: str = ""
    # More secret parameters (beside *Password, *Passphrase, *PreSharedKey, *KeyPassphrase, *WEPKey*),
    # comma-separated globs: redacted in every API answer, event and log line (redaction.py).
    redacted_parameters: str = ""
    # Operator accounts (docs/security.md#operator-accounts): wrong passwords or one-time codes in a
    # row before an account is locked (an admin unlocks it).
    account_lock_failures: int = Field(5, ge=1)
    # How long the audit trail (MongoDB `audit`) keeps a record (docs/security.md#audit-trail).
    audit_retention_days: float = Field(365.0, gt=0)

    # --- XMPP connection requests (TR-069 Annex K) ------------------------------------------------
    # The XMPP server the orchestrator logs in to ("host:port"; empty: no XMPP), its account, and
    # whether to register that account in-band first (the local prosody of `acs up` only).
    xmpp_server: str = ""
    xmpp_jid: str = ""
    xmpp_password: str = ""
    xmpp_register: bool = False
    # XMPP for the CPEs, provisioned at bootstrap where the CPE has Device.XMPP. (TR-181): the
    # server as the CPEs reach it ("host:port"; empty: the CPEs' XMPP settings are left alone) and
    # the domain of their accounts (empty: the domain of ACS_XMPP_JID). docs/orchestrator.md.
    xmpp_cpe_server: str = ""
    xmpp_cpe_domain: str = ""

    # --- UDP connection requests through NAT (TR-069 Annex G) -------------------------------------
    # The STUN server that bootstrap gives the CPEs (ManagementServer.STUNServerAddress, host or
    # address as the CPEs reach it; empty: STUN is not provisioned), its UDP port, the optional
    # STUNUsername/STUNPassword (empty: no MESSAGE-INTEGRITY) and the keep-alive bounds in seconds
    # (STUNMinimumKeepAlivePeriod; STUNMaximumKeepAlivePeriod, -1: no maximum).
    stun_server: str = ""
    stun_port: int = Field(3478, ge=1, le=65535)
    stun_username: str = ""
    stun_password: str = ""
    stun_min_keepalive: int = Field(30, ge=0)
    stun_max_keepalive: int = Field(-1, ge=-1)

    # --- gateway --------------------------------------------------------------------------------
    # Where the other gateway instances reach this one (in Kubernetes: http://$(POD_IP):7547).
    # Defaults to this host's address and ACS_GATEWAY_PORT.
    gateway_advertise_url: str | None = None
    max_body_bytes: int = Field(1024 * 1024, ge=1024)
    # How long a session waits for the orchestrator's next plan before ending with 204. CPEs wait
    # at least 30 s for an answer (TR-069 3.4.2); a short wait under a bootstrap flood turns slow
    # plans into failed provisioning attempts, retried in later sessions, which adds to the flood.
    session_plan_timeout: float = Field(15.0, gt=0)
    # Slow clients: a request's headers must arrive within this of its first byte, its body
    # within the next.
    request_header_timeout: float = Field(10.0, gt=0)
    request_body_timeout: float = Field(30.0, gt=0)
    session_idle_timeout: float = Field(30.0, gt=0)
    # On SIGTERM: how long sessions in progress may finish before they are ended.
    shutdown_grace: float = Field(15.0, ge=0)
    max_sessions: int = Field(2000, ge=1)
    # Local-broker tuning: the gateway moves to the emptiest cwmp.replies partition after this many
    # records in its own (Tansu serves a fetch in time proportional to a partition's log); 0: never.
    reply_rotate_records: int = Field(5000, ge=0)
    # Admission control (services/gateway/admission.py): new sessions get 503 + Retry-After when a
    # routine session would take (twice the 90th percentile of the requests just answered or still
    # waiting, plus event-loop lag) more than half of this many seconds, all of them at the bound.
    # 0: only ACS_MAX_SESSIONS limits.
    admission_latency_bound: float = Field(1.5, ge=0)
    # Retry-After of such a 503: a random number of seconds from half to one and a half times this.
    admission_retry_after: int = Field(10, ge=1)
    # The "work due" marker (services/common/workdue.py, docs/architecture.md): the gateway ends a
    # routine periodic session itself when the orchestrator said nothing is due for the device.
    work_due_marker: bool = True
    # How long the orchestrator's "nothing due" holds at most: then one Inform goes to it again.
    work_due_idle_seconds: float = Field(3600.0, gt=0)
    # How often the gateway and the orchestrator check whether the per-vendor quirks table changed
    # (docs/quirks.md): a change applies on every instance within this many seconds.
    quirks_refresh_seconds: float = Field(2.0, gt=0, le=300)
    # Wrong passwords per (username, address) in ACS_AUTH_THROTTLE_SECONDS before that pair is
    # refused (503 + Retry-After) until the window ends.
    auth_failures_before_throttle: int = Field(5, ge=1)
    # Wrong passwords per address (any username) before the address is throttled too: then a
    # username that already failed from it is refused at once, while a username without
    # failures there is still checked, so a correct login behind a busy NAT always gets in.
    auth_failures_per_address: int = Field(50, ge=1)
    auth_throttle_seconds: float = Field(60.0, gt=0)

    # --- orchestrator ---------------------------------------------------------------------------
    periodic_inform_interval: int = Field(3600, ge=0)
    download_timeout: float = 3600.0
    # A Reboot (FactoryReset) task succeeds when the device comes back with 1 BOOT + M Reboot
    # (0 BOOTSTRAP); it fails when it has not within this many seconds of the RPC's answer.
    reboot_timeout: float = Field(600.0, gt=0)
    # How often each orchestrator instance sweeps: queued tasks expire, transfers and reboots
    # time out, tasks of vanished sessions are freed.
    sweep_interval: float = Field(30.0, gt=0)
    # The most parameters one discovery walk collects; a bigger data model's walk ends "truncated".
    walk_max_parameters: int = Field(50_000, ge=1)
    gpv_batch_size: int = Field(32, ge=1)
    # A task that keeps failing is retried with exponential backoff, then given up with a reason.
    task_max_attempts: int = Field(5, ge=1)
    task_retry_base_seconds: float = Field(60.0, gt=0)
    task_retry_max_seconds: float = Field(3600.0, gt=0)
    # Bulk jobs: devices per page of a job's selection, and how long an orchestrator instance
    # holds a job without renewing it (another instance takes the job over after that).
    job_page_size: int = Field(500, ge=1, le=1000)
    job_lease_seconds: float = Field(30.0, gt=0)
    # Firmware campaigns: seconds between two rounds of a running campaign (docs/campaigns.md).
    campaign_tick_seconds: float = Field(2.0, gt=0)

    # --- fileserver -----------------------------------------------------------------------------
    # Lifetime of the credentials minted for one Download (the CPE may start it late).
    download_credentials_ttl: float = Field(21600.0, gt=0)
    # Basic sends the password in clear: off unless downloads are served over TLS.
    downloads_allow_basic: bool = False
    # Minted credentials are honoured only from the address their device last informed from
    # (fileserver/cpe.py DeviceBinding). Off only where a NAT between the ports hides it.
    downloads_check_address: bool = True
    max_file_bytes: int = Field(4 * 1024**3, ge=1)

    # --- console --------------------------------------------------------------------------------
    # How long a console sign-in lasts (the session is server-side; sign-out ends it at once).
    console_session_hours: float = Field(12.0, gt=0, le=24 * 30)

    # --- inventory ------------------------------------------------------------------------------
    silent_after_intervals: float = 3.0
    # Local-broker tuning (the default suits the local Tansu, which lists a partition's whole log
    # per fetch that finds data): the inventory fetches at most this often; 0 on Apache Kafka.
    inventory_fetch_interval: float = Field(0.5, ge=0)
    # device.events `informed`: "notable" (default) leaves out routine periodic Informs (only
    # `2 PERIODIC`, RetryCount 0, nothing else learnt), a firehose few subscribers want; "all".
    informed_events: Literal["all", "notable"] = "notable"

    # How long a service waits at start for Kafka, MongoDB and S3 before giving up with one line.
    startup_wait: float = Field(30.0, ge=0)

    log_level: str = "INFO"

    @field_validator("trusted_proxies")
    @classmethod
    def _valid_networks(cls, value: str) -> str:
        try:
            parse_networks(value)
        except ValueError as exc:
            raise ValueError(f"ACS_TRUSTED_PROXIES: {exc}") from None
        return value

    @property
    def trusted_proxy_networks(self) -> tuple[Network, ...]:
        return parse_networks(self.trusted_proxies)

    @model_validator(mode="after")
    def _urls_follow_ports(self) -> Settings:
        for url, port in (("inventory_url", self.inventory_port), ("orchestrator_url", self.orchestrator_port),
                          ("fileserver_url", self.fileserver_port), ("files_public_url", self.downloads_port),
                          ("console_url", self.console_port)):
            if not getattr(self, url):
                setattr(self, url, f"http://{LOCAL_HOST}:{port}")
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
