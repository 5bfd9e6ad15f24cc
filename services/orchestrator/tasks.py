"""Tasks: what the ACS wants done on one device, and the only ways their state may change.

A task goes ``pending`` -> ``in_progress`` (its first RPC is planned in a session) -> one of
``succeeded``, ``failed``, back to ``pending`` (retry after a fault, or the session ended first),
or ``pending_completion`` (a Download/Upload the CPE accepted with Status 1, waiting for its
TransferComplete). ``cancelled`` and ``expired`` end it without the device's help. The table
``ALLOWED`` is the whole state machine; every function here checks it, so no caller can move a
task somewhere illegal. One exception, spelled out in ``settle_late_transfer``: a TransferComplete
that arrives after we gave up on it settles the task with the CPE's outcome. All functions are
pure: they return a new Task.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.common.redaction import redact


class TaskStatus(StrEnum):
    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    PENDING_COMPLETION = "pending_completion"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


S = TaskStatus
ALLOWED: dict[TaskStatus, frozenset[TaskStatus]] = {
    # pending -> failed: a task waiting to retry a 9005 whose self-heal walk found the name absent.
    S.PENDING: frozenset({S.IN_PROGRESS, S.CANCELLED, S.EXPIRED, S.FAILED}),
    S.IN_PROGRESS: frozenset({S.SUCCEEDED, S.FAILED, S.PENDING, S.PENDING_COMPLETION, S.CANCELLED}),
    S.PENDING_COMPLETION: frozenset({S.SUCCEEDED, S.FAILED, S.CANCELLED}),
    # Operators may try again what did not succeed.
    S.FAILED: frozenset({S.PENDING}),
    S.CANCELLED: frozenset({S.PENDING}),
    S.EXPIRED: frozenset({S.PENDING}),
    S.SUCCEEDED: frozenset(),
}
TERMINAL = frozenset({S.SUCCEEDED, S.FAILED, S.CANCELLED, S.EXPIRED})
OPEN = frozenset({S.PENDING, S.IN_PROGRESS, S.PENDING_COMPLETION})

# CPE faults that will not go away by asking again (TR-069 A.5.1): retrying only burns sessions.
# 9005 is absent on purpose: the data model may have moved (instances renumbered), so we heal
# the path and try again.
PERMANENT_FAULTS = frozenset({9000, 9003, 9006, 9007, 9008, 9009, 9013})
# How many faults a task keeps; older ones are dropped so a document cannot grow without bound.
MAX_FAULTS_KEPT = 20
TIMEOUT_REASON = "no TransferComplete within the download timeout"
REBOOT_TIMEOUT_REASON = ("the device did not come back (1 BOOT with M Reboot and the task's CommandKey) "
                         "within the reboot timeout")
RESET_TIMEOUT_REASON = "the device did not come back (0 BOOTSTRAP) within the reboot timeout"
DU_TIMEOUT_REASON = "no DUStateChangeComplete within the download timeout"


class TransitionError(ValueError):
    """The requested change is not allowed from the task's current status."""


