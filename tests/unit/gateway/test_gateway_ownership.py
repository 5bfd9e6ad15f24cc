"""The session cookie names the instance holding the session, signed."""

from __future__ import annotations

from services.gateway.ownership import (
    forward_mark,
    is_forwarded,
    make_cookie_value,
    parse_cookie_value,
    parse_taken_over,
    taken_over_value,
)

SECRET = "a-deployment-secret-0123456789"


def test_cookie_round_trip_names_the_owner() -> None:
    value = make_cookie_value("sess_ID-1", "http://10.0.0.7:7547", SECRET)
    cookie = parse_cookie_value(value, SECRET)
    assert (cookie.session_id, cookie.owner_url) == ("sess_ID-1", "http://10.0.0.7:7547")


def test_a_forged_or_foreign_owner_is_not_trusted() -> None:
    value = make_cookie_value("s1", "http://10.0.0.7:7547", SECRET)
    session_id, _, mac = value.split(".")
    forged = f"{session_id}.aHR0cDovL2V2aWwuZXhhbXBsZQ.{mac}"  # http://evil.example
    assert parse_cookie_value(forged, SECRET).owner_url is None
    assert parse_cookie_value(value, "another-secret-0123456789").owner_url is None
    assert parse_cookie_value("plain-session-id", SECRET) == parse_cookie_value("plain-session-id", SECRET)
    assert parse_cookie_value("plain-session-id", SECRET).owner_url is None
    assert parse_cookie_value("a.!!!.b", SECRET).owner_url is None


def test_forward_mark_is_bound_to_the_session_and_the_secret() -> None:
    mark = forward_mark("s1", SECRET)
    assert is_forwarded(mark, "s1", SECRET)
    assert not is_forwarded(mark, "s2", SECRET)
    assert not is_forwarded(mark, "s1", "another-secret-0123456789")
    assert not is_forwarded(None, "s1", SECRET)


def test_a_take_over_notice_is_bound_to_the_session_and_the_secret() -> None:
    notice = taken_over_value("sess-1", SECRET)
    assert parse_taken_over(notice, SECRET) == "sess-1"
    assert parse_taken_over(notice, "another-secret-0123456789") is None
    assert parse_taken_over(notice.replace("sess-1", "sess-2"), SECRET) is None
    assert parse_taken_over(f"sess-1 {forward_mark('sess-1', SECRET)}", SECRET) is None  # another purpose
    for junk in ("", "sess-1", " x", "sess-1 \u00e9t\u00e9"):
        assert parse_taken_over(junk, SECRET) is None
