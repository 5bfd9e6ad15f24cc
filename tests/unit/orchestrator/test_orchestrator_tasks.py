"""The task state machine and the task request models."""

from __future__ import annotations

from datetime import timedelta
from typing import get_args

import pytest
from pydantic import TypeAdapter, ValidationError

from services.orchestrator import specs
from services.orchestrator import tasks as T
from services.orchestrator.tasks import Fault, TaskStatus
from tests.unit.orchestrator.orchestrator_builders import T0, make_task

SPEC: TypeAdapter[specs.TaskSpec] = TypeAdapter(specs.TaskSpec)


def test_only_the_transitions_in_the_table_are_possible() -> None:
    done = make_task("reboot", {}, status=TaskStatus.SUCCEEDED)
    with pytest.raises(T.TransitionError, match="a succeeded task cannot become cancelled"):
        T.cancel(done, T0, "too late")
    with pytest.raises(T.TransitionError):
        T.retry(done, T0)
    pending = make_task("reboot", {})
    with pytest.raises(T.TransitionError):
        T.succeed(pending, T0)
    assert T.cancel(pending, T0, "operator said so").status is TaskStatus.CANCELLED
    # An ended task can only be retried by an operator, never resumed by a late event.
    assert all(T.ALLOWED[status] <= {TaskStatus.PENDING} for status in T.TERMINAL)


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [T.backoff_seconds(n, 60, 600) for n in range(1, 7)] == [60, 120, 240, 480, 600, 600]


def test_retry_starts_afresh_and_drops_a_passed_expiry() -> None:
    failed = make_task("reboot", {}, status=TaskStatus.FAILED, attempts=5, reason="gave up",
                       expires_at=T0 - timedelta(hours=1), next_attempt_at=T0 + timedelta(hours=1))
    again = T.retry(failed, T0)
    assert (again.status, again.attempts, again.reason, again.expires_at, again.next_attempt_at) == (
        TaskStatus.PENDING, 0, "", None, None)
    assert T.is_due(again, T0)


def test_a_succeeded_task_keeps_its_result_and_drops_its_working_state() -> None:
    running = make_task("getParameterValues", {"names": ["Device."]}, status=TaskStatus.IN_PROGRESS,
                        progress={"walk": {"seen": ["Device.DeviceInfo."] * 100}})
    done = T.succeed(running, T0, {"parameters": [{"name": "Device.DeviceInfo.Manufacturer", "value": "X"}]})
    assert done.status is TaskStatus.SUCCEEDED and done.progress == {}
    assert done.result == {"parameters": [{"name": "Device.DeviceInfo.Manufacturer", "value": "X"}]}


def test_faults_kept_are_bounded() -> None:
    task = make_task("reboot", {}, max_attempts=100)
    for i in range(30):
        task = T.start(task, "s", T0)
        task = T.fault_attempt(task, Fault(code=9002, string=str(i), at=T0), T0, retry_base=1, retry_cap=1)
    assert len(task.faults) == T.MAX_FAULTS_KEPT and task.faults[-1].string == "29"


def test_documents_round_trip_and_mongo_naive_datetimes_come_back_as_utc() -> None:
    task = make_task("reboot", {}, expires_at=T0)
    document = task.to_document()
    document["created_at"] = document["created_at"].replace(tzinfo=None)  # as MongoDB returns it
    back = T.Task.from_document(document)
    assert back == task and back.created_at.tzinfo is not None
    assert "progress" not in task.public() and "version" not in task.public()


# --- request models -------------------------------------------------------------------------


def test_set_parameter_values_accepts_objects_triplets_and_camel_case_and_infers_types() -> None:
    spec = SPEC.validate_python({"name": "setParameterValues", "parameterValues": [
        ["Device.ManagementServer.PeriodicInformEnable", True],
        ["Device.ManagementServer.PeriodicInformInterval", 300],
        {"name": "Device.X.Offset", "value": -5},
        {"name": "Device.X.Id", "value": "7", "type": "xsd:unsignedLong"},
    ], "parameterKey": "k"})
    assert specs.task_args(spec)["parameter_values"] == [
        {"name": "Device.ManagementServer.PeriodicInformEnable", "value": "true", "type": "xsd:boolean"},
        {"name": "Device.ManagementServer.PeriodicInformInterval", "value": "300", "type": "xsd:unsignedInt"},
        {"name": "Device.X.Offset", "value": "-5", "type": "xsd:int"},
        {"name": "Device.X.Id", "value": "7", "type": "xsd:unsignedLong"},
    ]


@pytest.mark.parametrize(("body", "fragment"), [
    ({"name": "getParameterValues", "parameter_names": []}, "at least 1 item"),
    ({"name": "getParameterValues", "parameter_names": ["Device..X"]}, "is not a parameter name"),
    ({"name": "setParameterValues", "parameter_values": [["Device.X.", "1"]]}, "full parameter name"),
    ({"name": "setParameterValues", "parameter_values": [["Device.X", "1", "xsd:float"]]}, "type must be one of"),
    ({"name": "addObject", "object_name": "Device.IP.Interface"}, "ending with '.'"),
    ({"name": "reboot", "delay": 5}, "Extra inputs are not permitted"),
    ({"name": "scheduleInform", "delay_seconds": 0}, "greater than or equal to 1"),
    ({"name": "upload", "file_type": "9 Something"}, "file_type is"),
    ({"name": "formatDisk"}, "does not match any of the expected tags"),
])
def test_bad_task_requests_are_refused_with_a_reason(body: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment.replace("(", r"\(")):
        SPEC.validate_python(body)


def test_expiry_is_relative_or_absolute() -> None:
    relative = SPEC.validate_python({"name": "reboot", "expires_in": 60})
    absolute = SPEC.validate_python({"name": "reboot", "expires_at": "2024-05-01T13:00:00Z"})
    assert relative.expiry(T0) == T0 + timedelta(seconds=60)
    assert absolute.expiry(T0) == T0 + timedelta(hours=1)
    assert "expires_in" not in specs.task_args(relative)


def test_every_task_name_has_a_model() -> None:
    union, _ = get_args(specs.TaskSpec)
    names = {get_args(model.model_fields["name"].annotation)[0] for model in get_args(union)}
    assert names == set(specs.TASK_NAMES)
