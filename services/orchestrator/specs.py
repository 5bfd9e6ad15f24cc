"""What an operator (or a policy) may ask of a device: one pydantic model per task name.

The models validate a request before anything is stored, so a task that reaches a session is
known to be well formed. Field names are snake_case; camelCase spellings (GenieACS style) are
accepted too. ``task_args`` turns a validated spec into the ``args`` stored on the task.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from services.orchestrator.rpcs import XSD_TYPES

# TR-069: names are at most 256 characters; no white space or control characters inside.
_NAME_RE = re.compile(r"^[A-Za-z_][\w\-]*(\.([\w\-]+|\*|\{i\}))*\.?$")
MAX_NAMES = 1000


def _check_name(value: str, *, partial: bool = True, object_path: bool = False) -> str:
    if len(value) > 256:
        raise ValueError("a parameter name has at most 256 characters")
    if not _NAME_RE.match(value):
        raise ValueError(f"{value!r} is not a parameter name or partial path")
    if object_path and not value.endswith("."):
        raise ValueError(f"{value!r} must be an object path ending with '.'")
    if not partial and value.endswith("."):
        raise ValueError(f"{value!r} must be a full parameter name, not a partial path")
    return value


ParamName = Annotated[str, Field(min_length=1, max_length=256)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)

    expires_in: int | None = Field(None, gt=0, description="seconds from now after which the task is dropped")
    expires_at: datetime | None = Field(None, description="absolute expiry (wins over expires_in)")

    def expiry(self, now: datetime) -> datetime | None:
        if self.expires_at is not None:
            return self.expires_at
        return now + timedelta(seconds=self.expires_in) if self.expires_in else None


class GetParameterValues(_Spec):
    name: Literal["getParameterValues"]
    parameter_names: list[ParamName] = Field(min_length=1, max_length=MAX_NAMES)

    @field_validator("parameter_names")
    @classmethod
    def _names(cls, names: list[str]) -> list[str]:
        return [_check_name(n) for n in names]


class ParameterValueIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: ParamName
    value: str | bool | int
    type: str | None = Field(None, description="xsi:type; inferred from the JSON value when absent")

    @model_validator(mode="before")
    @classmethod
    def _from_triplet(cls, data: Any) -> Any:
        # GenieACS style: ["name", value, "xsd:type"].
        if isinstance(data, list | tuple):
            if len(data) not in (2, 3):
                raise ValueError("a parameter value is [name, value] or [name, value, type]")
            return dict(zip(("name", "value", "type"), data, strict=False))
        return data

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_name(value, partial=False)

    @field_validator("type")
    @classmethod
    def _type(cls, value: str | None) -> str | None:
        if value is not None and value not in XSD_TYPES:
            raise ValueError(f"type must be one of {', '.join(XSD_TYPES)}")
        return value

    def as_wire(self) -> dict[str, str]:
        if isinstance(self.value, bool):
            return {"name": self.name, "value": "true" if self.value else "false",
                    "type": self.type or "xsd:boolean"}
        if isinstance(self.value, int):
            return {"name": self.name, "value": str(self.value),
                    "type": self.type or ("xsd:unsignedInt" if self.value >= 0 else "xsd:int")}
        return {"name": self.name, "value": self.value, "type": self.type or "xsd:string"}


class SetParameterValues(_Spec):
    name: Literal["setParameterValues"]
    parameter_values: list[ParameterValueIn] = Field(min_length=1, max_length=MAX_NAMES)
    parameter_key: str = Field("", max_length=32)


class GetParameterNames(_Spec):
    """Refresh a subtree: walk it with GetParameterNames (NextLevel) and read its values."""

    name: Literal["getParameterNames"]
    parameter_path: str = Field("", max_length=256, description="partial path ending with '.', or '' for all")
    read_values: bool = True
    depth: int | None = Field(None, ge=1, le=64, description="levels below parameter_path to walk (discovery; "
                                                              "default ACS_WALK_MAX_DEPTH's 8)")

    @field_validator("parameter_path")
    @classmethod
    def _path(cls, value: str) -> str:
        return value if value == "" else _check_name(value)


class AddObject(_Spec):
    name: Literal["addObject"]
    object_name: ParamName
    parameter_values: list[ParameterValueIn] = Field(
        default_factory=list, description="set on the new instance; names relative to it, e.g. 'Enable'")
    parameter_key: str = Field("", max_length=32)

    @field_validator("object_name")
    @classmethod
    def _object(cls, value: str) -> str:
        return _check_name(value, object_path=True)


class DeleteObject(_Spec):
    name: Literal["deleteObject"]
    object_name: ParamName
    parameter_key: str = Field("", max_length=32)

    @field_validator("object_name")
    @classmethod
    def _object(cls, value: str) -> str:
        return _check_name(value, object_path=True)


class GetParameterAttributes(_Spec):
    name: Literal["getParameterAttributes"]
    parameter_names: list[ParamName] = Field(min_length=1, max_length=MAX_NAMES)

    @field_validator("parameter_names")
    @classmethod
    def _names(cls, names: list[str]) -> list[str]:
        return [_check_name(n) for n in names]


class AttributeIn(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)

    name: ParamName
    notification: int | None = Field(None, ge=0, le=6,
                                     description="0 off, 1 passive, 2 active (3-6: CWMP 1.4)")
    access_list: list[str] | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_name(value)


class SetParameterAttributes(_Spec):
    name: Literal["setParameterAttributes"]
    parameters: list[AttributeIn] = Field(min_length=1, max_length=MAX_NAMES)


class Reboot(_Spec):
    name: Literal["reboot"]


class FactoryReset(_Spec):
    name: Literal["factoryReset"]


class GetRPCMethods(_Spec):
    name: Literal["getRPCMethods"]


class ScheduleInform(_Spec):
    name: Literal["scheduleInform"]
    delay_seconds: int = Field(ge=1, le=2**32 - 1)


class Download(_Spec):
    """A file from the fileserver; size, type and URL are looked up when the task is created."""

    name: Literal["download"]
    file_name: str = Field(min_length=1, max_length=255)
    file_type: str | None = Field(None, max_length=64, description="overrides the type stored with the file")
    target_file_name: str = Field("", max_length=256)
    delay_seconds: int = Field(0, ge=0)


class Upload(_Spec):
    name: Literal["upload"]
    file_type: str = Field("1 Vendor Configuration File", max_length=64)
    delay_seconds: int = Field(0, ge=0)

    @field_validator("file_type")
    @classmethod
    def _upload_type(cls, value: str) -> str:
        if re.match(r"^([1-4] Vendor (Configuration|Log) File( \d+)?|X \S+ .+)$", value):
            return value
        raise ValueError("file_type is '1 Vendor Configuration File', '2 Vendor Log File', "
                         "'3 Vendor Configuration File <i>', '4 Vendor Log File <i>' or 'X <vendor> <name>'")


class TimeWindow(BaseModel):
    """One TimeWindowStruct of a ScheduleDownload (TR-069 A.4.1.8): seconds from the CPE's receipt."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)

    window_start: int = Field(ge=0, le=2**32 - 1)
    window_end: int = Field(ge=0, le=2**32 - 1)
    window_mode: Literal["1 At Any Time", "2 Immediately", "3 When Idle", "4 Confirmation Needed"] = \
        "1 At Any Time"
    user_message: str = Field("", max_length=256)
    max_retries: int = Field(0, ge=-1, description="-1: the CPE decides; 0: no retry")

    @model_validator(mode="after")
    def _ordered(self) -> TimeWindow:
        if self.window_end < self.window_start:
            raise ValueError("window_end must not be before window_start")
        return self


