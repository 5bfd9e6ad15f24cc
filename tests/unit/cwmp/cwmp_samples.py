"""Shared helpers for the cwmp tests: paths to ../shared, the offline XSD loader, the seed
envelope extractor, XSD-valid sample messages and Hypothesis strategies for every model."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

from hypothesis import strategies as st
from lxml import etree

from cwmp import models
from cwmp.faults import CwmpFault, SetParameterValuesFault
from cwmp.models import INT_MAX, INT_MIN, METHODS, CwmpMessage, FieldKind, FieldSpec, struct_fields
from cwmp.values import UNKNOWN_TIME, ParameterValue, XsdType

REPO_ROOT = Path(__file__).resolve().parents[3]
SHARED = REPO_ROOT.parent / "shared"
XSD_DIR = SHARED / "spec" / "xsd"
INTEROP_DIR = SHARED / "interop"
SEED_DIR = SHARED / "seed"

SCHEMA_VERSIONS = ("1-0", "1-1", "1-2", "1-3", "1-4")
# cwmp-1-3.xsd and cwmp-1-4.xsd declare the cwmp-1-2 namespace (checklist §0).
SCHEMA_NAMESPACE = {
    "1-0": "urn:dslforum-org:cwmp-1-0",
    "1-1": "urn:dslforum-org:cwmp-1-1",
    "1-2": "urn:dslforum-org:cwmp-1-2",
    "1-3": "urn:dslforum-org:cwmp-1-2",
    "1-4": "urn:dslforum-org:cwmp-1-2",
}


def version_key(version: str) -> tuple[int, int]:
    major, minor = version.split("-")
    return int(major), int(minor)


# ---------------------------------------------------------------------------------------
# XSD loading (offline, see spec/xsd/README.md)
# ---------------------------------------------------------------------------------------


class _LocalSchemas(etree.Resolver):
    """Serve the SOAP stand-ins and the included cwmp-1-x.xsd from the local folder."""

    _SOAP = {
        "http://schemas.xmlsoap.org/soap/envelope/": "soap-envelope-min.xsd",
        "http://schemas.xmlsoap.org/soap/encoding/": "soap-encoding-min.xsd",
    }

    def resolve(self, system_url: str, public_id: str, context: Any) -> Any:
        name = self._SOAP.get(system_url) or system_url.rsplit("/", 1)[-1]
        path = XSD_DIR / name
        if path.is_file():
            return self.resolve_filename(str(path), context)
        raise AssertionError(f"schema import not available offline: {system_url}")


@cache
def schema(version: str) -> etree.XMLSchema:
    parser = etree.XMLParser(no_network=True, resolve_entities=False)
    parser.resolvers.add(_LocalSchemas())
    return etree.XMLSchema(etree.parse(str(XSD_DIR / f"cwmp-{version}.xsd"), parser))


# ---------------------------------------------------------------------------------------
# The seed walk-through: envelopes inside a blog post, split by HTTP chunk-size lines
# ---------------------------------------------------------------------------------------

_ENVELOPE_START = re.compile(r"<([A-Za-z_][\w.-]*):Envelope\b")


def extract_seed_envelopes(text: str) -> list[tuple[int, bytes]]:
    """(line number, envelope bytes) for each complete envelope in the captured text.

    Inside an envelope, only lines that start with "<" are XML; the others are chunk sizes,
    non-breaking-space lines and the author's annotations. A line that ends inside a tag (the
    blog wrapped "</cwmp:InformRespons" / "e>") continues on the next non-blank line.
    """
    found = []
    pos = 0
    while (match := _ENVELOPE_START.search(text, pos)) is not None:
        end_tag = f"</{match.group(1)}:Envelope>"
        end = text.find(end_tag, match.end())
        following = _ENVELOPE_START.search(text, match.end())
        pos = match.end()
        if end < 0 or (following is not None and following.start() < end):
            continue  # truncated in the capture
        xml = ""
        for raw in text[match.start() : end + len(end_tag)].splitlines():
            line = raw.strip()
            if not line:
                continue
            if xml and not xml.endswith(">"):
                xml += line
            elif line.startswith("<"):
                xml += ("\n" if xml else "") + line
        found.append((text.count("\n", 0, match.start()) + 1, xml.encode("utf-8")))
        pos = end
    return found


# ---------------------------------------------------------------------------------------
# Schema-valid samples of every message
# ---------------------------------------------------------------------------------------

UUID = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
TIME = "2026-11-23T18:34:16+00:00"


def _values() -> tuple[ParameterValue, ...]:
    """One value of each type CWMP uses (base64: see test_base64_values_use_the_cwmp_type_name)."""
    values = [
        ParameterValue("hello & <world>", XsdType.STRING),
        ParameterValue("-42", XsdType.INT),
        ParameterValue("42", XsdType.UNSIGNED_INT),
        ParameterValue("-9000000000", XsdType.LONG),
        ParameterValue("18000000000000000000", XsdType.UNSIGNED_LONG),
        ParameterValue("1", XsdType.BOOLEAN),
        ParameterValue(TIME, XsdType.DATETIME),
        ParameterValue("0a0B", XsdType.HEX_BINARY),
        ParameterValue("caf\u00e9 \u2603", XsdType.STRING),
    ]
    return tuple(values)


def _pvs() -> tuple[models.ParameterValueStruct, ...]:
    return tuple(models.ParameterValueStruct(f"Device.X.{i}", v) for i, v in enumerate(_values()))


def _fault_struct() -> models.FaultStruct:
    return models.FaultStruct(9010, "File transfer failure")


def _op_result(cls: type) -> Any:
    kwargs: dict[str, Any] = dict(
        uuid=UUID,
        deployment_unit_ref="Device.SoftwareModules.DeploymentUnit.1",
        version="1.0",
        current_state="Installed",
        resolved=True,
        execution_unit_ref_list="Device.SoftwareModules.ExecutionUnit.1",
        start_time=TIME,
        complete_time=TIME,
        fault=models.DeploymentUnitFaultStruct(0, "ok"),
    )
    if cls is models.AutonOpResultStruct:
        kwargs["operation_performed"] = "Install"
    return cls(**kwargs)


def sample_messages(version: str) -> list[CwmpMessage]:
    """At least one XSD-valid instance of every method defined by the schema ``version``,
    with every optional element present in one instance and absent in another."""
    notification_max = 6 if version_key(version) >= (1, 4) else 2
    m = models
    samples: list[CwmpMessage] = [
        m.Inform(
            device_id=m.DeviceId("ACME & Co", "00D09E", "IGD", "SN-1"),
            event=(m.EventStruct("1 BOOT", ""), m.EventStruct("M Reboot", "reboot-1")),
            max_envelopes=1,
            current_time=TIME,
            retry_count=2,
            parameter_list=_pvs(),
        ),
        m.Inform(device_id=m.DeviceId("", "FFFFFF", "", "x")),
        m.InformResponse(1),
        m.GetRPCMethods(),
        m.GetRPCMethodsResponse(("Inform", "GetRPCMethods", "TransferComplete")),
        m.TransferComplete("dl-1", _fault_struct(), TIME, TIME),
        m.TransferComplete("dl-2", m.FaultStruct(0, ""), "0001-01-01T00:00:00Z", UNKNOWN_TIME),
        m.TransferCompleteResponse(),
        m.Kicked("cmd", "http://referer/", "arg", "http://next/"),
        m.KickedResponse("http://next/"),
        m.RequestDownload("3 Vendor Configuration File", (m.ArgStruct("Version", "v2"), m.ArgStruct("a", "b"))),
        m.RequestDownloadResponse(),
        m.SetParameterValues(_pvs(), "pk-1"),
        m.SetParameterValuesResponse(1),
        m.GetParameterValues(("Device.DeviceInfo.", "Device.ManagementServer.URL")),
        m.GetParameterValuesResponse(_pvs()),
        m.GetParameterValuesResponse(()),
        m.GetParameterNames("Device.", True),
        m.GetParameterNames("", False),
        m.GetParameterNamesResponse((m.ParameterInfoStruct("Device.", False), m.ParameterInfoStruct("Device.X", True))),
        m.SetParameterAttributes(
            (
                m.SetParameterAttributesStruct("Device.A", True, notification_max, True, ("Subscriber",)),
                m.SetParameterAttributesStruct("Device.B.", False, 0, False, ()),
            )
        ),
        m.SetParameterAttributesResponse(),
        m.GetParameterAttributes(("Device.A", "Device.B.")),
        m.GetParameterAttributesResponse(
            (m.ParameterAttributeStruct("Device.A", 2, ("Subscriber",)), m.ParameterAttributeStruct("Device.B", 0, ()))
        ),
        m.AddObject("Device.IP.Interface.", "pk-2"),
        m.AddObjectResponse(3, 0),
        m.DeleteObject("Device.IP.Interface.3.", "pk-3"),
        m.DeleteObjectResponse(1),
        m.Download("dl-1", "1 Firmware Upgrade Image", "http://fs/fw.bin", "u", "p", 83687, "fw.bin", 5, "", ""),
        m.DownloadResponse(1, UNKNOWN_TIME, UNKNOWN_TIME),
        m.Reboot("reboot-1"),
        m.RebootResponse(),
        m.GetQueuedTransfers(),
        m.GetQueuedTransfersResponse((m.QueuedTransferStruct("dl-1", 2),)),
        m.ScheduleInform(60, "si-1"),
        m.ScheduleInformResponse(),
        m.SetVouchers(("dm91Y2hlcg==", "AAEC")),
        m.SetVouchersResponse(),
        m.GetOptions("Option1"),
        m.GetOptionsResponse(
            (m.OptionStruct("Option1", 7, 1, 2, TIME, TIME, 1), m.OptionStruct("Option2", 8, 0, 0, TIME, None, 0))
        ),
        m.Upload("up-1", "1 Vendor Configuration File", "http://fs/up", "u", "p", 0),
        m.UploadResponse(0, TIME, TIME),
        m.FactoryReset(),
        m.FactoryResetResponse(),
    ]
    if version_key(version) >= (1, 1):
        samples += [
            m.GetAllQueuedTransfers(),
            m.GetAllQueuedTransfersResponse(
                (m.AllQueuedTransferStruct("dl-1", 1, True, "1 Firmware Upgrade Image", 1000, "fw.bin"),)
            ),
            m.AutonomousTransferComplete(
                "http://announce/",
                "http://fs/x",
                True,
                "1 Firmware Upgrade Image",
                10,
                "x",
                _fault_struct(),
                TIME,
                TIME,
            ),
            m.AutonomousTransferCompleteResponse(),
        ]
    if version_key(version) >= (1, 2):
        samples += [
            m.ScheduleDownload(
                "sd-1",
                "1 Firmware Upgrade Image",
                "http://fs/fw.bin",
                "u",
                "p",
                100,
                "fw.bin",
                (
                    m.TimeWindowStruct(0, 3600, "1 At Any Time", "", -1),
                    m.TimeWindowStruct(7200, 9000, "4 Confirmation Needed", "ok?", 3),
                ),
            ),
            m.ScheduleDownloadResponse(),
            m.CancelTransfer("dl-1"),
            m.CancelTransferResponse(),
            m.ChangeDUState(
                (
                    m.InstallOpStruct("http://fs/du.ipk", UUID, "u", "p", "Device.SoftwareModules.ExecEnv.1"),
                    m.UpdateOpStruct(UUID, "2.0", "http://fs/du2.ipk", "u", "p"),
                    m.UninstallOpStruct(UUID, "1.0", "Device.SoftwareModules.ExecEnv.1"),
                ),
                "du-1",
            ),
            m.ChangeDUState(
                (m.InstallOpStruct("http://fs/du.ipk"), m.UpdateOpStruct(), m.UninstallOpStruct(UUID)), None
            ),
            m.ChangeDUStateResponse(),
            m.DUStateChangeComplete((_op_result(m.OpResultStruct), _op_result(m.OpResultStruct)), "du-1"),
            m.DUStateChangeComplete((_op_result(m.OpResultStruct),), None),
            m.DUStateChangeCompleteResponse(),
            m.AutonomousDUStateChangeComplete((_op_result(m.AutonOpResultStruct),)),
            m.AutonomousDUStateChangeCompleteResponse(),
        ]
    return samples


def sample_faults(version: str) -> list[CwmpFault]:
    acs = [8000, 8001, 8002, 8003, 8004, 8005, 8899]
    cpe = [9000, 9002, 9005, 9013, 9899]
    if version_key(version) >= (1, 1):
        cpe += [9014, 9019]
    if version_key(version) >= (1, 2):
        cpe += [9020, 9032]
    if version_key(version) >= (1, 4):
        acs.append(8006)
    faults = [CwmpFault.from_code(code) for code in acs + cpe]
    faults.append(
        CwmpFault.from_code(
            9003,
            set_parameter_values_faults=[
                SetParameterValuesFault("Device.No.Such", 9005, "Invalid parameter name"),
                SetParameterValuesFault("Device.RO", 9008, ""),
            ],
        )
    )
    return faults


# ---------------------------------------------------------------------------------------
# Hypothesis strategies for every model
# ---------------------------------------------------------------------------------------

# Everything XML 1.0 can carry. Control characters are excluded: the builder refuses them
# (XML cannot represent them) and the parser strips them.
xml_text = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cs",),
        blacklist_characters="".join(map(chr, [*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0xFFFE, 0xFFFF])),
    ),
    max_size=40,
)
value_types = st.sampled_from([t.value for t in XsdType] + ["xsd:float", "xsd:base64Binary"])
parameter_values = st.builds(ParameterValue, xml_text | st.sampled_from(["0", "1", "TRUE", "false"]), value_types)
datetimes = st.sampled_from([UNKNOWN_TIME, TIME, "2026-11-23T18:25:44.249Z", "2016-06-01T23:39:09-04:00"]) | xml_text


def _field_strategy(spec: FieldSpec) -> st.SearchStrategy[Any]:
    kind = spec.kind
    if kind is FieldKind.STR:
        strategy: st.SearchStrategy[Any] = xml_text
    elif kind is FieldKind.INT:
        strategy = st.integers(min_value=INT_MIN, max_value=INT_MAX)
    elif kind is FieldKind.BOOL:
        strategy = st.booleans()
    elif kind is FieldKind.DATETIME:
        strategy = datetimes
    elif kind is FieldKind.VALUE:
        strategy = parameter_values
    elif kind is FieldKind.STRUCT:
        strategy = struct_strategy(spec.item)
    elif isinstance(spec.item, tuple):
        strategy = st.lists(st.one_of([struct_strategy(c) for c in spec.item]), max_size=3).map(tuple)
    elif spec.item is FieldKind.STR:
        strategy = st.lists(xml_text, max_size=4).map(tuple)
    else:
        strategy = st.lists(struct_strategy(spec.item), max_size=4).map(tuple)
    return st.none() | strategy if spec.optional else strategy


@cache
def struct_strategy(cls: type) -> st.SearchStrategy[Any]:
    return st.builds(cls, **{spec.attr: _field_strategy(spec) for spec in struct_fields(cls)})


def message_strategy(method: str) -> st.SearchStrategy[CwmpMessage]:
    return struct_strategy(METHODS[method])


faults = st.builds(
    CwmpFault,
    st.integers(min_value=0, max_value=9899),
    xml_text,
    st.lists(st.builds(SetParameterValuesFault, xml_text, st.integers(0, 9899), xml_text), max_size=3).map(tuple),
    st.sampled_from(["Client", "Server"]),
    xml_text,
)

ALL_METHODS = sorted(METHODS)
