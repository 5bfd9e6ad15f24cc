"""Annex K stanzas: the connectionRequest validates against cwmp-xmppConnReq-1-0.xsd and reads back."""

from __future__ import annotations

from xml.etree import ElementTree as ET

import pytest
from lxml import etree

from cwmp import xmpp
from tests.unit.cwmp.cwmp_samples import XSD_DIR


def _schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(XSD_DIR / "cwmp-xmppConnReq-1-0.xsd")))


def test_the_connection_request_validates_and_reads_back() -> None:
    stanza = xmpp.build_connection_request("cr-1", "cpe-1@acs.local/cwmp", "user<&>", 'pa"ss',
                                           sender="acs@acs.local/acs")
    (request,) = etree.fromstring(stanza)
    schema = _schema()
    assert schema.validate(request), schema.error_log
    read = xmpp.read_connection_request(ET.fromstring(stanza))
    assert read == xmpp.ConnectionRequestStanza("cr-1", "acs@acs.local/acs", "user<&>", 'pa"ss')


def test_the_schema_check_is_not_vacuous() -> None:
    stanza = xmpp.build_connection_request("cr-1", "cpe@x/r", "u", "p").replace(b"<password>p</password>", b"")
    (request,) = etree.fromstring(stanza)
    assert not _schema().validate(request)


@pytest.mark.parametrize(("stanza", "condition"), [
    (xmpp.build_result("1", "acs@x/acs"), None),
    (xmpp.build_error("1", "acs@x/acs", "not-authorized", "auth"), "not-authorized"),
    (xmpp.build_error("1", "acs@x/acs", "service-unavailable", "wait"), "service-unavailable"),
    (b"<iq type='error' id='1'/>", "undefined-condition"),
])
def test_answers_read_back(stanza: bytes, condition: str | None) -> None:
    assert xmpp.read_error_condition(ET.fromstring(stanza)) == condition


def test_other_iqs_are_no_connection_request() -> None:
    ping = b"<iq type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>"
    assert xmpp.read_connection_request(ET.fromstring(ping)) is None
    assert xmpp.read_connection_request(ET.fromstring(xmpp.build_result("1", "a@b"))) is None