class ScheduleDownload(_Spec):
    """A file from the fileserver, downloaded by the CPE within one or two time windows (CWMP 1.2+)."""

    name: Literal["scheduleDownload"]
    file_name: str = Field(min_length=1, max_length=255)
    file_type: str | None = Field(None, max_length=64, description="overrides the type stored with the file")
    target_file_name: str = Field("", max_length=256)
    time_windows: list[TimeWindow] = Field(min_length=1, max_length=2)

    @field_validator("time_windows")
    @classmethod
    def _apart(cls, windows: list[TimeWindow]) -> list[TimeWindow]:
        # A.4.1.8: the windows do not overlap, the second one starts after the first one ends.
        if len(windows) == 2 and windows[1].window_start < windows[0].window_end:
            raise ValueError("the second time window must start at or after the end of the first")
        return windows


class CancelTransfer(_Spec):
    """Cancel a Download/Upload/ScheduleDownload the CPE has queued, by its CommandKey (CWMP 1.2+)."""

    name: Literal["cancelTransfer"]
    command_key: str = Field(min_length=1, max_length=32,
                             description="the transfer's CommandKey: a download task's command_key")


class GetQueuedTransfers(_Spec):
    name: Literal["getQueuedTransfers"]


class GetAllQueuedTransfers(_Spec):
    name: Literal["getAllQueuedTransfers"]


