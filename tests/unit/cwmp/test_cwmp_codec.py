"""Envelope codec: the tolerated CPE quirks (checklist Q1-Q5), the strict errors, and the
exact shape of what the library builds."""

from __future__ import annotations

import pytest
from lxml import etree

from cwmp import (
    CWMP_NS_1_0,
    CWMP_NS_1_2,
    CWMP_NS_1_3,
    CWMP_NS_1_4,
    BooleanLiteral,
    CwmpFault,
    DuplicateHeader,
    Envelope,
    EnvelopeLimitExceeded,
    Header,
    InvalidField,
    MalformedEnvelope,
    MissingBody,
    MissingField,
    NotSoapEnvelope,
    NotXml,
    ParameterValue,
    SetParameterValuesFault,
    UnknownMethod,
    UnsafeXml,
    XmlLimits,
    build_envelope,
    build_fault,
    is_cwmp_namespace,
    is_empty_body,
    namespace_version,
    parse_envelope,
    rpc_from_dict,
)
from cwmp import models as m

SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
ENC = "http://schemas.xmlsoap.org/soap/encoding/"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
XSD = "http://www.w3.org/2001/XMLSchema"


def envelope(
    body: str,
    *,
    header: str = "<cwmp:ID soap:mustUnderstand='1'>7</cwmp:ID>",
    ns: str = CWMP_NS_1_0,
    soap: str = "soap",
    decl: bool = True,
) -> bytes:
    """A test envelope: ``soap`` is the SOAP prefix, ``cwmp`` is bound to ``ns``."""
    xsi = f" xmlns:xsi='{XSI}' xmlns:xsd='{XSD}'" if decl else ""
    text = (
        f"<{soap}:Envelope xmlns:{soap}='{SOAP}' xmlns:soap-enc='{ENC}' xmlns:cwmp='{ns}'{xsi}>"
        + (f"<{soap}:Header>{header}</{soap}:Header>" if header is not None else "")
        + f"<{soap}:Body>{body}</{soap}:Body></{soap}:Envelope>"
    ).replace("soap:mustUnderstand", f"{soap}:mustUnderstand")
    return text.encode()


GPV_RESPONSE = (
    "<cwmp:GetParameterValuesResponse><ParameterList soap-enc:arrayType='cwmp:ParameterValueStruct[1]'>"
    "<ParameterValueStruct><Name>Device.A</Name><Value xsi:type='xsd:int'>5</Value></ParameterValueStruct>"
    "</ParameterList></cwmp:GetParameterValuesResponse>"
)


def message(body: bytes) -> object:
    return parse_envelope(body).message


# ---------------------------------------------------------------------------------------
# Namespaces and prefixes (Q1, Q2)
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["soap-env", "SOAP-ENV", "soap_env", "soapenv", "soap", "S", "x1"])
def test_any_soap_prefix(prefix: str) -> None:
    env = parse_envelope(envelope(GPV_RESPONSE, soap=prefix))
    assert env.header.id == "7"
    assert env.message == m.GetParameterValuesResponse(
        (m.ParameterValueStruct("Device.A", ParameterValue("5", "xsd:int")),)
    )


@pytest.mark.parametrize("ns", [CWMP_NS_1_0, "urn:dslforum-org:cwmp-1-1", CWMP_NS_1_2, CWMP_NS_1_3, CWMP_NS_1_4])
def test_namespace_is_detected_and_echoed(ns: str) -> None:
    env = parse_envelope(envelope("<cwmp:GetRPCMethods/>", ns=ns))
    assert env.cwmp_ns == ns
    reply = build_envelope(m.GetRPCMethodsResponse(("Inform",)), cwmp_ns=env.cwmp_ns or "", cwmp_id=env.header.id)
    root = etree.fromstring(reply)
    assert root.nsmap["cwmp"] == ns
    assert root[1][0].tag == f"{{{ns}}}GetRPCMethodsResponse"


def test_namespace_declared_on_the_method_element_and_children_qualified() -> None:
    body = (
        f"<s:Envelope xmlns:s='{SOAP}'><s:Body>"
        f"<c:Reboot xmlns:c='{CWMP_NS_1_2}'><c:CommandKey>k1</c:CommandKey></c:Reboot>"
        "</s:Body></s:Envelope>"
    ).encode()
    env = parse_envelope(body)
    assert env == Envelope(CWMP_NS_1_2, Header(), m.Reboot("k1"))


