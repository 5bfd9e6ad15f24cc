"""Every RPC dict the orchestrator builds or reads, in one place.

RPCs cross Kafka as plain dicts (``PlannedRpc.rpc``, ``RpcResponseReceived.rpc``,
``CpeRequestReceived.rpc``) in the form of ``cwmp.models.rpc_to_dict``: ``{"method": ...}`` plus
the RPC's arguments in snake_case, a parameter as ``{"name": ..., "value": {"value": str, "type":
"xsd:..."}}``. Keeping the builders and readers here means that the wire shape is known to one
module only; the planner speaks in Python arguments and never spells a dict key. The unit tests
check every builder against ``cwmp.models.rpc_from_dict``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# TR-069 A.2.1: the only value types a SetParameterValues may carry.
XSD_TYPES = ("xsd:string", "xsd:int", "xsd:unsignedInt", "xsd:long", "xsd:unsignedLong",
             "xsd:boolean", "xsd:dateTime", "xsd:base64", "xsd:hexBinary")


@dataclass(frozen=True, slots=True)
class Value:
    """One parameter value to set: the text exactly as sent, with its xsi:type."""

    name: str
    value: str
    type: str = "xsd:string"


# --- ACS -> CPE requests ----------------------------------------------------------------------


def get_parameter_values(names: Sequence[str]) -> dict[str, Any]:
    return {"method": "GetParameterValues", "parameter_names": list(names)}


def get_parameter_names(path: str, next_level: bool) -> dict[str, Any]:
    return {"method": "GetParameterNames", "parameter_path": path, "next_level": next_level}


def set_parameter_values(values: Iterable[Value], parameter_key: str = "") -> dict[str, Any]:
    return {"method": "SetParameterValues",
            "parameter_list": [{"name": v.name, "value": {"value": v.value, "type": v.type}}
                               for v in values],
            "parameter_key": parameter_key}


def get_parameter_attributes(names: Sequence[str]) -> dict[str, Any]:
    return {"method": "GetParameterAttributes", "parameter_names": list(names)}


def set_parameter_attributes(entries: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """``entries``: name plus optional notification (0-6) and access_list; a missing one is unchanged."""
    structs = []
    for entry in entries:
        notification = entry.get("notification")
        access_list = entry.get("access_list")
        structs.append({
            "name": entry["name"],
            "notification_change": notification is not None,
            "notification": int(notification or 0),
            "access_list_change": access_list is not None,
            "access_list": list(access_list or []),
        })
    return {"method": "SetParameterAttributes", "parameter_list": structs}


def add_object(object_name: str, parameter_key: str = "") -> dict[str, Any]:
    return {"method": "AddObject", "object_name": object_name, "parameter_key": parameter_key}


def delete_object(object_name: str, parameter_key: str = "") -> dict[str, Any]:
    return {"method": "DeleteObject", "object_name": object_name, "parameter_key": parameter_key}


def reboot(command_key: str) -> dict[str, Any]:
    return {"method": "Reboot", "command_key": command_key}


def factory_reset() -> dict[str, Any]:
    return {"method": "FactoryReset"}


def get_rpc_methods() -> dict[str, Any]:
    return {"method": "GetRPCMethods"}


def schedule_inform(delay_seconds: int, command_key: str) -> dict[str, Any]:
    return {"method": "ScheduleInform", "delay_seconds": delay_seconds, "command_key": command_key}


def download(*, command_key: str, file_type: str, url: str, username: str, password: str,
             file_size: int, target_file_name: str = "", delay_seconds: int = 0,
             success_url: str = "", failure_url: str = "") -> dict[str, Any]:
    return {"method": "Download", "command_key": command_key, "file_type": file_type, "url": url,
            "username": username, "password": password, "file_size": file_size,
            "target_file_name": target_file_name, "delay_seconds": delay_seconds,
            "success_url": success_url, "failure_url": failure_url}


def upload(*, command_key: str, file_type: str, url: str, username: str, password: str,
           delay_seconds: int = 0) -> dict[str, Any]:
    return {"method": "Upload", "command_key": command_key, "file_type": file_type, "url": url,
            "username": username, "password": password, "delay_seconds": delay_seconds}


def schedule_download(*, command_key: str, file_type: str, url: str, username: str, password: str,
                      file_size: int, time_windows: Iterable[Mapping[str, Any]],
                      target_file_name: str = "") -> dict[str, Any]:
    """``time_windows``: 1 or 2 of {window_start, window_end, window_mode, user_message, max_retries}."""
    return {"method": "ScheduleDownload", "command_key": command_key, "file_type": file_type, "url": url,
            "username": username, "password": password, "file_size": file_size,
            "target_file_name": target_file_name,
            "time_window_list": [{"window_start": int(w["window_start"]), "window_end": int(w["window_end"]),
                                  "window_mode": str(w.get("window_mode") or "1 At Any Time"),
                                  "user_message": str(w.get("user_message") or ""),
                                  "max_retries": int(w.get("max_retries") or 0)} for w in time_windows]}


def cancel_transfer(command_key: str) -> dict[str, Any]:
    return {"method": "CancelTransfer", "command_key": command_key}


def get_queued_transfers() -> dict[str, Any]:
    return {"method": "GetQueuedTransfers"}


def get_all_queued_transfers() -> dict[str, Any]:
    return {"method": "GetAllQueuedTransfers"}


_DU_FIELDS = {
    "install": ("InstallOpStruct", ("url", "uuid", "username", "password", "execution_env_ref")),
    "update": ("UpdateOpStruct", ("uuid", "version", "url", "username", "password")),
    "uninstall": ("UninstallOpStruct", ("uuid", "version", "execution_env_ref")),
}


def change_du_state(operations: Iterable[Mapping[str, Any]], command_key: str) -> dict[str, Any]:
    """``operations``: {type: install|update|uninstall, url?, uuid?, version?, username?, password?,
    execution_env_ref?}; absent (None) fields are left out of the envelope."""
    ops = []
    for op in operations:
        xsi_type, fields = _DU_FIELDS[str(op["type"])]
        ops.append({"type": xsi_type, **{f: str(op[f]) for f in fields if op.get(f) is not None}})
    return {"method": "ChangeDUState", "operations": ops, "command_key": command_key}


# Arguments that must never reach a log line or the task history.
SECRET_ARGUMENTS = ("password",)


def redacted(rpc: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``rpc`` fit for logs and task history: passwords and password values blanked."""
    out = dict(rpc)
    for key in SECRET_ARGUMENTS:
        if out.get(key):
            out[key] = "***"
    if isinstance(out.get("operations"), list):
        out["operations"] = [{**op, "password": "***"} if isinstance(op, Mapping) and op.get("password") else op
                             for op in out["operations"]]
    if isinstance(out.get("parameter_list"), list):
        out["parameter_list"] = [
            {**item, "value": {"value": "***", "type": "xsd:string"}}
            if "Password" in str(item.get("name", "")) and "value" in item else item
            for item in out["parameter_list"]
        ]
    return out


