"""Tolerant HTTP helpers and the device id convention."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cwmp.httputil import (
    ContentType,
    DeviceIdParts,
    decode_component,
    encode_component,
    format_set_cookie,
    is_empty_body,
    make_device_id,
    parse_content_type,
    parse_cookie_header,
    parse_device_id,
    username_matches_device,
)

# ---------------------------------------------------------------------------------------------
# Cookies
# ---------------------------------------------------------------------------------------------

SESSION = "B14B23B3B6912A3C9814648387507201"
# The seed capture: RFC 2965 attributes and the CPE appending TR069SessionID once more per request.
SEED_COOKIE_FIRST = '$Version=0;JSESSIONID="8CE5C5B7B2F7263AE16FA0F42BFC8F22";$Path="/comserver/"'
SEED_COOKIE_SIX = (
    '$Version="1";JSESSIONID="8CE5C5B7B2F7263AE16FA0F42BFC8F22";$Path="/comserver/";'
    + ";".join([f'TR069SessionID="{SESSION}"'] * 6)
)


def test_seed_cookie_with_version_and_path() -> None:
    assert parse_cookie_header(SEED_COOKIE_FIRST) == {"JSESSIONID": "8CE5C5B7B2F7263AE16FA0F42BFC8F22"}


def test_seed_cookie_with_six_repeated_session_ids() -> None:
    assert SEED_COOKIE_SIX.count("TR069SessionID") == 6
    assert parse_cookie_header(SEED_COOKIE_SIX) == {
        "JSESSIONID": "8CE5C5B7B2F7263AE16FA0F42BFC8F22",
        "TR069SessionID": SESSION,
    }


def test_first_duplicate_wins() -> None:
    assert parse_cookie_header("s=first; s=second, s=third") == {"s": "first"}


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, {}),
        ("", {}),
        ("   ", {}),
        ("session=s48fd9177d10c", {"session": "s48fd9177d10c"}),  # easycwmp
        ("a=1; b=2", {"a": "1", "b": "2"}),
        ("a=1;b=2", {"a": "1", "b": "2"}),
        ("a=1, b=2", {"a": "1", "b": "2"}),  # RFC 2965 comma separator
        ("a=1 ,b=2 ;; ,c=3", {"a": "1", "b": "2", "c": "3"}),
        ('a="x;y,z"; b=2', {"a": "x;y,z", "b": "2"}),  # separators inside quotes
        ('a="with \\"escaped\\" quote"', {"a": 'with "escaped" quote'}),
        ("a = 1 ; b= two words ", {"a": "1", "b": "two words"}),
        ("token=abc==; x=1", {"token": "abc==", "x": "1"}),  # "=" inside a value
        ("a=", {"a": ""}),
        ('a=""', {"a": ""}),
        ("bare; a=1", {"a": "1"}),  # pair without "=" is ignored
        ('a="unterminated', {"a": "unterminated"}),
        ('a="x"junk; b=2', {"a": "x", "b": "2"}),
        ("$Version=1; Customer=WILE; $Path=/acme; $Domain=.acme.com; $Port=80", {"Customer": "WILE"}),
        ("=nameless; a=1", {"a": "1"}),
        ("Name=1; name=2", {"Name": "1", "name": "2"}),  # names are case-sensitive
    ],
)
def test_parse_cookie_header(header: str | None, expected: dict[str, str]) -> None:
    assert parse_cookie_header(header) == expected


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_parse_cookie_header_never_raises(header: str) -> None:
    result = parse_cookie_header(header)
    assert all(not name.startswith("$") for name in result)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.text(alphabet="abcXYZ_019", min_size=1, max_size=8),
        st.text(alphabet="abcdef0123456789-_.ABC", max_size=20),
        max_size=5,
    )
)
def test_set_cookie_round_trips_through_cookie_header(cookies: dict[str, str]) -> None:
    header = "; ".join(format_set_cookie(k, v).split(";")[0] for k, v in cookies.items())
    assert parse_cookie_header(header) == cookies


def test_format_set_cookie() -> None:
    assert format_set_cookie("session", "abc") == "session=abc; Path=/; HttpOnly"
    assert (
        format_set_cookie("s", "v", path="/acs", max_age=30, http_only=False, secure=True, same_site="Lax")
        == "s=v; Path=/acs; Max-Age=30; Secure; SameSite=Lax"
    )


@pytest.mark.parametrize(
    ("name", "value", "kwargs"),
    [
        ("", "v", {}),
        ("a=b", "v", {}),
        ("a;b", "v", {}),
        ("s", "has space", {}),
        ("s", 'quo"te', {}),
        ("s", "semi;colon", {}),
        ("s", "v", {"path": "/x;Secure"}),
        ("s", "v", {"same_site": "Lax; Domain=evil"}),
    ],
)
def test_format_set_cookie_rejects_injection(name: str, value: str, kwargs: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        format_set_cookie(name, value, **kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Content-Type
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "media_type", "charset"),
    [
        ('text/xml; charset="utf-8"', "text/xml", "utf-8"),  # easycwmp, cwmp-sim
        ("text/xml; charset=utf-8", "text/xml", "utf-8"),
        ("text/xml;charset=ISO-8859-1", "text/xml", "iso-8859-1"),  # the seed's ACS, Thomson
        ("text/xml", "text/xml", None),
        ("TEXT/XML ; CHARSET = UTF-8 ;", "text/xml", "utf-8"),
        ("text/html", "text/html", None),  # easycwmp on some builds
        ("application/soap+xml; charset=utf-8; action=urn:x", "application/soap+xml", "utf-8"),
        ("application/xml", "application/xml", None),
        ('text/xml; charset="utf-8', "text/xml", "utf-8"),  # unbalanced quote
        ('text/xml; foo="a;b"; charset=utf-8', "text/xml", "utf-8"),  # ";" inside quotes
        ("text/xml; charset=", "text/xml", None),
        ("text/xml; junk; charset=utf-8", "text/xml", "utf-8"),
        ("; charset=utf-8", None, "utf-8"),
        (None, None, None),
        ("", None, None),
        ("   ", None, None),
    ],
)
def test_parse_content_type(header: str | None, media_type: str | None, charset: str | None) -> None:
    parsed = parse_content_type(header)
    assert parsed.media_type == media_type
    assert parsed.charset == charset


@pytest.mark.parametrize(
    ("header", "compatible"),
    [
        (None, True),  # freeacs#186: no Content-Type at all
        ("text/xml", True),
        ("text/html; charset=utf-8", True),
        ("application/soap+xml", True),
        ("application/xml", True),
        ("application/vnd.custom+xml", True),
        ("application/json", False),
        ("multipart/form-data; boundary=x", False),
    ],
)
def test_is_soap_compatible(header: str | None, compatible: bool) -> None:
    assert parse_content_type(header).is_soap_compatible is compatible


def test_content_type_codec_and_params() -> None:
    parsed = parse_content_type('text/xml; charset="ISO-8859-1"; Boundary="a\\"b"')
    assert parsed.codec == "iso8859-1"
    assert parsed.params == {"charset": "ISO-8859-1", "boundary": 'a"b'}
    assert parse_content_type("text/xml; charset=no-such-charset").codec is None
    assert parse_content_type("text/xml").codec is None
    assert ContentType(None).is_absent


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_parse_content_type_never_raises(header: str) -> None:
    parse_content_type(header)


# ---------------------------------------------------------------------------------------------
# Empty POST
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "empty"),
    [
        (None, True),
        (b"", True),
        (b"\r\n", True),
        (b"  \t\r\n  ", True),
        (bytearray(b" "), True),
        (memoryview(b"\n"), True),
        (b"<", False),
        (b" <soap:Envelope/> ", False),
        (b"\x00", False),
        ("\ufeff".encode(), False),  # a BOM alone is not whitespace; let the XML parser judge it
    ],
)
def test_is_empty_body(body: bytes | bytearray | memoryview | None, empty: bool) -> None:
    assert is_empty_body(body) is empty


# ---------------------------------------------------------------------------------------------
# Device id
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("oui", "product_class", "serial", "device_id"),
    [
        ("00236A", "IGD", "SN123", "00236A-IGD-SN123"),
        ("00236A", None, "SN123", "00236A-SN123"),
        ("00236A", "", "SN123", "00236A-SN123"),
        ("00236A", "IGD-1", "AB-12", "00236A-IGD%2D1-AB%2D12"),
        ("00236A", "Box 2.0", "a/b%c", "00236A-Box%202%2E0-a%2Fb%25c"),
        ("00236A", "Modèle", "é", "00236A-Mod%C3%A8le-%C3%A9"),
        ("0014BF", "under_score", "tab\t", "0014BF-under_score-tab%09"),
    ],
)
def test_make_device_id_matches_genieacs_encoding(
    oui: str, product_class: str | None, serial: str, device_id: str
) -> None:
    assert make_device_id(oui, product_class, serial) == device_id
    assert parse_device_id(device_id) == DeviceIdParts(oui, product_class or None, serial)


@pytest.mark.parametrize(
    "device_id",
    ["", "nohyphen", "a-b-c-d", "a-%G1", "a-%4", "a-%", "a-%C3", "a-b-%FF"],
)
def test_parse_device_id_rejects(device_id: str) -> None:
    with pytest.raises(ValueError):
        parse_device_id(device_id)


def test_decode_component_is_lenient_about_case_and_unencoded_chars() -> None:
    assert decode_component("%c3%a9 x.y") == "é x.y"
    assert encode_component("é x.y") == "%C3%A9%20x%2Ey"


components = st.text(max_size=20)
product_classes = st.one_of(st.none(), st.text(min_size=1, max_size=20))


@settings(max_examples=300, deadline=None)
@given(components, product_classes, components)
def test_device_id_round_trip(oui: str, product_class: str | None, serial: str) -> None:
    device_id = make_device_id(oui, product_class, serial)
    assert device_id.count("-") == (2 if product_class else 1)
    assert device_id.isascii()
    assert parse_device_id(device_id) == DeviceIdParts(oui, product_class, serial)
    # Canonical ids survive parse -> make unchanged.
    parts = parse_device_id(device_id)
    assert make_device_id(parts.oui, parts.product_class, parts.serial) == device_id


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=20))
def test_component_round_trip(value: str) -> None:
    encoded = encode_component(value)
    assert "-" not in encoded
    assert decode_component(encoded) == value


# ---------------------------------------------------------------------------------------------
# Username convention (A2 / S2)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "username",
    [
        "00236A-IGD-SN123",  # OUI-ProductClass-Serial
        "00236A-SN123",  # OUI-Serial
        "00236a-IGD-SN123",  # OUI hex in lower case
        "00236A-%49GD-SN%31%32%33",  # needless but valid escapes
    ],
)
def test_username_matches_both_forms(username: str) -> None:
    assert username_matches_device(username, "00236A", "IGD", "SN123")


@pytest.mark.parametrize(
    "username",
    [
        "00236A-IGD-SN124",
        "00236B-IGD-SN123",
        "00236A-IGX-SN123",
        "00236A-IGD-SN123-extra",
        "00236A-IGD",
        "00236A",
        "00236AIGDSN123",
        "",
        "-IGD-SN123",
        "00236A-igd-SN123",  # only the OUI is case-insensitive
        "00236A-IGD-sn123",
        "00236A-IGD-SN%3",
        "00236A-" + "-" * 100 + "SN123",
        "x" * 2000,
    ],
)
def test_username_mismatches(username: str) -> None:
    assert not username_matches_device(username, "00236A", "IGD", "SN123")


def test_username_with_special_characters_encoded_or_not() -> None:
    # The spec's own example: é is sent as %C3%A9 after UTF-8 conversion.
    assert username_matches_device("00236A-Mod%C3%A8le-S%C3%A9rie", "00236A", "Modèle", "Série")
    # Serial numbers with "-": CPEs rarely encode it, so both spellings must match.
    assert username_matches_device("00236A-IGD-AB-12-34", "00236A", "IGD", "AB-12-34")
    assert username_matches_device("00236A-IGD-AB%2D12%2D34", "00236A", "IGD", "AB-12-34")
    assert username_matches_device("00236A-AB-12-34", "00236A", "IGD", "AB-12-34")
    assert username_matches_device("00236A-My-Box-AB-1", "00236A", "My-Box", "AB-1")
    assert username_matches_device("00236A-Box 2-SN 1", "00236A", "Box 2", "SN 1")


def test_username_without_product_class() -> None:
    assert username_matches_device("00236A-SN123", "00236A", None, "SN123")
    assert username_matches_device("00236A-SN123", "00236A", "", "SN123")
    assert not username_matches_device("00236A-IGD-SN123", "00236A", None, "SN123")


@settings(max_examples=300, deadline=None)
@given(components, product_classes, components)
def test_generated_usernames_match(oui: str, product_class: str | None, serial: str) -> None:
    assert username_matches_device(make_device_id(oui, product_class, serial), oui, product_class, serial)
    assert username_matches_device(make_device_id(oui, None, serial), oui, product_class, serial)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60), components, product_classes, components)
def test_username_matching_never_raises(username: str, oui: str, pc: str | None, serial: str) -> None:
    username_matches_device(username, oui, pc, serial)