def test_namespace_taken_from_header_or_envelope_when_method_is_unqualified() -> None:
    body = envelope("<GetRPCMethods/>", ns=CWMP_NS_1_3)
    assert parse_envelope(body).cwmp_ns == CWMP_NS_1_3
    bare = f"<s:Envelope xmlns:s='{SOAP}' xmlns:cwmp='{CWMP_NS_1_2}'><s:Body><GetRPCMethods/></s:Body></s:Envelope>"
    assert parse_envelope(bare.encode()).cwmp_ns == CWMP_NS_1_2


def test_soap_12_envelope_namespace_is_accepted() -> None:
    body = (
        f"<e:Envelope xmlns:e='http://www.w3.org/2003/05/soap-envelope' xmlns:cwmp='{CWMP_NS_1_0}'>"
        "<e:Body><cwmp:FactoryReset/></e:Body></e:Envelope>"
    ).encode()
    assert message(body) == m.FactoryReset()


def test_namespace_helpers() -> None:
    assert (
        is_cwmp_namespace(CWMP_NS_1_4)
        and not is_cwmp_namespace("urn:dslforum-org:cwmp")
        and not is_cwmp_namespace(None)
    )
    assert namespace_version(CWMP_NS_1_2) == "1-2"
    with pytest.raises(ValueError, match="not a cwmp namespace"):
        namespace_version("urn:other")


# ---------------------------------------------------------------------------------------
# Headers (Q3, T9-T13)
# ---------------------------------------------------------------------------------------


def test_missing_header_and_empty_header() -> None:
    assert parse_envelope(envelope("<cwmp:GetRPCMethods/>", header=None)).header == Header()  # type: ignore[arg-type]
    assert parse_envelope(envelope("<cwmp:GetRPCMethods/>", header="")).header.id is None  # Mikrotik: <Header/>


def test_empty_id_is_kept_distinct_from_absent() -> None:
    env = parse_envelope(envelope("<cwmp:GetRPCMethods/>", header="<cwmp:ID soap:mustUnderstand='1'/>"))
    assert env.header.id == ""
    reply = build_envelope(m.GetRPCMethodsResponse(()), cwmp_ns=CWMP_NS_1_0, cwmp_id="")
    assert b'<cwmp:ID soap-env:mustUnderstand="1"></cwmp:ID>' in reply
    assert b"cwmp:ID" not in build_envelope(m.GetRPCMethodsResponse(()), cwmp_ns=CWMP_NS_1_0, cwmp_id=None)


def test_all_header_fields_and_session_timeout_in_another_cwmp_namespace() -> None:
    header = (
        "<cwmp:ID soap:mustUnderstand='1'>abc</cwmp:ID>"
        f"<t:SessionTimeout xmlns:t='{CWMP_NS_1_0}'> 60 </t:SessionTimeout>"  # genieacs#301
        "<cwmp:SupportedCWMPVersions>1.0,1.1,1.2,1.3,1.4</cwmp:SupportedCWMPVersions>"
        "<cwmp:UseCWMPVersion soap:mustUnderstand='1'>1.4</cwmp:UseCWMPVersion>"
        "<cwmp:HoldRequests soap:mustUnderstand='1'>TRUE</cwmp:HoldRequests>"
        "<cwmp:NoMoreRequests>1</cwmp:NoMoreRequests>"
        "<vendor:Other xmlns:vendor='urn:v'>x</vendor:Other>"
    )
    env = parse_envelope(envelope("<cwmp:GetRPCMethods/>", header=header, ns=CWMP_NS_1_2))
    assert env.header == Header("abc", True, 60, "1.0,1.1,1.2,1.3,1.4", "1.4", True)
    assert env.cwmp_ns == CWMP_NS_1_2


def test_garbage_header_values_are_ignored_not_fatal() -> None:
    header = "<cwmp:SessionTimeout>soon</cwmp:SessionTimeout><cwmp:HoldRequests>maybe</cwmp:HoldRequests>"
    assert parse_envelope(envelope("<cwmp:GetRPCMethods/>", header=header)).header == Header()


