"""Request and response bodies of the orchestrator's northbound API (they make the OpenAPI document)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.common.apikeys import Role
from services.orchestrator.policies import PolicyEvent, PolicyMatch, PolicyTask
from services.orchestrator.specs import TaskSpec
from services.orchestrator.tasks import Fault, TaskStatus


class ConnectionRequestOut(BaseModel):
    outcome: Literal["ok", "sent", "auth_failed", "busy", "timeout", "unreachable", "error", "rate_limited",
                     "no_address", "refused_address"] = Field(
        description="ok: the CPE accepted (XMPP or HTTP); sent: UDP datagrams sent; the others say why the device "
                    "was not woken (refused_address: the address it reported is not in "
                    "ACS_CONNECTION_REQUEST_ALLOWED_NETWORKS, or is refused)")
    transport: Literal["xmpp", "http", "udp", "none"] = Field(
        description="the transport of the outcome: XMPP first when the device has a ConnReqJabberID, then HTTP, "
                    "then UDP; detail says why an earlier one was passed over")
    detail: str = ""
    http_status: int | None = None


class TaskOut(BaseModel):
    """A task as the API shows it."""

    id: str
    device_id: str
    name: str
    args: dict[str, Any] = Field(description="the task's arguments; for download, the file facts looked up")
    status: TaskStatus = Field(description="pending, in_progress, pending_completion (a transfer awaiting its "
                                           "TransferComplete, a reboot or factory reset awaiting the "
                                           "device's return), succeeded, failed, cancelled, expired")
    origin: str = Field(description="api, job:<id>, policy:<name>, bootstrap or self-heal")
    job_id: str | None = None
    policy_id: str | None = None
    created_by: str | None = None
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None = None
    next_attempt_at: datetime | None = Field(None, description="not offered to a session before this (backoff)")
    completion_deadline: datetime | None = Field(None, description="pending_completion: TransferComplete "
                                                                   "(download, upload) or the device's "
                                                                   "return (reboot: 1 BOOT + M Reboot, "
                                                                   "factoryReset: 0 BOOTSTRAP) expected "
                                                                   "before this")
    attempts: int
    max_attempts: int
    result: dict[str, Any] = Field(description="e.g. parameters read, instance number, transfer outcome")
    faults: list[Fault] = Field(description="CPE faults, most recent last")
    reason: str = Field(description="why the task is where it is (retrying, failed, cancelled...)")
    command_key: str | None = None
    session_id: str | None = None


class TaskCreated(TaskOut):
    connection_request: ConnectionRequestOut | None = Field(
        None, description="present when ?connection_request=true was asked")


class TaskList(BaseModel):
    tasks: list[TaskOut]
    next_cursor: str | None = Field(None, description="pass as ?cursor= for the next page; null at the end")


class PolicyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
    description: str = Field("", max_length=1024)
    enabled: bool = True
    priority: int = Field(100, description="lower runs first")
    events: list[PolicyEvent] = Field(min_length=1, description="Inform events that trigger the policy")
    match: PolicyMatch = Field(default_factory=PolicyMatch)
    tasks: list[TaskSpec] = Field(min_length=1, max_length=20)


class PolicyOut(BaseModel):
    id: str
    name: str
    description: str
    enabled: bool
    priority: int
    events: list[PolicyEvent]
    match: PolicyMatch
    tasks: list[PolicyTask]
    created_at: datetime
    created_by: str | None


class PolicyList(BaseModel):
    policies: list[PolicyOut]


class JobIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: dict[str, Any] | str = Field(description="an inventory device query (see docs/inventory.md), "
                                                    'e.g. {"tags": "lab"}')
    task: TaskSpec
    connection_request: bool = Field(False, description="also wake each device (rate-limited)")


JobStatus = Literal["resolving", "running", "finished", "failed", "cancelled"]


class JobOut(BaseModel):
    id: str
    query: dict[str, Any] | str
    task: PolicyTask
    status: JobStatus = Field(
        description="resolving: still paging through the inventory (reason says why when it is waiting "
                    "for the inventory); running: tasks open; finished: every task ended; failed: the "
                    "device query failed (see reason); cancelled: stopped by an operator (its open tasks "
                    "were cancelled)")
    device_count: int = Field(description="tasks created so far (one per matching device)")
    pages: int = Field(0, description="pages of the selection worked so far")
    counts: dict[str, int] = Field(description="tasks per status")
    created_at: datetime
    created_by: str | None
    reason: str = ""


class JobList(BaseModel):
    jobs: list[JobOut]
    next_cursor: str | None = Field(None, description="pass as ?cursor= for the next page; null at the end")


class ApiKeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    role: Role
    user: str | None = Field(None, description="the operator account the key belongs to: it has that user's "
                                               "scope, at most its role, and stops when the user is disabled")
    scope: dict[str, Any] | str | None = Field(None, description="a service key's own scope (an inventory query); "
                                                                 "not with a user (its key has the user's)")


class ApiKeyOut(BaseModel):
    name: str
    role: Role
    key: str = Field(description="shown once; only its hash is stored")


class ApiKeyInfo(BaseModel):
    name: str
    role: Role
    user: str | None = None
    scope: str | None = None
    created_at: datetime | None
    last_used_at: datetime | None = Field(description="when a service last looked the key up (to within 30 s); "
                                                      "null if never used")


class ApiKeyList(BaseModel):
    apikeys: list[ApiKeyInfo] = Field(description="in name order; the bootstrap key (ACS_ADMIN_API_KEY) "
                                                  "is not stored, so not listed")