class Fault(BaseModel):
    model_config = ConfigDict(extra="ignore")

    code: int | None = Field(None, description="CPE fault code (TR-069 A.5.1); null when no code applies")
    string: str = ""
    method: str = ""
    at: datetime
    parameter_faults: list[dict[str, Any]] = Field(default_factory=list)

    @field_validator("at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return aware(value)


class Task(BaseModel):
    """One task document (collection ``tasks``); ``progress`` and ``version`` are internal."""

    model_config = ConfigDict(extra="ignore")

    id: str
    device_id: str
    name: str
    args: dict[str, Any] = Field(default_factory=dict)
    status: TaskStatus = TaskStatus.PENDING
    origin: str = "api"
    job_id: str | None = None
    policy_id: str | None = None
    created_by: str | None = None
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None = None
    next_attempt_at: datetime | None = None
    completion_deadline: datetime | None = None
    attempts: int = 0
    max_attempts: int = 5
    result: dict[str, Any] = Field(default_factory=dict)
    faults: list[Fault] = Field(default_factory=list)
    reason: str = ""
    command_key: str | None = None
    session_id: str | None = None
    progress: dict[str, Any] = Field(default_factory=dict)
    version: int = 0

    @field_validator("created_at", "updated_at", "expires_at", "next_attempt_at", "completion_deadline")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        return aware(value) if value is not None else None

    @property
    def open(self) -> bool:
        return self.status in OPEN

    def public(self) -> dict[str, Any]:
        """The document as the API shows it: no internal progress, no concurrency counter, no
        secret parameter value in its arguments or result (services.common.redaction), and for a
        configuration profile's task no value from a secret variable (nor its digest)."""
        body = redact(self.model_dump(mode="json", exclude={"progress", "version"}))
        meta = self.args.get("profile")
        if self.origin == "profile" and isinstance(meta, dict):
            secret = set(meta.get("secret", []))
            body["args"] = {**body["args"], "profile": {"profiles": meta.get("profiles", [])},
                            "parameter_values": [{**v, "value": "********"} if v.get("name") in secret else v
                                                 for v in body["args"].get("parameter_values", [])]}
            if not body["args"]["parameter_values"]:
                del body["args"]["parameter_values"]
            if self.name == "profileObjects":  # object entries: their secret keys and values
                body["args"]["objects"] = [
                    {**o, **{part: [[n, "********" if n in set(o.get("secret", [])) else v, t]
                                    for n, v, t in o.get(part, [])] for part in ("keys", "values")}}
                    for o in self.args.get("objects", [])]
        return body

    def to_document(self) -> dict[str, Any]:
        document = self.model_dump(exclude={"id"})
        document["_id"] = self.id
        return document

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> Task:
        values = dict(document)
        values["id"] = values.pop("_id")
        return cls.model_validate(values)


def aware(value: datetime) -> datetime:
    """MongoDB hands datetimes back without a zone; they are UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _move(task: Task, to: TaskStatus, now: datetime, **changes: Any) -> Task:
    if to not in ALLOWED[task.status]:
        raise TransitionError(f"a {task.status.value} task cannot become {to.value}")
    return task.model_copy(update={"status": to, "updated_at": now, **changes})


def is_due(task: Task, now: datetime) -> bool:
    """Whether a session may take the task now."""
    return (task.status is S.PENDING
            and (task.next_attempt_at is None or task.next_attempt_at <= now)
            and (task.expires_at is None or task.expires_at > now))


def is_expired(task: Task, now: datetime) -> bool:
    return task.status is S.PENDING and task.expires_at is not None and task.expires_at <= now


def backoff_seconds(attempts: int, base: float, cap: float) -> float:
    """Exponential backoff after the ``attempts``-th failed attempt: base, 2*base, 4*base... <= cap."""
    return float(min(cap, base * (2 ** max(0, attempts - 1))))


def start(task: Task, session_id: str, now: datetime) -> Task:
    return _move(task, S.IN_PROGRESS, now, attempts=task.attempts + 1, session_id=session_id,
                 progress={}, next_attempt_at=None)


def succeed(task: Task, now: datetime, result: dict[str, Any] | None = None) -> Task:
    # The working state goes: a bootstrap's walk state is as big as its result, kept forever.
    return _move(task, S.SUCCEEDED, now, result=result if result is not None else task.result,
                 completion_deadline=None, reason="", progress={})


def await_completion(task: Task, now: datetime, deadline: datetime,
                     result: dict[str, Any] | None = None) -> Task:
    return _move(task, S.PENDING_COMPLETION, now, completion_deadline=deadline,
                 result=result if result is not None else task.result)


def _with_fault(task: Task, fault: Fault) -> list[Fault]:
    return [*task.faults, fault][-MAX_FAULTS_KEPT:]


def is_permanent(fault: Fault) -> bool:
    if fault.code == 9003 and fault.parameter_faults:
        # An SPV 9003 wraps per-parameter faults: it is as permanent as they all are.
        return all(int(pf.get("fault_code", 0)) in PERMANENT_FAULTS for pf in fault.parameter_faults)
    return fault.code in PERMANENT_FAULTS


def fault_attempt(task: Task, fault: Fault, now: datetime, *, retry_base: float, retry_cap: float,
                  permanent: bool | None = None) -> Task:
    """This attempt failed: try again later with backoff, or stop and say why."""
    permanent = is_permanent(fault) if permanent is None else permanent
    faults = _with_fault(task, fault)
    label = f"{fault.code} {fault.string}".strip() if fault.code is not None else fault.string
    if permanent:
        return _move(task, S.FAILED, now, faults=faults, completion_deadline=None,
                     reason=f"the CPE refused it ({label}); retrying would not help")
    if task.attempts >= task.max_attempts:
        return _move(task, S.FAILED, now, faults=faults, completion_deadline=None,
                     reason=f"gave up after {task.attempts} attempts; last fault: {label}")
    delay = backoff_seconds(task.attempts, retry_base, retry_cap)
    return _move(task, S.PENDING, now, faults=faults, progress={}, session_id=None,
                 next_attempt_at=now + timedelta(seconds=delay), reason=f"retrying after fault: {label}")


def requeue(task: Task, now: datetime, *, count_attempt: bool) -> Task:
    """The session ended before the task finished, through no fault of the CPE's answers.

    ``count_attempt`` False gives the attempt back (nothing was sent). A task that keeps being
    cut off still stops at ``max_attempts``, so one that trips up every session cannot loop.
    """
    attempts = task.attempts if count_attempt else max(0, task.attempts - 1)
    if count_attempt and attempts >= task.max_attempts:
        return _move(task, S.FAILED, now, attempts=attempts,
                     reason=f"gave up after {attempts} attempts: sessions kept ending before it finished")
    return _move(task, S.PENDING, now, attempts=attempts, progress={}, session_id=None)


def fail(task: Task, now: datetime, reason: str, fault: Fault | None = None) -> Task:
    return _move(task, S.FAILED, now, reason=reason, completion_deadline=None,
                 faults=_with_fault(task, fault) if fault else task.faults)


def cancel(task: Task, now: datetime, reason: str) -> Task:
    return _move(task, S.CANCELLED, now, reason=reason, completion_deadline=None)


def expire(task: Task, now: datetime) -> Task:
    return _move(task, S.EXPIRED, now, reason="expired before the device could run it")


def retry(task: Task, now: datetime) -> Task:
    """An operator asks for a fresh start: attempts reset, due now, a passed expiry dropped."""
    expires_at = task.expires_at if task.expires_at and task.expires_at > now else None
    return _move(task, S.PENDING, now, attempts=0, next_attempt_at=None, reason="", progress={},
                 session_id=None, expires_at=expires_at, completion_deadline=None)


def time_out_completion(task: Task, now: datetime, reason: str = TIMEOUT_REASON) -> Task:
    return _move(task, S.FAILED, now, reason=reason, completion_deadline=None)


def settle_late_transfer(task: Task, now: datetime, ok: bool, result: dict[str, Any],
                         fault: Fault | None) -> Task:
    """A TransferComplete for a task we had timed out: the CPE's word beats our guess."""
    if task.status is not S.FAILED or task.reason != TIMEOUT_REASON:
        raise TransitionError("only a timed-out transfer can be settled late")
    status = S.SUCCEEDED if ok else S.FAILED
    reason = "" if ok or fault is None else f"transfer failed: {fault.code} {fault.string}".strip()
    return task.model_copy(update={
        "status": status, "updated_at": now, "result": result, "reason": reason,
        "faults": _with_fault(task, fault) if fault else task.faults})