def test_built_header_shapes() -> None:
    body = build_envelope(
        m.InformResponse(),
        cwmp_ns=CWMP_NS_1_2,
        cwmp_id="id&<1>",
        hold_requests=True,
        use_cwmp_version="1.4",
        boolean_literal=BooleanLiteral.ONE_ZERO,
    )
    header = etree.fromstring(body)[0]
    must = f"{{{SOAP}}}mustUnderstand"
    assert [(etree.QName(h).localname, h.text, h.get(must)) for h in header] == [
        ("ID", "id&<1>", "1"),
        ("HoldRequests", "1", "1"),
        ("UseCWMPVersion", "1.4", "1"),
    ]
    assert parse_envelope(body).header == Header("id&<1>", True, use_cwmp_version="1.4")


# ---------------------------------------------------------------------------------------
# Arrays and values (Q4, Q5)
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "attributes",
    [
        "soap-enc:arrayType='cwmp:ParameterValueStruct[0002]'",  # zero-padded
        "soap-enc:arrayType='cwmp:ParameterValueStruct[7]'",  # wrong count
        "",  # no arrayType at all
        "xsi:type='soap-enc:Array' soap-enc:arrayType='cwmp:ParameterValueStruct[2]'",
    ],
)
def test_array_attributes_do_not_matter(attributes: str) -> None:
    body = envelope(
        f"<cwmp:GetParameterValuesResponse><ParameterList {attributes}>"
        "<ParameterValueStruct><Name>A</Name><Value xsi:type='xsd:string'>1</Value></ParameterValueStruct>"
        "<ParameterValueStruct><Name>B</Name><Value xsi:type='xsd:string'>2</Value></ParameterValueStruct>"
        "</ParameterList></cwmp:GetParameterValuesResponse>"
    )
    result = message(body)
    assert isinstance(result, m.GetParameterValuesResponse)
    assert [(p.name, p.value.value) for p in result.parameter_list] == [("A", "1"), ("B", "2")]


def test_pretty_printed_envelope() -> None:
    body = b"""<?xml version="1.0" encoding="UTF-8"?>
    <soap_env:Envelope
        xmlns:soap_env="http://schemas.xmlsoap.org/soap/envelope/"
        xmlns:soap_enc="http://schemas.xmlsoap.org/soap/encoding/"
        xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
        xmlns:cwmp="urn:dslforum-org:cwmp-1-2">
      <soap_env:Header>
        <cwmp:ID soap_env:mustUnderstand="1"> 5 </cwmp:ID>
      </soap_env:Header>
      <soap_env:Body>
        <cwmp:GetParameterNamesResponse>
          <ParameterList soap_enc:arrayType="cwmp:ParameterInfoStruct[1]">
            <ParameterInfoStruct>
              <Name>Device.</Name>
              <Writable> 0 </Writable>
            </ParameterInfoStruct>
          </ParameterList>
        </cwmp:GetParameterNamesResponse>
      </soap_env:Body>
    </soap_env:Envelope>
    """
    env = parse_envelope(body)
    assert env.header.id == " 5 "  # IDs are opaque: echoed byte for byte
    assert env.message == m.GetParameterNamesResponse((m.ParameterInfoStruct("Device.", False),))


def test_values_keep_whitespace_and_markup_characters() -> None:
    body = envelope(
        "<cwmp:SetParameterValues><ParameterList>"
        "<ParameterValueStruct><Name>A</Name>"
        "<Value xsi:type='xsd:string'>  a &amp; &lt;b&gt;\n</Value></ParameterValueStruct>"
        "</ParameterList><ParameterKey/></cwmp:SetParameterValues>"
    )
    result = message(body)
    assert isinstance(result, m.SetParameterValues)
    assert result.parameter_list[0].value == ParameterValue("  a & <b>\n", "xsd:string")


def test_missing_xsi_type_means_string_and_types_are_canonical() -> None:
    body = envelope(
        "<cwmp:GetParameterValuesResponse><ParameterList>"
        "<ParameterValueStruct><Name>A</Name><Value>x</Value></ParameterValueStruct>"
        f"<ParameterValueStruct><Name>B</Name><Value xmlns:xs='{XSD}' xsi:type='xs:unsignedint'>7</Value>"
        "</ParameterValueStruct>"
        "<ParameterValueStruct><Name>C</Name><Value xsi:type='boolean'>TRUE</Value></ParameterValueStruct>"
        "<ParameterValueStruct><Name>D</Name><Value xsi:type='xsd:float'>1.5</Value></ParameterValueStruct>"
        "</ParameterList></cwmp:GetParameterValuesResponse>"
    )
    result = message(body)
    assert isinstance(result, m.GetParameterValuesResponse)
    assert [p.value for p in result.parameter_list] == [
        ParameterValue("x", "xsd:string"),
        ParameterValue("7", "xsd:unsignedInt"),
        ParameterValue("true", "xsd:boolean"),
        ParameterValue("1.5", "xsd:float"),
    ]