class DuOperation(BaseModel):
    """One ChangeDUState operation (TR-069 A.4.1.10): install, update or uninstall a deployment unit."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)

    type: Literal["install", "update", "uninstall"]
    file_name: str | None = Field(None, min_length=1, max_length=255,
                                  description="install/update: a file on the fileserver (URL and one-off "
                                              "credentials are made for it, as for a download)")
    url: str | None = Field(None, max_length=1024,
                            description="install/update: an external URL instead of file_name (no credentials)")
    uuid: str | None = Field(None, max_length=36)
    version: str | None = Field(None, max_length=32, description="update and uninstall only")
    execution_env_ref: str | None = Field(None, max_length=256, description="install and uninstall only")

    @model_validator(mode="after")
    def _shape(self) -> DuOperation:
        if self.file_name and self.url:
            raise ValueError("give file_name or url, not both")
        if self.type == "install":
            if not (self.url or self.file_name):
                raise ValueError("an install needs the file_name (or url) of the deployment unit")
            if self.version is not None:
                raise ValueError("an install takes no version")
        if self.type == "update" and self.execution_env_ref is not None:
            raise ValueError("an update takes no execution_env_ref")
        if self.type == "uninstall":
            if not self.uuid:
                raise ValueError("an uninstall needs the uuid of the deployment unit")
            if self.url or self.file_name:
                raise ValueError("an uninstall takes no file_name or url")
        if self.uuid is not None and not _UUID_RE.match(self.uuid):
            raise ValueError(f"{self.uuid!r} is not a UUID")
        if self.url is not None and not re.match(r"^https?://\S+$", self.url):
            raise ValueError("url must be an http(s) URL")
        return self


_UUID_RE = re.compile(r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$")


class ChangeDUState(_Spec):
    """Install, update or uninstall deployment units (TR-157 software modules; CWMP 1.2+)."""

    name: Literal["changeDUState"]
    operations: list[DuOperation] = Field(min_length=1, max_length=16)


TaskSpec = Annotated[
    GetParameterValues | SetParameterValues | GetParameterNames | AddObject | DeleteObject
    | GetParameterAttributes | SetParameterAttributes | Reboot | FactoryReset | GetRPCMethods
    | ScheduleInform | Download | Upload | ScheduleDownload | CancelTransfer | GetQueuedTransfers
    | GetAllQueuedTransfers | ChangeDUState,
    Field(discriminator="name"),
]
TASK_NAMES = ("getParameterValues", "setParameterValues", "getParameterNames", "addObject", "deleteObject",
              "getParameterAttributes", "setParameterAttributes", "reboot", "factoryReset",
              "getRPCMethods", "scheduleInform", "download", "upload", "scheduleDownload", "cancelTransfer",
              "getQueuedTransfers", "getAllQueuedTransfers", "changeDUState")



def task_args(spec: BaseModel) -> dict[str, Any]:
    """The stored ``args`` of a task: the spec without its name and expiry, values on the wire form."""
    args = spec.model_dump(mode="json", exclude={"name", "expires_in", "expires_at"})
    if isinstance(spec, SetParameterValues | AddObject):
        args["parameter_values"] = [v.as_wire() for v in spec.parameter_values]
    if isinstance(spec, ChangeDUState):
        # Absent fields stay absent on the wire (the XSD's optional elements).
        args["operations"] = [op.model_dump(exclude_none=True) for op in spec.operations]
    return args
