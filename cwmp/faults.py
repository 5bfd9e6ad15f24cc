"""CWMP fault codes (TR-069 A.5) and the fault a SOAP envelope carries.

The fault strings are the ones listed in the annotations of cwmp-1-2.xsd / cwmp-1-4.xsd
(with the XSD's "Deployement" typo corrected). The SOAP ``faultcode`` ("Client": the request
was wrong; "Server": the receiver could not do it) for 8000-8005 and 9000-9013 follows the
spec's fault tables as quoted by catawampus (checklist T18/T22). For 8006 and 9014-9032 the
split is from memory of the TR-069 tables [R]; it only affects the ``faultcode`` element,
which receivers key on ``FaultCode`` anyway.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from types import MappingProxyType
from typing import ClassVar

__all__ = [
    "ACS_FAULTS",
    "CPE_FAULTS",
    "AcsFault",
    "CpeFault",
    "CwmpFault",
    "FaultInfo",
    "SetParameterValuesFault",
    "SoapFaultCode",
    "fault_info",
]


class SoapFaultCode(StrEnum):
    CLIENT = "Client"
    SERVER = "Server"


class AcsFault(IntEnum):
    """Faults the ACS returns to CPE requests (A.5.1)."""

    METHOD_NOT_SUPPORTED = 8000
    REQUEST_DENIED = 8001
    INTERNAL_ERROR = 8002
    INVALID_ARGUMENTS = 8003
    RESOURCES_EXCEEDED = 8004
    RETRY_REQUEST = 8005
    VERSION_INCOMPATIBLE = 8006  # CWMP 1.4: no acceptable version in SupportedCWMPVersions


class CpeFault(IntEnum):
    """Faults a CPE returns to ACS requests (A.5.2)."""

    METHOD_NOT_SUPPORTED = 9000
    REQUEST_DENIED = 9001
    INTERNAL_ERROR = 9002
    INVALID_ARGUMENTS = 9003
    RESOURCES_EXCEEDED = 9004
    INVALID_PARAMETER_NAME = 9005
    INVALID_PARAMETER_TYPE = 9006
    INVALID_PARAMETER_VALUE = 9007
    NON_WRITABLE_PARAMETER = 9008
    NOTIFICATION_REJECTED = 9009
    FILE_TRANSFER_FAILURE = 9010
    UPLOAD_FAILURE = 9011
    FILE_SERVER_AUTHENTICATION_FAILURE = 9012
    UNSUPPORTED_TRANSFER_PROTOCOL = 9013
    JOIN_MULTICAST_FAILURE = 9014
    CONTACT_FILE_SERVER_FAILURE = 9015
    ACCESS_FILE_FAILURE = 9016
    COMPLETE_DOWNLOAD_FAILURE = 9017
    FILE_CORRUPTED = 9018
    FILE_AUTHENTICATION_FAILURE = 9019
    TIME_WINDOW_FAILURE = 9020
    CANCEL_NOT_PERMITTED = 9021
    INVALID_UUID = 9022
    UNKNOWN_EXECUTION_ENVIRONMENT = 9023
    DISABLED_EXECUTION_ENVIRONMENT = 9024
    DU_EE_MISMATCH = 9025
    DUPLICATE_DU = 9026
    SYSTEM_RESOURCES_EXCEEDED = 9027
    UNKNOWN_DU = 9028
    INVALID_DU_STATE = 9029
    DU_DOWNGRADE_NOT_PERMITTED = 9030
    DU_VERSION_NOT_SPECIFIED = 9031
    DU_VERSION_EXISTS = 9032


@dataclass(frozen=True, slots=True)
class FaultInfo:
    code: int
    string: str
    soap_faultcode: SoapFaultCode


_C, _S = SoapFaultCode.CLIENT, SoapFaultCode.SERVER


def _table(rows: Iterable[tuple[int, str, SoapFaultCode]]) -> Mapping[int, FaultInfo]:
    return MappingProxyType({code: FaultInfo(code, text, kind) for code, text, kind in rows})


ACS_FAULTS: Mapping[int, FaultInfo] = _table(
    [
        (8000, "Method not supported", _S),
        (8001, "Request denied (no reason specified)", _S),
        (8002, "Internal error", _S),
        (8003, "Invalid arguments", _C),
        (8004, "Resources exceeded", _S),
        (8005, "Retry request", _S),
        (8006, "ACS version incompatible with CPE", _C),
    ]
)

CPE_FAULTS: Mapping[int, FaultInfo] = _table(
    [
        (9000, "Method not supported", _S),
        (9001, "Request denied (no reason specified)", _S),
        (9002, "Internal error", _S),
        (9003, "Invalid arguments", _C),
        (9004, "Resources exceeded", _S),
        (9005, "Invalid parameter name", _C),
        (9006, "Invalid parameter type", _C),
        (9007, "Invalid parameter value", _C),
        (9008, "Attempt to set a non-writable parameter", _C),
        (9009, "Notification request rejected", _S),
        (9010, "File transfer failure", _S),
        (9011, "Upload failure", _S),
        (9012, "File transfer server authentication failure", _S),
        (9013, "Unsupported protocol for file transfer", _S),
        (9014, "File transfer failure: unable to join multicast group", _S),
        (9015, "File transfer failure: unable to contact file server", _S),
        (9016, "File transfer failure: unable to access file", _S),
        (9017, "File transfer failure: unable to complete download", _S),
        (9018, "File transfer failure: file corrupted", _S),
        (9019, "File transfer failure: file authentication failure", _S),
        (9020, "File transfer failure: unable to complete download within specified time windows", _S),
        (9021, "Cancelation of file transfer not permitted in current transfer state", _C),
        (9022, "Invalid UUID Format", _C),
        (9023, "Unknown Execution Environment", _C),
        (9024, "Disabled Execution Environment", _C),
        (9025, "Deployment Unit to Execution Environment Mismatch", _C),
        (9026, "Duplicate Deployment Unit", _C),
        (9027, "System Resources Exceeded", _C),
        (9028, "Unknown Deployment Unit", _C),
        (9029, "Invalid Deployment Unit State", _C),
        (9030, "Invalid Deployment Unit Update - Downgrade not permitted", _C),
        (9031, "Invalid Deployment Unit Update - Version not specified", _C),
        (9032, "Invalid Deployment Unit Update - Version already exists", _C),
    ]
)


def fault_info(code: int) -> FaultInfo | None:
    """The standard string and SOAP faultcode of a fault code; None for vendor/extension codes."""
    return ACS_FAULTS.get(code) or CPE_FAULTS.get(code)


@dataclass(slots=True)
class SetParameterValuesFault:
    """Per-parameter detail of a SetParameterValues fault (usually inside a 9003)."""

    parameter_name: str = ""
    fault_code: int = 0
    fault_string: str = ""


@dataclass(eq=True)
class CwmpFault(Exception):
    """A SOAP fault with a CWMP ``Fault`` detail, in either direction.

    Raise it, or put it as the message of an envelope. ``faultcode`` is the SOAP-level
    "Client"/"Server" (taken from the fault tables when not given; received values such as
    "soap:Client" are kept without their prefix). ``code`` 0 means the SOAP fault carried no
    CWMP detail.
    """

    METHOD: ClassVar[str] = "Fault"

    code: int
    string: str = ""
    set_parameter_values_faults: tuple[SetParameterValuesFault, ...] = ()
    faultcode: str = ""
    faultstring: str = "CWMP fault"

    # Equal faults may hash differently; faults are compared, not used as set members.
    __hash__ = Exception.__hash__

    def __post_init__(self) -> None:
        if type(self.set_parameter_values_faults) is not tuple:
            self.set_parameter_values_faults = tuple(self.set_parameter_values_faults)
        if not self.faultcode:
            info = fault_info(self.code)
            # Vendor ranges: 88xx/98xx say nothing about blame; "Server" is the safe default.
            self.faultcode = info.soap_faultcode.value if info else SoapFaultCode.SERVER.value
        Exception.__init__(self, self.code, self.string)

    @classmethod
    def from_code(
        cls,
        code: int,
        string: str | None = None,
        *,
        set_parameter_values_faults: Iterable[SetParameterValuesFault] = (),
    ) -> CwmpFault:
        """A fault with the standard string for ``code`` unless ``string`` is given."""
        if string is None:
            info = fault_info(code)
            string = info.string if info else ""
        return cls(code, string, tuple(set_parameter_values_faults))

    def __str__(self) -> str:
        text = f"CWMP fault {self.code}"
        if self.string:
            text += f": {self.string}"
        if self.set_parameter_values_faults:
            details = ", ".join(f"{f.parameter_name}={f.fault_code}" for f in self.set_parameter_values_faults)
            text += f" ({details})"
        return text