def test_missing_xmlns_xsi_declaration() -> None:
    body = envelope(
        "<cwmp:GetParameterValuesResponse><ParameterList soap-enc:arrayType='cwmp:ParameterValueStruct[1]'>"
        "<ParameterValueStruct><Name>A</Name><Value xsi:type='xsd:boolean'>0</Value></ParameterValueStruct>"
        "</ParameterList></cwmp:GetParameterValuesResponse>",
        decl=False,
    )
    result = message(body)
    assert isinstance(result, m.GetParameterValuesResponse)
    assert result.parameter_list[0].value == ParameterValue("false", "xsd:boolean")


def test_gpv_response_without_value_element() -> None:
    body = envelope(
        "<cwmp:GetParameterValuesResponse><ParameterList>"
        "<ParameterValueStruct><Name>Device.X</Name></ParameterValueStruct>"
        "</ParameterList></cwmp:GetParameterValuesResponse>"
    )  # Cisco SPA122, genieacs#317
    assert message(body) == m.GetParameterValuesResponse((m.ParameterValueStruct("Device.X", ParameterValue()),))


def test_event_struct_without_event_code_and_device_id_extras() -> None:
    body = envelope(
        "<cwmp:Inform><DeviceId><Manufacturer/><OUI>00AABB</OUI><ProductClass>P</ProductClass>"
        "<SerialNumber>S</SerialNumber><WanIPAddress>10.0.0.1</WanIPAddress></DeviceId>"
        "<Event><EventStruct><CommandKey>k</CommandKey></EventStruct></Event>"
        "<MaxEnvelopes>1</MaxEnvelopes><CurrentTime>2026-01-01T00:00:00</CurrentTime><RetryCount>3</RetryCount>"
        "<ParameterList/><X_VENDOR_Extra>1</X_VENDOR_Extra></cwmp:Inform>"
    )
    inform = message(body)
    assert inform == m.Inform(
        m.DeviceId("", "00AABB", "P", "S"), (m.EventStruct("", "k"),), 1, "2026-01-01T00:00:00", 3, ()
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", True),
        ("true", True),
        ("TRUE", True),
        (" True ", True),
        ("0", False),
        ("false", False),
        ("False", False),
        ("", False),
    ],
)
def test_inbound_booleans_any_case(text: str, expected: bool) -> None:
    body = envelope(
        f"<cwmp:GetParameterNames><ParameterPath>A.</ParameterPath><NextLevel>{text}</NextLevel></cwmp:GetParameterNames>"
    )
    assert message(body) == m.GetParameterNames("A.", expected)


@pytest.mark.parametrize("literal", list(BooleanLiteral))
def test_outbound_boolean_literal_applies_to_fields_and_values(literal: BooleanLiteral) -> None:
    rpc = m.SetParameterAttributes((m.SetParameterAttributesStruct("A", True, 2, False, ()),))
    spv = m.SetParameterValues((m.ParameterValueStruct("B", ParameterValue.boolean(True)),), "k")
    on, off = ("1", "0") if literal is BooleanLiteral.ONE_ZERO else ("true", "false")
    attrs = build_envelope(rpc, cwmp_ns=CWMP_NS_1_0, cwmp_id="1", boolean_literal=literal)
    assert f"<NotificationChange>{on}</NotificationChange>".encode() in attrs
    assert f"<AccessListChange>{off}</AccessListChange>".encode() in attrs
    values = build_envelope(spv, cwmp_ns=CWMP_NS_1_0, cwmp_id="1", boolean_literal=literal)
    assert f'<Value xsi:type="xsd:boolean">{on}</Value>'.encode() in values
    assert message(values) == spv and message(attrs) == rpc


