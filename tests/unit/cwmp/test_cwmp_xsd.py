"""Every envelope the library builds validates against the official BBF schema of its version.

The schemas declare the RPC elements and header elements globally, so each is validated on
its own (spec/xsd/README.md). cwmp-1-3/1-4 use the cwmp-1-2 namespace.
"""

from __future__ import annotations

import pytest
from lxml import etree

from cwmp import (
    CWMP_NS_1_2,
    METHODS,
    BooleanLiteral,
    CwmpFault,
    DeviceId,
    Inform,
    ParameterValue,
    ParameterValueStruct,
    SetParameterValues,
    build_envelope,
    rpc_from_dict,
)
from cwmp.models import CwmpMessage
from tests.unit.cwmp.cwmp_samples import (
    SCHEMA_NAMESPACE,
    SCHEMA_VERSIONS,
    sample_faults,
    sample_messages,
    schema,
    version_key,
)


def _cases() -> list[object]:
    cases = []
    for version in SCHEMA_VERSIONS:
        for i, message in enumerate(sample_messages(version) + sample_faults(version)):
            label = f"{message.METHOD}{'-' + str(message.code) if isinstance(message, CwmpFault) else ''}"
            cases.append(pytest.param(version, message, id=f"{version}-{label}-{i}"))
    return cases


def _assert_valid(version: str, element: etree._Element) -> None:
    xsd = schema(version)
    if not xsd.validate(element):
        raise AssertionError(f"cwmp-{version}.xsd rejects {etree.tostring(element)[:300]!r}: {xsd.error_log}")


def _rpc_element(body: bytes) -> etree._Element:
    root = etree.fromstring(body)
    (element,) = root.find("{http://schemas.xmlsoap.org/soap/envelope/}Body")
    if element.tag == "{http://schemas.xmlsoap.org/soap/envelope/}Fault":
        (element,) = element.find("detail")
    return element


@pytest.mark.parametrize(("version", "message"), _cases())
@pytest.mark.parametrize("literal", list(BooleanLiteral))
def test_built_rpc_validates(version: str, message: CwmpMessage | CwmpFault, literal: BooleanLiteral) -> None:
    body = build_envelope(message, cwmp_ns=SCHEMA_NAMESPACE[version], cwmp_id="id-1", boolean_literal=literal)
    element = _rpc_element(body)
    assert (
        element.tag == f"{{{SCHEMA_NAMESPACE[version]}}}{'Fault' if isinstance(message, CwmpFault) else message.METHOD}"
    )
    _assert_valid(version, element)


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_samples_cover_every_method_of_the_version(version: str) -> None:
    expected = {name for name, cls in METHODS.items() if version_key(cls.SINCE) <= version_key(version)}
    covered = {m.METHOD for m in sample_messages(version)}
    assert covered == expected
    # cwmp-1-0 has 40 methods, 1-1 adds 4, 1-2 adds 10 (ID, HoldRequests and Fault are not methods).
    assert len(expected) == {"1-0": 40, "1-1": 44}.get(version, 54)


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_header_elements_validate(version: str) -> None:
    headers: dict[str, object] = {"cwmp_id": "", "hold_requests": False}
    if version_key(version) >= (1, 3):
        headers["session_timeout"] = 60
    if version_key(version) >= (1, 4):
        headers.update(supported_cwmp_versions="1.0,1.1,1.2,1.3,1.4", use_cwmp_version="1.4")
    body = build_envelope(METHODS["InformResponse"](), cwmp_ns=SCHEMA_NAMESPACE[version], **headers)  # type: ignore[arg-type]
    header = etree.fromstring(body)[0]
    assert [etree.QName(h).localname for h in header] == [
        name
        for name, key in [
            ("ID", "cwmp_id"),
            ("HoldRequests", "hold_requests"),
            ("SessionTimeout", "session_timeout"),
            ("SupportedCWMPVersions", "supported_cwmp_versions"),
            ("UseCWMPVersion", "use_cwmp_version"),
        ]
        if key in headers
    ]
    for element in header:
        _assert_valid(version, element)


def test_schema_check_is_not_vacuous() -> None:
    """Negative control: a wrong type and a malformed OUI are caught by the same validation."""
    bad_value = SetParameterValues((ParameterValueStruct("Device.A", ParameterValue("x", "xsd:int")),), "")
    with pytest.raises(AssertionError, match="xs:int"):
        _assert_valid("1-2", _rpc_element(build_envelope(bad_value, cwmp_ns=CWMP_NS_1_2, cwmp_id="1")))
    bad_oui = Inform(device_id=DeviceId("", "zz", "", "x"))
    with pytest.raises(AssertionError, match="OUI"):
        _assert_valid("1-2", _rpc_element(build_envelope(bad_oui, cwmp_ns=CWMP_NS_1_2, cwmp_id="1")))


