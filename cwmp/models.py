"""Dataclasses for every CWMP RPC in both directions, their responses and their structs.

Each message class has ``METHOD`` (the element name), ``KIND`` (request or response),
``SENDERS`` (who may send it), ``SINCE`` (the first cwmp namespace that defines it: "1-0",
"1-1" or "1-2") and, for requests, ``RESPONSE`` (the name of the matching response).

Fields are declared in XSD sequence order with helpers (:func:`text`, :func:`integer`, ...)
that record the XML element name and shape. The codec (XML) and :func:`rpc_to_dict` /
:func:`rpc_from_dict` (JSON for the event bus) are both driven by that one declaration, so
the three views cannot drift apart.

The classes are ``slots=True`` and not frozen (frozen dataclasses are markedly slower to
build, and the codec builds many of them per envelope); sequences are tuples, so a message
is not mutated by accident. Field names are the snake_case of the XML names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any, ClassVar, TypeVar

from .faults import CwmpFault, SetParameterValuesFault
from .values import UNKNOWN_TIME, ParameterValue

__all__ = [
    "ACS_SUPPORTED_METHODS",
    "CPE_REQUEST_METHODS",
    "METHODS",
    "OPERATION_TYPES",
    "AddObject",
    "AddObjectResponse",
    "AllQueuedTransferStruct",
    "ArgStruct",
    "AutonOpResultStruct",
    "AutonomousDUStateChangeComplete",
    "AutonomousDUStateChangeCompleteResponse",
    "AutonomousTransferComplete",
    "AutonomousTransferCompleteResponse",
    "CancelTransfer",
    "CancelTransferResponse",
    "ChangeDUState",
    "ChangeDUStateResponse",
    "CwmpMessage",
    "CwmpStruct",
    "DUStateChangeComplete",
    "DUStateChangeCompleteResponse",
    "DeleteObject",
    "DeleteObjectResponse",
    "DeploymentUnitFaultStruct",
    "DeviceId",
    "Download",
    "DownloadResponse",
    "EventStruct",
    "FactoryReset",
    "FactoryResetResponse",
    "FaultStruct",
    "FieldKind",
    "GetAllQueuedTransfers",
    "GetAllQueuedTransfersResponse",
    "GetOptions",
    "GetOptionsResponse",
    "GetParameterAttributes",
    "GetParameterAttributesResponse",
    "GetParameterNames",
    "GetParameterNamesResponse",
    "GetParameterValues",
    "GetParameterValuesResponse",
    "GetQueuedTransfers",
    "GetQueuedTransfersResponse",
    "GetRPCMethods",
    "GetRPCMethodsResponse",
    "Inform",
    "InformResponse",
    "InstallOpStruct",
    "Kicked",
    "KickedResponse",
    "MessageKind",
    "OpResultStruct",
    "OperationStruct",
    "OptionStruct",
    "ParameterAttributeStruct",
    "ParameterInfoStruct",
    "ParameterValueStruct",
    "QueuedTransferStruct",
    "Reboot",
    "RebootResponse",
    "RequestDownload",
    "RequestDownloadResponse",
    "ScheduleDownload",
    "ScheduleDownloadResponse",
    "ScheduleInform",
    "ScheduleInformResponse",
    "SetParameterAttributes",
    "SetParameterAttributesResponse",
    "SetParameterAttributesStruct",
    "SetParameterValues",
    "SetParameterValuesResponse",
    "SetVouchers",
    "SetVouchersResponse",
    "TimeWindowStruct",
    "TransferComplete",
    "TransferCompleteResponse",
    "UninstallOpStruct",
    "UpdateOpStruct",
    "Upload",
    "UploadResponse",
    "rpc_from_dict",
    "rpc_to_dict",
    "struct_fields",
]


# ---------------------------------------------------------------------------------------
# Field declarations
# ---------------------------------------------------------------------------------------


# Every integer element of CWMP is an xs:int or an xs:unsignedInt (FaultCode, FileSize,
# RetryCount, DelaySeconds, ...): one bound, the union of the two ranges, refuses what fits
# neither (a FaultCode of 2**64 overflows MongoDB's 64-bit integers further on) and still
# tolerates a CPE that writes -1 into an unsigned field. Parsing (XML and dict) enforces it.
INT_MIN = -(2**31)
INT_MAX = 2**32 - 1


class FieldKind(Enum):
    STR = "str"  # xs:string and string-like simple types
    INT = "int"  # xs:int / xs:unsignedInt
    BOOL = "bool"  # xs:boolean
    DATETIME = "datetime"  # xs:dateTime, kept as the text the sender wrote
    VALUE = "value"  # ParameterValueStruct/Value: text + xsi:type
    STRUCT = "struct"  # one nested struct
    ARRAY = "array"  # SOAP-ENC array: wrapper element with soap-enc:arrayType, one child per item
    REPEATED = "repeated"  # the element itself repeats (ChangeDUState/Operations, Results)


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """How one dataclass field maps to XML. ``attr`` is filled in by the class decorator."""

    xml: str
    kind: FieldKind
    attr: str = ""
    # STRUCT/REPEATED: the struct class, or a tuple of classes for xsi:type-selected
    # subtypes (ChangeDUState operations). ARRAY: a struct class, or FieldKind.STR.
    item: Any = None
    item_xml: str = ""  # ARRAY: element name of each item ("string", "ParameterValueStruct")
    array_type: str = ""  # ARRAY: soap-enc:arrayType without the size ("cwmp:EventStruct")
    required: bool = False  # absent element -> MissingField (XML) / ValueError (dict)
    optional: bool = False  # minOccurs="0": None means "element absent"


def _field(spec: FieldSpec, default: Any = dataclasses.MISSING, factory: Any = dataclasses.MISSING) -> Any:
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata={"cwmp": spec})
    return field(default=default, metadata={"cwmp": spec})


def text(xml: str, *, required: bool = False, default: str = "") -> Any:
    return _field(FieldSpec(xml, FieldKind.STR, required=required), default)


def optional_text(xml: str) -> Any:
    return _field(FieldSpec(xml, FieldKind.STR, optional=True), None)


def integer(xml: str, *, required: bool = False, default: int = 0) -> Any:
    return _field(FieldSpec(xml, FieldKind.INT, required=required), default)


def boolean(xml: str, *, default: bool = False) -> Any:
    return _field(FieldSpec(xml, FieldKind.BOOL), default)


def date_time(xml: str, *, default: str = UNKNOWN_TIME) -> Any:
    return _field(FieldSpec(xml, FieldKind.DATETIME), default)


def optional_date_time(xml: str) -> Any:
    return _field(FieldSpec(xml, FieldKind.DATETIME, optional=True), None)


def typed_value(xml: str = "Value") -> Any:
    return _field(FieldSpec(xml, FieldKind.VALUE), factory=ParameterValue)


def struct(xml: str, cls: type, *, required: bool = False) -> Any:
    return _field(FieldSpec(xml, FieldKind.STRUCT, item=cls, required=required), factory=cls)


def array(xml: str, item: type | FieldKind, *, item_xml: str | None = None, array_type: str | None = None) -> Any:
    if item is FieldKind.STR:
        item_xml = item_xml or "string"
        array_type = array_type or "xsd:string"
    else:
        assert isinstance(item, type)
        item_xml = item_xml or item.__name__
        array_type = array_type or f"cwmp:{item_xml}"
    return _field(FieldSpec(xml, FieldKind.ARRAY, item=item, item_xml=item_xml, array_type=array_type), ())


def repeated(xml: str, item: type | tuple[type, ...]) -> Any:
    return _field(FieldSpec(xml, FieldKind.REPEATED, item=item), ())


_SPECS: dict[type, tuple[FieldSpec, ...]] = {}
_T = TypeVar("_T", bound=type)


def _register_specs(cls: _T) -> _T:
    specs = []
    for f in dataclasses.fields(cls):
        spec = f.metadata.get("cwmp")
        if spec is None:
            raise TypeError(f"{cls.__name__}.{f.name} is not declared with a cwmp field helper")
        specs.append(dataclasses.replace(spec, attr=f.name))
    _SPECS[cls] = tuple(specs)
    sequences = tuple(s.attr for s in specs if s.kind in (FieldKind.ARRAY, FieldKind.REPEATED))
    if sequences and not issubclass(cls, _Sequences):
        raise TypeError(f"{cls.__name__} has sequence fields: add the _Sequences mixin")
    cls._TUPLE_FIELDS = sequences  # type: ignore[attr-defined]
    return cls


class _Sequences:
    """Mixin for classes with sequence fields: list arguments become tuples, so that a message
    built from lists compares equal to the same message parsed from XML, and cannot be mutated.
    (Only those classes get a __post_init__: it would slow down building every other one.)"""

    __slots__ = ()
    _TUPLE_FIELDS: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        for name in self._TUPLE_FIELDS:
            value = getattr(self, name)
            if type(value) is not tuple:
                setattr(self, name, tuple(value))


def struct_fields(cls: type) -> tuple[FieldSpec, ...]:
    """The XML/JSON field declarations of a message or struct class, in XSD order."""
    return _SPECS[cls]


# ---------------------------------------------------------------------------------------
# Structs
# ---------------------------------------------------------------------------------------


class CwmpStruct:
    """Base of the struct classes."""

    __slots__ = ()
    XSI_TYPE: ClassVar[str] = ""  # set on ChangeDUState operation subtypes


@_register_specs
@dataclass(slots=True)
class DeviceId(CwmpStruct):
    """DeviceIdStruct. Unknown extra children (Feixun's <WanIPAddress>) are ignored."""

    manufacturer: str = text("Manufacturer")
    oui: str = text("OUI", required=True)
    product_class: str = text("ProductClass")
    serial_number: str = text("SerialNumber", required=True)


@_register_specs
@dataclass(slots=True)
class EventStruct(CwmpStruct):
    event_code: str = text("EventCode")  # tolerated when missing (checklist Q4)
    command_key: str = text("CommandKey")


@_register_specs
@dataclass(slots=True)
class ParameterValueStruct(CwmpStruct):
    name: str = text("Name", required=True)
    # A GPV response without <Value> gives "" (genieacs#317). RUF009: the helper returns a field().
    value: ParameterValue = typed_value()  # noqa: RUF009


@_register_specs
@dataclass(slots=True)
class ParameterInfoStruct(CwmpStruct):
    name: str = text("Name", required=True)
    writable: bool = boolean("Writable")


@_register_specs
@dataclass(slots=True)
class SetParameterAttributesStruct(CwmpStruct, _Sequences):
    name: str = text("Name", required=True)
    notification_change: bool = boolean("NotificationChange")
    notification: int = integer("Notification")
    access_list_change: bool = boolean("AccessListChange")
    access_list: tuple[str, ...] = array("AccessList", FieldKind.STR)


@_register_specs
@dataclass(slots=True)
class ParameterAttributeStruct(CwmpStruct, _Sequences):
    name: str = text("Name", required=True)
    notification: int = integer("Notification")
    access_list: tuple[str, ...] = array("AccessList", FieldKind.STR)


@_register_specs
@dataclass(slots=True)
class TimeWindowStruct(CwmpStruct):
    window_start: int = integer("WindowStart")
    window_end: int = integer("WindowEnd")
    window_mode: str = text("WindowMode", default="1 At Any Time")
    user_message: str = text("UserMessage")
    max_retries: int = integer("MaxRetries")


@_register_specs
@dataclass(slots=True)
class QueuedTransferStruct(CwmpStruct):
    command_key: str = text("CommandKey")
    state: int = integer("State", default=1)


@_register_specs
@dataclass(slots=True)
class AllQueuedTransferStruct(CwmpStruct):
    command_key: str = text("CommandKey")
    state: int = integer("State", default=1)
    is_download: bool = boolean("IsDownload")
    file_type: str = text("FileType")
    file_size: int = integer("FileSize")
    target_file_name: str = text("TargetFileName")


@_register_specs
@dataclass(slots=True)
class ArgStruct(CwmpStruct):
    name: str = text("Name")
    value: str = text("Value")


@_register_specs
@dataclass(slots=True)
class FaultStruct(CwmpStruct):
    """TransferCompleteFaultStruct: FaultCode 0 means success."""

    fault_code: int = integer("FaultCode")
    fault_string: str = text("FaultString")


@_register_specs
@dataclass(slots=True)
class DeploymentUnitFaultStruct(CwmpStruct):
    fault_code: int = integer("FaultCode")
    fault_string: str | None = optional_text("FaultString")


@_register_specs
@dataclass(slots=True)
class InstallOpStruct(CwmpStruct):
    XSI_TYPE: ClassVar[str] = "InstallOpStruct"

    url: str = text("URL", required=True)
    uuid: str | None = optional_text("UUID")
    username: str | None = optional_text("Username")
    password: str | None = optional_text("Password")
    execution_env_ref: str | None = optional_text("ExecutionEnvRef")


@_register_specs
@dataclass(slots=True)
class UpdateOpStruct(CwmpStruct):
    XSI_TYPE: ClassVar[str] = "UpdateOpStruct"

    uuid: str | None = optional_text("UUID")
    version: str | None = optional_text("Version")
    url: str | None = optional_text("URL")
    username: str | None = optional_text("Username")
    password: str | None = optional_text("Password")


@_register_specs
@dataclass(slots=True)
class UninstallOpStruct(CwmpStruct):
    XSI_TYPE: ClassVar[str] = "UninstallOpStruct"

    uuid: str = text("UUID", required=True)
    version: str | None = optional_text("Version")
    execution_env_ref: str | None = optional_text("ExecutionEnvRef")


OperationStruct = InstallOpStruct | UpdateOpStruct | UninstallOpStruct
OPERATION_TYPES: tuple[type, ...] = (InstallOpStruct, UpdateOpStruct, UninstallOpStruct)


@_register_specs
@dataclass(slots=True)
class OpResultStruct(CwmpStruct):
    uuid: str = text("UUID")
    deployment_unit_ref: str = text("DeploymentUnitRef")
    version: str = text("Version")
    current_state: str = text("CurrentState", default="Installed")
    resolved: bool = boolean("Resolved")
    execution_unit_ref_list: str = text("ExecutionUnitRefList")
    start_time: str = date_time("StartTime")
    complete_time: str = date_time("CompleteTime")
    fault: DeploymentUnitFaultStruct = struct("Fault", DeploymentUnitFaultStruct)  # noqa: RUF009


@_register_specs
@dataclass(slots=True)
class AutonOpResultStruct(OpResultStruct):
    operation_performed: str = text("OperationPerformed", default="Install")


@_register_specs
@dataclass(slots=True)
class OptionStruct(CwmpStruct):
    option_name: str = text("OptionName")
    voucher_sn: int = integer("VoucherSN")
    state: int = integer("State")
    mode: int = integer("Mode")
    start_date: str = date_time("StartDate")
    expiration_date: str | None = optional_date_time("ExpirationDate")
    is_transferable: int = integer("IsTransferable")


# ---------------------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------------------


class MessageKind(StrEnum):
    REQUEST = "request"
    RESPONSE = "response"


CPE = "cpe"
ACS = "acs"

METHODS: dict[str, type[CwmpMessage]] = {}
"""Every known method element name -> its class (requests and responses)."""


class CwmpMessage:
    """Base of every RPC request and response class."""

    __slots__ = ()
    METHOD: ClassVar[str]
    KIND: ClassVar[MessageKind]
    SENDERS: ClassVar[frozenset[str]]
    SINCE: ClassVar[str]
    RESPONSE: ClassVar[str | None] = None


def _rpc(kind: MessageKind, senders: str, since: str = "1-0") -> Callable[[_T], _T]:
    def register(cls: _T) -> _T:
        _register_specs(cls)
        name = cls.METHOD  # type: ignore[attr-defined]
        if name in METHODS:
            raise TypeError(f"duplicate method {name}")
        cls.KIND = kind  # type: ignore[attr-defined]
        cls.SENDERS = frozenset(senders.split("|"))  # type: ignore[attr-defined]
        cls.SINCE = since  # type: ignore[attr-defined]
        if kind is MessageKind.REQUEST:
            cls.RESPONSE = name + "Response"  # type: ignore[attr-defined]
        METHODS[name] = cls
        return cls

    return register


_REQ, _RSP = MessageKind.REQUEST, MessageKind.RESPONSE

# --- CPE -> ACS requests and the ACS's responses (A.3.3, A.4.2) ---------------------------


@_rpc(_REQ, CPE)
@dataclass(slots=True)
class Inform(CwmpMessage, _Sequences):
    METHOD: ClassVar[str] = "Inform"

    device_id: DeviceId = struct("DeviceId", DeviceId, required=True)  # noqa: RUF009
    event: tuple[EventStruct, ...] = array("Event", EventStruct)
    max_envelopes: int = integer("MaxEnvelopes", default=1)
    current_time: str = date_time("CurrentTime")
    retry_count: int = integer("RetryCount")
    parameter_list: tuple[ParameterValueStruct, ...] = array("ParameterList", ParameterValueStruct)


@_rpc(_RSP, ACS)
@dataclass(slots=True)
class InformResponse(CwmpMessage):
    METHOD: ClassVar[str] = "InformResponse"

    max_envelopes: int = integer("MaxEnvelopes", default=1)  # MUST be 1 (A.3.3.1)


@_rpc(_REQ, "cpe|acs")
@dataclass(slots=True)
class GetRPCMethods(CwmpMessage):
    """Sent by either side; the same element in both directions."""

    METHOD: ClassVar[str] = "GetRPCMethods"


@_rpc(_RSP, "cpe|acs")
@dataclass(slots=True)
class GetRPCMethodsResponse(CwmpMessage, _Sequences):
    METHOD: ClassVar[str] = "GetRPCMethodsResponse"

    method_list: tuple[str, ...] = array("MethodList", FieldKind.STR)


@_rpc(_REQ, CPE)
@dataclass(slots=True)
class TransferComplete(CwmpMessage):
    METHOD: ClassVar[str] = "TransferComplete"

    command_key: str = text("CommandKey")
    fault_struct: FaultStruct = struct("FaultStruct", FaultStruct)  # noqa: RUF009
    start_time: str = date_time("StartTime")
    complete_time: str = date_time("CompleteTime")


@_rpc(_RSP, ACS)
@dataclass(slots=True)
class TransferCompleteResponse(CwmpMessage):
    METHOD: ClassVar[str] = "TransferCompleteResponse"


@_rpc(_REQ, CPE, "1-1")
@dataclass(slots=True)
class AutonomousTransferComplete(CwmpMessage):
    METHOD: ClassVar[str] = "AutonomousTransferComplete"

    announce_url: str = text("AnnounceURL")
    transfer_url: str = text("TransferURL")
    is_download: bool = boolean("IsDownload")
    file_type: str = text("FileType")
    file_size: int = integer("FileSize")
    target_file_name: str = text("TargetFileName")
    fault_struct: FaultStruct = struct("FaultStruct", FaultStruct)  # noqa: RUF009
    start_time: str = date_time("StartTime")
    complete_time: str = date_time("CompleteTime")


@_rpc(_RSP, ACS, "1-1")
@dataclass(slots=True)
class AutonomousTransferCompleteResponse(CwmpMessage):
    METHOD: ClassVar[str] = "AutonomousTransferCompleteResponse"


@_rpc(_REQ, CPE)
@dataclass(slots=True)
class Kicked(CwmpMessage):
    """Deprecated (A.4.2.1)."""

    METHOD: ClassVar[str] = "Kicked"

    command: str = text("Command")
    referer: str = text("Referer")
    arg: str = text("Arg")
    next: str = text("Next")


@_rpc(_RSP, ACS)
@dataclass(slots=True)
class KickedResponse(CwmpMessage):
    METHOD: ClassVar[str] = "KickedResponse"

    next_url: str = text("NextURL")


@_rpc(_REQ, CPE)
@dataclass(slots=True)
class RequestDownload(CwmpMessage, _Sequences):
    METHOD: ClassVar[str] = "RequestDownload"

    file_type: str = text("FileType")
    file_type_arg: tuple[ArgStruct, ...] = array("FileTypeArg", ArgStruct)


@_rpc(_RSP, ACS)
@dataclass(slots=True)
class RequestDownloadResponse(CwmpMessage):
    METHOD: ClassVar[str] = "RequestDownloadResponse"


@_rpc(_REQ, CPE, "1-2")
@dataclass(slots=True)
class DUStateChangeComplete(CwmpMessage, _Sequences):
    METHOD: ClassVar[str] = "DUStateChangeComplete"

    results: tuple[OpResultStruct, ...] = repeated("Results", OpResultStruct)
    command_key: str | None = optional_text("CommandKey")


@_rpc(_RSP, ACS, "1-2")
@dataclass(slots=True)
class DUStateChangeCompleteResponse(CwmpMessage):
    METHOD: ClassVar[str] = "DUStateChangeCompleteResponse"


@_rpc(_REQ, CPE, "1-2")
@dataclass(slots=True)
class AutonomousDUStateChangeComplete(CwmpMessage, _Sequences):
    METHOD: ClassVar[str] = "AutonomousDUStateChangeComplete"

    results: tuple[AutonOpResultStruct, ...] = repeated("Results", AutonOpResultStruct)


@_rpc(_RSP, ACS, "1-2")
@dataclass(slots=True)
class AutonomousDUStateChangeCompleteResponse(CwmpMessage):
    METHOD: ClassVar[str] = "AutonomousDUStateChangeCompleteResponse"


# --- ACS -> CPE requests and the CPE's responses (A.3.2, A.4.1) ---------------------------


@_rpc(_REQ, ACS)
@dataclass(slots=True)
class SetParameterValues(CwmpMessage, _Sequences):
    METHOD: ClassVar[str] = "SetParameterValues"

    parameter_list: tuple[ParameterValueStruct, ...] = array("ParameterList", ParameterValueStruct)
    parameter_key: str = text("ParameterKey")


@_rpc(_RSP, CPE)
@dataclass(slots=True)
class SetParameterValuesResponse(CwmpMessage):
    METHOD: ClassVar[str] = "SetParameterValuesResponse"

    status: int = integer("Status")  # 0 applied, 1 committed but applied later


@_rpc(_REQ, ACS)
@dataclass(slots=True)
class GetParameterValues(CwmpMessage, _Sequences):
    METHOD: ClassVar[str] = "GetParameterValues"

    parameter_names: tuple[str, ...] = array("ParameterNames", FieldKind.STR)


@_rpc(_RSP, CPE)
@dataclass(slots=True)
class GetParameterValuesResponse(CwmpMessage, _Sequences):
    METHOD: ClassVar[str] = "GetParameterValuesResponse"

    parameter_list: tuple[ParameterValueStruct, ...] = array("ParameterList", ParameterValueStruct)


@_rpc(_REQ, ACS)
@dataclass(slots=True)
class GetParameterNames(CwmpMessage):
    METHOD: ClassVar[str] = "GetParameterNames"

    parameter_path: str = text("ParameterPath", required=True)
    next_level: bool = boolean("NextLevel")


@_rpc(_RSP, CPE)
@dataclass(slots=True)
class GetParameterNamesResponse(CwmpMessage, _Sequences):
    METHOD: ClassVar[str] = "GetParameterNamesResponse"

    parameter_list: tuple[ParameterInfoStruct, ...] = array("ParameterList", ParameterInfoStruct)


@_rpc(_REQ, ACS)
@dataclass(slots=True)
class SetParameterAttributes(CwmpMessage, _Sequences):
    METHOD: ClassVar[str] = "SetParameterAttributes"

    parameter_list: tuple[SetParameterAttributesStruct, ...] = array("ParameterList", SetParameterAttributesStruct)


@_rpc(_RSP, CPE)
@dataclass(slots=True)
class SetParameterAttributesResponse(CwmpMessage):
    METHOD: ClassVar[str] = "SetParameterAttributesResponse"


@_rpc(_REQ, ACS)
@dataclass(slots=True)
class GetParameterAttributes(CwmpMessage, _Sequences):
    METHOD: ClassVar[str] = "GetParameterAttributes"

    parameter_names: tuple[str, ...] = array("ParameterNames", FieldKind.STR)


@_rpc(_RSP, CPE)
@dataclass(slots=True)
class GetParameterAttributesResponse(CwmpMessage, _Sequences):
    METHOD: ClassVar[str] = "GetParameterAttributesResponse"

    parameter_list: tuple[ParameterAttributeStruct, ...] = array("ParameterList", ParameterAttributeStruct)


@_rpc(_REQ, ACS)
@dataclass(slots=True)
class AddObject(CwmpMessage):
    METHOD: ClassVar[str] = "AddObject"

    object_name: str = text("ObjectName", required=True)
    parameter_key: str = text("ParameterKey")


@_rpc(_RSP, CPE)
@dataclass(slots=True)
class AddObjectResponse(CwmpMessage):
    METHOD: ClassVar[str] = "AddObjectResponse"

    instance_number: int = integer("InstanceNumber", required=True, default=1)
    status: int = integer("Status")


@_rpc(_REQ, ACS)
@dataclass(slots=True)
class DeleteObject(CwmpMessage):
    METHOD: ClassVar[str] = "DeleteObject"

    object_name: str = text("ObjectName", required=True)
    parameter_key: str = text("ParameterKey")


@_rpc(_RSP, CPE)
@dataclass(slots=True)
class DeleteObjectResponse(CwmpMessage):
    METHOD: ClassVar[str] = "DeleteObjectResponse"

    status: int = integer("Status")


@_rpc(_REQ, ACS)
@dataclass(slots=True)
class Download(CwmpMessage):
    METHOD: ClassVar[str] = "Download"

    command_key: str = text("CommandKey")
    file_type: str = text("FileType", default="1 Firmware Upgrade Image")
    url: str = text("URL", required=True)
    username: str = text("Username")
    password: str = text("Password")
    file_size: int = integer("FileSize")
    target_file_name: str = text("TargetFileName")
    delay_seconds: int = integer("DelaySeconds")
    success_url: str = text("SuccessURL")
    failure_url: str = text("FailureURL")


@_rpc(_RSP, CPE)
@dataclass(slots=True)
class DownloadResponse(CwmpMessage):
    METHOD: ClassVar[str] = "DownloadResponse"

    status: int = integer("Status")
    start_time: str = date_time("StartTime")
    complete_time: str = date_time("CompleteTime")


@_rpc(_REQ, ACS)
@dataclass(slots=True)
class Reboot(CwmpMessage):
    METHOD: ClassVar[str] = "Reboot"

    command_key: str = text("CommandKey")


@_rpc(_RSP, CPE)
@dataclass(slots=True)
class RebootResponse(CwmpMessage):
    METHOD: ClassVar[str] = "RebootResponse"


@_rpc(_REQ, ACS)
@dataclass(slots=True)
class GetQueuedTransfers(CwmpMessage):
    """Deprecated in favour of GetAllQueuedTransfers."""

    METHOD: ClassVar[str] = "GetQueuedTransfers"


@_rpc(_RSP, CPE)
@dataclass(slots=True)
class GetQueuedTransfersResponse(CwmpMessage, _Sequences):
    METHOD: ClassVar[str] = "GetQueuedTransfersResponse"

    transfer_list: tuple[QueuedTransferStruct, ...] = array("TransferList", QueuedTransferStruct)


@_rpc(_REQ, ACS)
@dataclass(slots=True)
class ScheduleInform(CwmpMessage):
    METHOD: ClassVar[str] = "ScheduleInform"

    delay_seconds: int = integer("DelaySeconds", default=1)
    command_key: str = text("CommandKey")


@_rpc(_RSP, CPE)
@dataclass(slots=True)
class ScheduleInformResponse(CwmpMessage):
    METHOD: ClassVar[str] = "ScheduleInformResponse"


@_rpc(_REQ, ACS)
@dataclass(slots=True)
class SetVouchers(CwmpMessage, _Sequences):
    """Deprecated (Annex C vouchers)."""

    METHOD: ClassVar[str] = "SetVouchers"

    voucher_list: tuple[str, ...] = array("VoucherList", FieldKind.STR, item_xml="base64", array_type="soap-enc:base64")


@_rpc(_RSP, CPE)
@dataclass(slots=True)
class SetVouchersResponse(CwmpMessage):
    METHOD: ClassVar[str] = "SetVouchersResponse"


@_rpc(_REQ, ACS)
@dataclass(slots=True)
class GetOptions(CwmpMessage):
    """Deprecated (Annex C options)."""

    METHOD: ClassVar[str] = "GetOptions"

    option_name: str = text("OptionName")


@_rpc(_RSP, CPE)
@dataclass(slots=True)
class GetOptionsResponse(CwmpMessage, _Sequences):
    METHOD: ClassVar[str] = "GetOptionsResponse"

    option_list: tuple[OptionStruct, ...] = array("OptionList", OptionStruct)


@_rpc(_REQ, ACS)
@dataclass(slots=True)
class Upload(CwmpMessage):
    METHOD: ClassVar[str] = "Upload"

    command_key: str = text("CommandKey")
    file_type: str = text("FileType", default="1 Vendor Configuration File")
    url: str = text("URL", required=True)
    username: str = text("Username")
    password: str = text("Password")
    delay_seconds: int = integer("DelaySeconds")


@_rpc(_RSP, CPE)
@dataclass(slots=True)
class UploadResponse(CwmpMessage):
    METHOD: ClassVar[str] = "UploadResponse"

    status: int = integer("Status")
    start_time: str = date_time("StartTime")
    complete_time: str = date_time("CompleteTime")


@_rpc(_REQ, ACS)
@dataclass(slots=True)
class FactoryReset(CwmpMessage):
    METHOD: ClassVar[str] = "FactoryReset"


@_rpc(_RSP, CPE)
@dataclass(slots=True)
class FactoryResetResponse(CwmpMessage):
    METHOD: ClassVar[str] = "FactoryResetResponse"


@_rpc(_REQ, ACS, "1-1")
@dataclass(slots=True)
class GetAllQueuedTransfers(CwmpMessage):
    METHOD: ClassVar[str] = "GetAllQueuedTransfers"


@_rpc(_RSP, CPE, "1-1")
@dataclass(slots=True)
class GetAllQueuedTransfersResponse(CwmpMessage, _Sequences):
    METHOD: ClassVar[str] = "GetAllQueuedTransfersResponse"

    transfer_list: tuple[AllQueuedTransferStruct, ...] = array("TransferList", AllQueuedTransferStruct)


@_rpc(_REQ, ACS, "1-2")
@dataclass(slots=True)
class ScheduleDownload(CwmpMessage, _Sequences):
    METHOD: ClassVar[str] = "ScheduleDownload"

    command_key: str = text("CommandKey")
    file_type: str = text("FileType", default="1 Firmware Upgrade Image")
    url: str = text("URL", required=True)
    username: str = text("Username")
    password: str = text("Password")
    file_size: int = integer("FileSize")
    target_file_name: str = text("TargetFileName")
    time_window_list: tuple[TimeWindowStruct, ...] = array("TimeWindowList", TimeWindowStruct)


@_rpc(_RSP, CPE, "1-2")
@dataclass(slots=True)
class ScheduleDownloadResponse(CwmpMessage):
    METHOD: ClassVar[str] = "ScheduleDownloadResponse"


@_rpc(_REQ, ACS, "1-2")
@dataclass(slots=True)
class CancelTransfer(CwmpMessage):
    METHOD: ClassVar[str] = "CancelTransfer"

    command_key: str = text("CommandKey")


@_rpc(_RSP, CPE, "1-2")
@dataclass(slots=True)
class CancelTransferResponse(CwmpMessage):
    METHOD: ClassVar[str] = "CancelTransferResponse"


@_rpc(_REQ, ACS, "1-2")
@dataclass(slots=True)
class ChangeDUState(CwmpMessage, _Sequences):
    """Operations are InstallOpStruct / UpdateOpStruct / UninstallOpStruct, told apart by xsi:type."""

    METHOD: ClassVar[str] = "ChangeDUState"

    operations: tuple[OperationStruct, ...] = repeated("Operations", OPERATION_TYPES)
    command_key: str | None = optional_text("CommandKey")


@_rpc(_RSP, CPE, "1-2")
@dataclass(slots=True)
class ChangeDUStateResponse(CwmpMessage):
    METHOD: ClassVar[str] = "ChangeDUStateResponse"


CPE_REQUEST_METHODS: frozenset[str] = frozenset(
    name for name, cls in METHODS.items() if cls.KIND is MessageKind.REQUEST and CPE in cls.SENDERS
)
"""Requests an ACS can receive from a CPE."""

ACS_SUPPORTED_METHODS: tuple[str, ...] = (
    "Inform",
    "GetRPCMethods",
    "TransferComplete",
    "AutonomousTransferComplete",
    "RequestDownload",
    "DUStateChangeComplete",
    "AutonomousDUStateChangeComplete",
)
"""What an ACS answers to GetRPCMethods: the required four (R1) plus the optional ones it implements."""


# ---------------------------------------------------------------------------------------
# JSON-able dicts for the event bus
# ---------------------------------------------------------------------------------------

_OPERATION_BY_NAME = {cls.XSI_TYPE: cls for cls in OPERATION_TYPES}  # type: ignore[attr-defined]
_FAULT_METHOD = CwmpFault.METHOD


def rpc_to_dict(message: CwmpMessage | CwmpFault) -> dict[str, Any]:
    """``{"method": "GetParameterValues", "parameter_names": [...]}``: JSON-able, snake_case.

    Parameter values become ``{"value": str, "type": "xsd:..."}``; nested structs become dicts;
    ChangeDUState operations carry ``"type": "InstallOpStruct"`` (or Update/Uninstall);
    optional absent elements are ``None``. A :class:`CwmpFault` becomes ``{"method": "Fault",
    "code", "string", "set_parameter_values_faults", "faultcode", "faultstring"}``.
    """
    if isinstance(message, CwmpFault):
        return {
            "method": _FAULT_METHOD,
            "code": message.code,
            "string": message.string,
            "set_parameter_values_faults": [
                {
                    "parameter_name": f.parameter_name,
                    "fault_code": f.fault_code,
                    "fault_string": f.fault_string,
                }
                for f in message.set_parameter_values_faults
            ],
            "faultcode": message.faultcode,
            "faultstring": message.faultstring,
        }
    result: dict[str, Any] = {"method": message.METHOD}
    result.update(_struct_to_dict(message))
    return result


def _struct_to_dict(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for spec in _SPECS[type(obj)]:
        value = getattr(obj, spec.attr)
        kind = spec.kind
        if value is None or kind in (FieldKind.STR, FieldKind.INT, FieldKind.BOOL, FieldKind.DATETIME):
            out[spec.attr] = value
        elif kind is FieldKind.VALUE:
            out[spec.attr] = {"value": value.value, "type": value.type}
        elif kind is FieldKind.STRUCT:
            out[spec.attr] = _struct_to_dict(value)
        elif spec.item is FieldKind.STR:
            out[spec.attr] = list(value)
        else:
            out[spec.attr] = [_item_to_dict(item, spec) for item in value]
    return out


def _item_to_dict(item: Any, spec: FieldSpec) -> dict[str, Any]:
    data = _struct_to_dict(item)
    if isinstance(spec.item, tuple):
        return {"type": type(item).XSI_TYPE, **data}
    return data


def rpc_from_dict(data: Mapping[str, Any]) -> CwmpMessage | CwmpFault:
    """Inverse of :func:`rpc_to_dict`. Raises ValueError naming the method and field at fault."""
    if not isinstance(data, Mapping):
        raise ValueError(f"expected a mapping, got {type(data).__name__}")
    method = data.get("method")
    if method == _FAULT_METHOD:
        return _fault_from_dict(data)
    cls = METHODS.get(method) if isinstance(method, str) else None
    if cls is None:
        raise ValueError(f"unknown CWMP method {method!r}")
    body = {k: v for k, v in data.items() if k != "method"}
    return _struct_from_dict(cls, body, method)


def _fault_from_dict(data: Mapping[str, Any]) -> CwmpFault:
    allowed = {"method", "code", "string", "set_parameter_values_faults", "faultcode", "faultstring"}
    unknown = set(data) - allowed
    if unknown:
        raise ValueError(f"Fault: unknown field(s) {sorted(unknown)}")
    code = _expect_int(data.get("code"), "Fault.code")
    details = []
    for i, raw in enumerate(
        _expect(data.get("set_parameter_values_faults", []), list, "Fault.set_parameter_values_faults")
    ):
        where = f"Fault.set_parameter_values_faults[{i}]"
        entry = _expect(raw, Mapping, where)
        extra = set(entry) - {"parameter_name", "fault_code", "fault_string"}
        if extra:
            raise ValueError(f"{where}: unknown field(s) {sorted(extra)}")
        details.append(
            SetParameterValuesFault(
                _expect(entry.get("parameter_name", ""), str, where + ".parameter_name"),
                _expect_int(entry.get("fault_code", 0), where + ".fault_code"),
                _expect(entry.get("fault_string", ""), str, where + ".fault_string"),
            )
        )
    return CwmpFault(
        code,
        _expect(data.get("string", ""), str, "Fault.string"),
        tuple(details),
        _expect(data.get("faultcode", ""), str, "Fault.faultcode"),
        _expect(data.get("faultstring", "CWMP fault"), str, "Fault.faultstring"),
    )


def _expect(value: Any, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(value, kind):
        name = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise ValueError(f"{where}: expected {name}, got {type(value).__name__}")
    return value


def _expect_int(value: Any, where: str) -> int:
    if type(value) is not int:  # bool is an int subclass; refuse it
        raise ValueError(f"{where}: expected int, got {type(value).__name__}")
    if not INT_MIN <= value <= INT_MAX:
        raise ValueError(f"{where}: {value} is outside the range of xs:int and xs:unsignedInt")
    return value


def _struct_from_dict(cls: type, data: Mapping[str, Any], where: str) -> Any:
    specs = _SPECS[cls]
    known = {s.attr for s in specs}
    unknown = [k for k in data if k not in known]
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {sorted(unknown)}")
    kwargs: dict[str, Any] = {}
    for spec in specs:
        path = f"{where}.{spec.attr}"
        if spec.attr not in data:
            if spec.required:
                raise ValueError(f"{path}: required field missing")
            continue
        kwargs[spec.attr] = _field_from_dict(spec, data[spec.attr], path)
    return cls(**kwargs)


def _field_from_dict(spec: FieldSpec, value: Any, path: str) -> Any:
    kind = spec.kind
    if value is None:
        if spec.optional:
            return None
        raise ValueError(f"{path}: null is not allowed")
    if kind in (FieldKind.STR, FieldKind.DATETIME):
        return _expect(value, str, path)
    if kind is FieldKind.INT:
        return _expect_int(value, path)
    if kind is FieldKind.BOOL:
        return _expect(value, bool, path)
    if kind is FieldKind.VALUE:
        entry = _expect(value, Mapping, path)
        extra = set(entry) - {"value", "type"}
        if extra or "value" not in entry:
            raise ValueError(f"{path}: expected {{'value': str, 'type': str}}")
        return ParameterValue(
            _expect(entry["value"], str, path + ".value"),
            _expect(entry.get("type", "xsd:string"), str, path + ".type"),
        )
    if kind is FieldKind.STRUCT:
        return _struct_from_dict(spec.item, _expect(value, Mapping, path), path)
    items = _expect(value, (list, tuple), path)
    if spec.item is FieldKind.STR:
        return tuple(_expect(item, str, f"{path}[{i}]") for i, item in enumerate(items))
    if isinstance(spec.item, tuple):
        return tuple(_operation_from_dict(item, f"{path}[{i}]") for i, item in enumerate(items))
    return tuple(
        _struct_from_dict(spec.item, _expect(item, Mapping, f"{path}[{i}]"), f"{path}[{i}]")
        for i, item in enumerate(items)
    )


def _operation_from_dict(value: Any, path: str) -> Any:
    entry = dict(_expect(value, Mapping, path))
    type_name = entry.pop("type", None)
    cls = _OPERATION_BY_NAME.get(type_name) if isinstance(type_name, str) else None
    if cls is None:
        raise ValueError(f"{path}.type: expected one of {sorted(_OPERATION_BY_NAME)}, got {type_name!r}")
    return _struct_from_dict(cls, entry, path)