def test_change_du_state_operations_by_xsi_type_and_by_content() -> None:
    body = envelope(
        "<cwmp:ChangeDUState>"
        "<Operations xsi:type='cwmp:UninstallOpStruct'><UUID>u1</UUID></Operations>"
        "<Operations><URL>http://x/du</URL></Operations>"  # no xsi:type: Install has a URL
        "<Operations><UUID>u2</UUID></Operations>"  # only a UUID: Uninstall
        "<Operations><UUID>u3</UUID><Version>2</Version><URL>http://x/2</URL></Operations>"  # Update
        "<CommandKey>ck</CommandKey></cwmp:ChangeDUState>",
        ns=CWMP_NS_1_2,
    )
    assert message(body) == m.ChangeDUState(
        (
            m.UninstallOpStruct("u1"),
            m.InstallOpStruct("http://x/du"),
            m.UninstallOpStruct("u2"),
            m.UpdateOpStruct("u3", "2", "http://x/2"),
        ),
        "ck",
    )


# ---------------------------------------------------------------------------------------
# Faults (T19, T22)
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("faultcode", ["Client", "soap:Client", " SOAP-ENV:Client "])
def test_fault_code_prefix_is_dropped(faultcode: str) -> None:
    body = envelope(
        f"<soap:Fault><faultcode>{faultcode}</faultcode><faultstring>CWMP fault</faultstring>"
        "<detail><cwmp:Fault><FaultCode>9005</FaultCode><FaultString>Invalid parameter name</FaultString>"
        "</cwmp:Fault></detail></soap:Fault>"
    )
    env = parse_envelope(body)
    assert env.message == CwmpFault(9005, "Invalid parameter name", (), "Client", "CWMP fault")
    assert env.method == "Fault"


def test_soap_fault_without_cwmp_detail() -> None:
    body = envelope("<soap:Fault><faultcode>Server</faultcode><faultstring>boom</faultstring></soap:Fault>")
    fault = message(body)
    assert fault == CwmpFault(0, "boom", (), "Server", "boom")


def test_built_fault_shape_and_round_trip() -> None:
    fault = CwmpFault.from_code(
        9003, set_parameter_values_faults=[SetParameterValuesFault("Device.A", 9007, "Invalid parameter value")]
    )
    body = build_fault(fault, cwmp_ns=CWMP_NS_1_2, cwmp_id="x1")
    root = etree.fromstring(body)
    soap_fault = root[1][0]
    assert soap_fault.tag == f"{{{SOAP}}}Fault"
    assert [c.tag for c in soap_fault] == ["faultcode", "faultstring", "detail"]
    assert (soap_fault[0].text, soap_fault[1].text) == ("Client", "CWMP fault")
    assert soap_fault[2][0].tag == f"{{{CWMP_NS_1_2}}}Fault"
    env = parse_envelope(body)
    assert env == Envelope(CWMP_NS_1_2, Header("x1"), fault)


def test_acs_fault_8000_is_server_and_8003_client() -> None:
    assert CwmpFault.from_code(8000).faultcode == "Server"
    assert CwmpFault.from_code(8003).faultcode == "Client"
    assert CwmpFault.from_code(8000).string == "Method not supported"
    assert CwmpFault.from_code(8850).faultcode == "Server" and CwmpFault.from_code(8850).string == ""


# ---------------------------------------------------------------------------------------
# Strict errors
# ---------------------------------------------------------------------------------------


def test_not_xml() -> None:
    with pytest.raises(NotXml):
        parse_envelope(b"<soap:Envelope><unclosed>")
    with pytest.raises(NotXml, match="empty"):
        parse_envelope(b"  \r\n")


def test_not_a_soap_envelope() -> None:
    with pytest.raises(NotSoapEnvelope):
        parse_envelope(b"<html><body>hello</body></html>")
    with pytest.raises(NotSoapEnvelope):
        parse_envelope(b"<Envelope xmlns='urn:not-soap'><Body/></Envelope>")


def test_no_body_keeps_the_id() -> None:
    body = (
        f"<s:Envelope xmlns:s='{SOAP}' xmlns:cwmp='{CWMP_NS_1_0}'>"
        "<s:Header><cwmp:ID>9</cwmp:ID></s:Header></s:Envelope>"
    )
    with pytest.raises(MissingBody) as info:
        parse_envelope(body.encode())
    assert info.value.cwmp_id == "9"


def test_empty_body_means_no_message() -> None:
    assert parse_envelope(envelope("")) == Envelope(CWMP_NS_1_0, Header("7"), None)