def test_base64_values_use_the_cwmp_type_name() -> None:
    """TR-069 agents and ACSs write xsi:type="xsd:base64" (icwmp, GenieACS), a name W3C XML
    Schema does not define (it has base64Binary). The library keeps the sender's name; the
    schema's only complaint is that unresolvable type, and base64Binary validates."""
    for type_name, valid in (("xsd:base64", False), ("xsd:base64Binary", True)):
        message = SetParameterValues((ParameterValueStruct("Device.Cert", ParameterValue("AAEC", type_name)),), "")
        element = _rpc_element(build_envelope(message, cwmp_ns=CWMP_NS_1_2, cwmp_id="1"))
        xsd = schema("1-2")
        assert xsd.validate(element) is valid
        if not valid:
            assert "does not resolve to a type definition" in str(xsd.error_log.last_error)


def _planned_by_the_orchestrator() -> list[object]:
    """The RPCs the orchestrator's transfer and deployment-unit tasks send, built by its own
    builders (services/orchestrator/rpcs.py) exactly as a plan carries them."""
    from services.orchestrator import rpcs

    built = [
        rpcs.schedule_download(command_key="task-0123456789abcdef.1", file_type="1 Firmware Upgrade Image",
                               url="http://files.test/download/fw.bin", username="u", password="p",
                               file_size=83687, target_file_name="fw.bin",
                               time_windows=[{"window_start": 0, "window_end": 3600},
                                             {"window_start": 7200, "window_end": 10800,
                                              "window_mode": "4 Confirmation Needed",
                                              "user_message": "Upgrade?", "max_retries": -1}]),
        rpcs.cancel_transfer("task-0123456789abcdef.1"),
        rpcs.get_queued_transfers(),
        rpcs.get_all_queued_transfers(),
        rpcs.change_du_state([
            {"type": "install", "url": "http://files.test/download/app.ipk", "username": "u", "password": "p"},
            {"type": "install", "url": "http://x.test/b.ipk", "uuid": "6ba7b810-9dad-11d1-80b4-00c04fd430c8",
             "execution_env_ref": "Device.SoftwareModules.ExecEnv.1"},
            {"type": "update", "uuid": "6ba7b810-9dad-11d1-80b4-00c04fd430c8", "version": "2.0"},
            {"type": "update", "url": "http://x.test/b2.ipk"},
            {"type": "uninstall", "uuid": "6ba7b810-9dad-11d1-80b4-00c04fd430c8", "version": "2.0",
             "execution_env_ref": "Device.SoftwareModules.ExecEnv.1"},
        ], "task-0123456789abcdef.1"),
    ]
    cases = []
    for rpc in built:
        message = rpc_from_dict(rpc)
        assert isinstance(message, CwmpMessage)
        for version in SCHEMA_VERSIONS:
            if version_key(type(message).SINCE) <= version_key(version):
                cases.append(pytest.param(version, message, id=f"{version}-{message.METHOD}"))
    return cases


@pytest.mark.parametrize(("version", "message"), _planned_by_the_orchestrator())
def test_orchestrator_transfer_and_du_rpcs_validate(version: str, message: CwmpMessage) -> None:
    """Every cwmp version that defines the method (ScheduleDownload, CancelTransfer and
    ChangeDUState from 1-2, GetAllQueuedTransfers from 1-1, GetQueuedTransfers from 1-0)."""
    body = build_envelope(message, cwmp_ns=SCHEMA_NAMESPACE[version], cwmp_id="id-1")
    _assert_valid(version, _rpc_element(body))


def test_orchestrator_rpcs_cover_the_versions_that_define_them() -> None:
    versions: dict[str, set[str]] = {}
    for case in _planned_by_the_orchestrator():
        version, message = case.values  # type: ignore[attr-defined]
        versions.setdefault(message.METHOD, set()).add(version)
    assert versions == {"ScheduleDownload": {"1-2", "1-3", "1-4"}, "CancelTransfer": {"1-2", "1-3", "1-4"},
                        "ChangeDUState": {"1-2", "1-3", "1-4"}, "GetAllQueuedTransfers": {"1-1", "1-2", "1-3", "1-4"},
                        "GetQueuedTransfers": set(SCHEMA_VERSIONS)}


def test_a_schedule_download_with_three_windows_is_caught_by_the_schema() -> None:
    """Negative control: TimeWindowList holds at most two windows (the task spec refuses a third)."""
    from services.orchestrator import rpcs

    windows = [{"window_start": 10 * i, "window_end": 10 * i + 5} for i in range(3)]
    rpc = rpcs.schedule_download(command_key="k", file_type="1 Firmware Upgrade Image", url="http://f.test/x",
                                 username="", password="", file_size=1, time_windows=windows)
    with pytest.raises(AssertionError, match="TimeWindowStruct"):
        _assert_valid("1-2", _rpc_element(build_envelope(rpc_from_dict(rpc), cwmp_ns=CWMP_NS_1_2, cwmp_id="1")))