# --- CPE -> ACS answers -------------------------------------------------------------------------


def _struct_list(rpc: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    items = rpc.get("parameter_list") or []
    return [item for item in items if isinstance(item, Mapping)]


def read_values(rpc: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """GetParameterValuesResponse -> {name: {"value", "type"}}."""
    out: dict[str, dict[str, str]] = {}
    for item in _struct_list(rpc):
        value = item.get("value")
        if isinstance(value, Mapping):
            text, vtype = value.get("value"), value.get("type")
        else:
            # A flat {"name", "value", "type"}: not what the gateway sends, but cheap to accept.
            text, vtype = value, item.get("type")
        out[str(item.get("name", ""))] = {"value": "" if text is None else str(text),
                                          "type": str(vtype or "xsd:string")}
    return out


def read_names(rpc: Mapping[str, Any]) -> dict[str, bool]:
    """GetParameterNamesResponse -> {name: writable}; objects keep their trailing dot."""
    return {str(item.get("name", "")): _truthy(item.get("writable")) for item in _struct_list(rpc)}


def read_attributes(rpc: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """GetParameterAttributesResponse -> {name: {"notification", "access_list"}}."""
    return {str(item.get("name", "")): {"notification": int(item.get("notification") or 0),
                                        "access_list": list(item.get("access_list") or [])}
            for item in _struct_list(rpc)}


def read_status(rpc: Mapping[str, Any]) -> int:
    """``Status`` of SetParameterValues/AddObject/DeleteObject/Download/Upload responses."""
    try:
        return int(rpc.get("status") or 0)
    except (TypeError, ValueError):
        return 0


def read_instance_number(rpc: Mapping[str, Any]) -> int | None:
    try:
        return int(rpc["instance_number"])
    except (KeyError, TypeError, ValueError):
        return None


def read_method_list(rpc: Mapping[str, Any]) -> list[str]:
    return [str(m) for m in rpc.get("method_list") or []]


@dataclass(frozen=True, slots=True)
class TransferResult:
    """TransferComplete / AutonomousTransferComplete as the orchestrator needs them."""

    command_key: str
    fault_code: int
    fault_string: str
    start_time: str
    complete_time: str


def read_transfer_complete(rpc: Mapping[str, Any]) -> TransferResult:
    fault = rpc.get("fault_struct") or rpc.get("fault") or {}
    if not isinstance(fault, Mapping):
        fault = {}
    try:
        code = int(fault.get("fault_code") or 0)
    except (TypeError, ValueError):
        code = 9002  # an unreadable fault code is not a success
    return TransferResult(command_key=str(rpc.get("command_key") or ""), fault_code=code,
                          fault_string=str(fault.get("fault_string") or ""),
                          start_time=str(rpc.get("start_time") or ""),
                          complete_time=str(rpc.get("complete_time") or ""))


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true")
    return bool(value)


def read_queued_transfers(rpc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Get(All)QueuedTransfersResponse -> [{command_key, state, ...}] (state 1 not yet started,
    2 in progress, 3 completed and waiting to be reported)."""
    out = []
    for item in rpc.get("transfer_list") or []:
        if isinstance(item, Mapping):
            out.append({k: item[k] for k in ("command_key", "state", "is_download", "file_type", "file_size",
                                             "target_file_name") if k in item})
    return out


@dataclass(frozen=True, slots=True)
class DuResult:
    """One OpResultStruct of a (Autonomous)DUStateChangeComplete."""

    uuid: str
    deployment_unit_ref: str
    version: str
    current_state: str
    resolved: bool
    execution_unit_refs: list[str]
    start_time: str
    complete_time: str
    fault_code: int
    fault_string: str
    operation: str | None = None  # AutonomousDUStateChangeComplete: OperationPerformed

    def public(self) -> dict[str, Any]:
        return {"uuid": self.uuid, "deployment_unit_ref": self.deployment_unit_ref, "version": self.version,
                "current_state": self.current_state, "resolved": self.resolved,
                "execution_unit_refs": self.execution_unit_refs, "start_time": self.start_time,
                "complete_time": self.complete_time, "fault_code": self.fault_code,
                "fault_string": self.fault_string,
                **({"operation": self.operation} if self.operation is not None else {})}


def read_du_results(rpc: Mapping[str, Any]) -> list[DuResult]:
    out = []
    for item in rpc.get("results") or []:
        if not isinstance(item, Mapping):
            continue
        fault = item.get("fault") if isinstance(item.get("fault"), Mapping) else {}
        try:
            code = int(fault.get("fault_code") or 0)
        except (TypeError, ValueError):
            code = 9002
        refs = [r for r in str(item.get("execution_unit_ref_list") or "").split(",") if r]
        out.append(DuResult(uuid=str(item.get("uuid") or ""),
                            deployment_unit_ref=str(item.get("deployment_unit_ref") or ""),
                            version=str(item.get("version") or ""),
                            current_state=str(item.get("current_state") or ""),
                            resolved=_truthy(item.get("resolved")), execution_unit_refs=refs,
                            start_time=str(item.get("start_time") or ""),
                            complete_time=str(item.get("complete_time") or ""),
                            fault_code=code, fault_string=str(fault.get("fault_string") or ""),
                            operation=(str(item["operation_performed"]) if item.get("operation_performed")
                                       else None)))
    return out