def test_unknown_method_keeps_name_id_and_namespace() -> None:
    with pytest.raises(UnknownMethod) as info:
        parse_envelope(envelope("<cwmp:X_ACME_Frobnicate><A>1</A></cwmp:X_ACME_Frobnicate>", ns=CWMP_NS_1_3))
    error = info.value
    assert (error.method, error.cwmp_id, error.cwmp_ns) == ("X_ACME_Frobnicate", "7", CWMP_NS_1_3)
    assert isinstance(error, MalformedEnvelope)
    fault = build_fault(CwmpFault.from_code(8000), cwmp_ns=error.cwmp_ns or "", cwmp_id=error.cwmp_id)
    assert parse_envelope(fault) == Envelope(CWMP_NS_1_3, Header("7"), CwmpFault.from_code(8000))


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ("<cwmp:Inform><Event/></cwmp:Inform>", "DeviceId"),
        ("<cwmp:Inform><DeviceId><OUI>001122</OUI></DeviceId></cwmp:Inform>", "DeviceId/SerialNumber"),
        ("<cwmp:AddObjectResponse><Status>0</Status></cwmp:AddObjectResponse>", "InstanceNumber"),
        (
            "<cwmp:GetParameterNamesResponse><ParameterList><ParameterInfoStruct><Writable>1</Writable>"
            "</ParameterInfoStruct></ParameterList></cwmp:GetParameterNamesResponse>",
            "ParameterList/ParameterInfoStruct/Name",
        ),
        (
            "<cwmp:SetParameterValues><ParameterList><ParameterValueStruct><Value>1</Value>"
            "</ParameterValueStruct></ParameterList></cwmp:SetParameterValues>",
            "ParameterList/ParameterValueStruct/Name",
        ),
    ],
)
def test_missing_required_field(body: str, path: str) -> None:
    with pytest.raises(MissingField) as info:
        parse_envelope(envelope(body))
    assert info.value.path == path
    assert info.value.cwmp_id == "7"


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (
            "<cwmp:Inform><DeviceId><OUI>1</OUI><SerialNumber>s</SerialNumber></DeviceId><RetryCount>abc</RetryCount></cwmp:Inform>",
            "RetryCount",
        ),
        ("<cwmp:GetParameterNames><ParameterPath/><NextLevel>yes</NextLevel></cwmp:GetParameterNames>", "NextLevel"),
        (
            "<cwmp:AddObjectResponse><InstanceNumber>1</InstanceNumber><Status>x</Status></cwmp:AddObjectResponse>",
            "Status",
        ),
        (
            "<soap:Fault><detail><cwmp:Fault><FaultCode>90x</FaultCode></cwmp:Fault></detail></soap:Fault>",
            "Fault/FaultCode",
        ),
    ],
)
def test_invalid_field_value(body: str, path: str) -> None:
    with pytest.raises(InvalidField) as info:
        parse_envelope(envelope(body))
    assert info.value.path == path


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (  # 2**64: the FaultCode that made the orchestrator drop its event with OverflowError
            "<soap:Fault><detail><cwmp:Fault><FaultCode>18446744073709551616</FaultCode></cwmp:Fault></detail></soap:Fault>",
            "Fault/FaultCode",
        ),
        (
            "<soap:Fault><detail><cwmp:Fault><FaultCode>9003</FaultCode><SetParameterValuesFault><ParameterName>a"
            "</ParameterName><FaultCode>4294967296</FaultCode></SetParameterValuesFault></cwmp:Fault></detail></soap:Fault>",
            "Fault/SetParameterValuesFault/FaultCode",
        ),
        (
            "<cwmp:Inform><DeviceId><OUI>1</OUI><SerialNumber>s</SerialNumber></DeviceId>"
            f"<RetryCount>{'9' * 5000}</RetryCount></cwmp:Inform>",
            "RetryCount",
        ),
        ("<cwmp:AddObjectResponse><InstanceNumber>1</InstanceNumber><Status>-2147483649</Status></cwmp:AddObjectResponse>",
         "Status"),
    ],
    ids=["fault-code-2**64", "spv-fault-code-2**32", "retry-count-5000-digits", "status-below-int"],
)
def test_numbers_beyond_xs_int_and_unsigned_int_are_refused(body: str, path: str) -> None:
    with pytest.raises(InvalidField) as info:
        parse_envelope(envelope(body))
    assert info.value.path == path
    assert len(str(info.value)) < 200  # the offending text is quoted in bounded form only


def test_numbers_at_the_edges_of_the_ranges_are_kept() -> None:
    fault = message(envelope("<soap:Fault><detail><cwmp:Fault><FaultCode>4294967295</FaultCode>"
                             "</cwmp:Fault></detail></soap:Fault>"))
    assert isinstance(fault, CwmpFault) and fault.code == 2**32 - 1
    status = message(envelope("<cwmp:AddObjectResponse><InstanceNumber>0004294967295</InstanceNumber>"
                              "<Status>-2147483648</Status></cwmp:AddObjectResponse>"))
    assert status == m.AddObjectResponse(2**32 - 1, -(2**31))


def test_dicts_with_numbers_out_of_range_are_refused() -> None:
    with pytest.raises(ValueError, match=r"Fault\.code"):
        rpc_from_dict({"method": "Fault", "code": 2**64, "string": ""})
    with pytest.raises(ValueError, match="retry_count"):
        rpc_from_dict({"method": "Inform", "device_id": {"oui": "1", "serial_number": "s"}, "retry_count": -(2**40)})


def test_two_cwmp_id_headers_are_refused() -> None:
    two = "<cwmp:ID soap:mustUnderstand='1'>1</cwmp:ID><cwmp:ID soap:mustUnderstand='1'>2</cwmp:ID>"
    with pytest.raises(DuplicateHeader, match="two cwmp:ID"):
        parse_envelope(envelope("<cwmp:GetRPCMethods/>", header=two))
    assert issubclass(DuplicateHeader, MalformedEnvelope)


def test_empty_numbers_are_tolerated_as_zero() -> None:
    body = envelope("<cwmp:DownloadResponse><Status/><StartTime/><CompleteTime/></cwmp:DownloadResponse>")
    assert message(body) == m.DownloadResponse(0, "", "")


def test_hostile_input_surfaces_as_envelope_errors() -> None:
    with pytest.raises(UnsafeXml):
        parse_envelope(b"<!DOCTYPE x [<!ENTITY a 'b'>]>" + envelope("<cwmp:GetRPCMethods/>"))
    with pytest.raises(EnvelopeLimitExceeded) as info:
        parse_envelope(envelope("<cwmp:GetRPCMethods/>"), limits=XmlLimits(max_bytes=100))
    assert info.value.limit == "max_bytes"


# ---------------------------------------------------------------------------------------
# Charsets and control characters
# ---------------------------------------------------------------------------------------

LATIN1_SPV = (
    "<cwmp:SetParameterValues><ParameterList><ParameterValueStruct><Name>A</Name>"
    "<Value xsi:type='xsd:string'>caf\u00e9</Value></ParameterValueStruct></ParameterList>"
    "<ParameterKey/></cwmp:SetParameterValues>"
)


def _first_value(body: bytes, content_type: str | None = None) -> str:
    result = parse_envelope(body, content_type).message
    assert isinstance(result, m.SetParameterValues)
    return result.parameter_list[0].value.value


def test_iso_8859_1_from_the_http_charset() -> None:  # Thomson
    body = envelope(LATIN1_SPV).decode().encode("iso-8859-1")
    assert _first_value(body, "text/xml;charset=ISO-8859-1") == "caf\u00e9"
    assert _first_value(body, 'text/xml; charset="iso-8859-1"') == "caf\u00e9"


def test_xml_declaration_wins_over_the_http_charset() -> None:
    body = b"<?xml version='1.0' encoding='ISO-8859-1'?>" + envelope(LATIN1_SPV).decode().encode("iso-8859-1")
    assert _first_value(body, "text/xml; charset=utf-8") == "caf\u00e9"
    utf8 = b"<?xml version='1.0' encoding='UTF-8'?>" + envelope(LATIN1_SPV)
    assert _first_value(utf8, "text/xml; charset=iso-8859-1") == "caf\u00e9"


def test_undeclared_latin1_falls_back() -> None:
    body = envelope(LATIN1_SPV).decode().encode("iso-8859-1")
    assert _first_value(body) == "caf\u00e9"


def test_utf16_with_bom() -> None:
    body = ("<?xml version='1.0' encoding='UTF-16'?>" + envelope(LATIN1_SPV).decode()).encode("utf-16")
    assert _first_value(body) == "caf\u00e9"


def test_invalid_control_characters_are_stripped() -> None:  # genieacs#76
    body = envelope(LATIN1_SPV.replace("caf\u00e9", "a\x01b&#2;c&#x1b;d\x7fe")).decode().encode()
    assert _first_value(body) == "abcd\x7fe"


def test_unknown_charset_is_not_xml() -> None:
    with pytest.raises(NotXml, match="charset"):
        parse_envelope(envelope(LATIN1_SPV), "text/xml; charset=x-no-such-charset")


# ---------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------


def test_built_request_shape() -> None:
    rpc = m.SetParameterValues(
        [
            m.ParameterValueStruct("Device.A", ParameterValue("1", "xsd:unsignedInt")),
            m.ParameterValueStruct("Device.B", ParameterValue("x")),
        ],
        "pk",
    )
    body = build_envelope(rpc, cwmp_ns=CWMP_NS_1_0, cwmp_id="r1")
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    root = etree.fromstring(body)
    method = root[1][0]
    assert method.prefix == "cwmp" and method.tag == f"{{{CWMP_NS_1_0}}}SetParameterValues"
    assert all(etree.QName(child).namespace is None for child in method.iter() if child is not method)
    plist = method[0]
    assert plist.get(f"{{{ENC}}}arrayType") == "cwmp:ParameterValueStruct[2]"
    assert plist.get(f"{{{XSI}}}type") is None  # xsi:type="soap-enc:Array" would break XSD validation
    assert [v.get(f"{{{XSI}}}type") for v in plist.iter("Value")] == ["xsd:unsignedInt", "xsd:string"]
    names = build_envelope(m.GetParameterValues(["A", "B", "C"]), cwmp_ns=CWMP_NS_1_0, cwmp_id="r2")
    assert b'<ParameterNames soap-enc:arrayType="xsd:string[3]"><string>A</string>' in names


def test_built_output_is_ascii_and_round_trips_any_xml_text() -> None:
    text = "caf\u00e9 \u2603 \U0001f600 & < > \" ' \r\n\t"
    rpc = m.SetParameterValues((m.ParameterValueStruct(text, ParameterValue(text)),), text)
    body = build_envelope(rpc, cwmp_ns=CWMP_NS_1_0, cwmp_id=text)
    assert body.isascii()
    env = parse_envelope(body)
    assert env.message == rpc and env.header.id == text


@pytest.mark.parametrize(
    ("rpc", "kwargs", "match"),
    [
        (m.Reboot("a\x00b"), {}, "cannot represent"),
        (m.Reboot("k"), {"cwmp_ns": 'urn:evil"><x'}, "not a cwmp namespace"),
        (m.SetParameterValues((m.ParameterValueStruct("A", ParameterValue("1", 'xsd:int" x="')),)), {}, "xsi:type"),
        (m.ScheduleInform("60", "k"), {}, "must be int"),  # type: ignore[arg-type]
        (m.GetParameterNames("A", 1), {}, "must be bool"),  # type: ignore[arg-type]
        (m.Reboot(None), {}, "is None"),  # type: ignore[arg-type]
    ],
)
def test_build_refuses_what_it_cannot_write_faithfully(rpc: m.CwmpMessage, kwargs: dict[str, str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_envelope(rpc, **{"cwmp_ns": CWMP_NS_1_0, "cwmp_id": "1", **kwargs})  # type: ignore[arg-type]


def test_optional_elements_are_omitted_when_none() -> None:
    rpc = m.ChangeDUState((m.InstallOpStruct("http://x"),), None)
    body = build_envelope(rpc, cwmp_ns=CWMP_NS_1_2, cwmp_id="1")
    assert b"CommandKey" not in body and b"UUID" not in body
    assert b'<Operations xsi:type="cwmp:InstallOpStruct"><URL>http://x</URL></Operations>' in body
    assert message(body) == rpc


def test_session_headers_for_a_simulated_cpe() -> None:
    inform = m.Inform(m.DeviceId("M", "001122", "P", "S"), (m.EventStruct("1 BOOT"),))
    body = build_envelope(
        inform, cwmp_ns=CWMP_NS_1_2, cwmp_id="1", session_timeout=45, supported_cwmp_versions="1.0,1.4"
    )
    assert b'<cwmp:SessionTimeout soap-env:mustUnderstand="0">45</cwmp:SessionTimeout>' in body
    env = parse_envelope(body)
    assert env.header == Header("1", session_timeout=45, supported_cwmp_versions="1.0,1.4")
    assert env.message == inform


def test_is_empty_body() -> None:
    assert is_empty_body(b"") and is_empty_body(b" \r\n\t") and not is_empty_body(b"<a/>")
