"""The pure parts of accounts, scopes and the audit trail: the sign-in decision, TOTP steps,
scope canonicalisation and the audit record's secret hiding."""

from __future__ import annotations

import json

import pyotp
import pytest

from services.common import scopes
from services.common.accounts import decide, hash_password, password_matches, totp_step
from services.common.apikeys import Principal
from services.common.audit import hide_secrets, make_record, outcome_of

NOW = 1_800_000_000.0
SECRET = pyotp.random_base32()


def user(**fields: object) -> dict[str, object]:
    return {"_id": "alice", "role": "operator", "scope": None, "failures": 0, **fields}


def test_wrong_passwords_count_up_and_lock_at_the_limit() -> None:
    decision = decide(user(failures=3), False, None, NOW, 5)
    assert decision.principal is None and decision.update == {"failures": 4}
    locking = decide(user(failures=4), False, None, NOW, 5)
    assert locking.update == {"failures": 5, "locked": True} and "locked" in locking.detail
    assert decide(user(locked=True), True, None, NOW, 5).reason == "locked"  # even with the right password


def test_unknown_and_disabled_users_are_told_what_a_wrong_password_is_told() -> None:
    assert decide(None, False, None, NOW, 5).detail == decide(user(), False, None, NOW, 5).detail
    assert decide(user(disabled=True), True, None, NOW, 5).detail == "wrong username or password"


def test_a_right_password_resets_the_count_and_gives_the_users_scope() -> None:
    decision = decide(user(failures=2, scope='{"tags":"a"}'), True, None, NOW, 5)
    assert decision.principal == Principal("alice", "operator", '{"tags":"a"}', "alice")
    assert decision.update["failures"] == 0


def test_totp_needs_a_current_unused_code() -> None:
    enrolled = user(totp_enabled=True, totp_secret=SECRET, totp_last_step=None)
    assert decide(enrolled, True, None, NOW, 5).reason == "code-needed"
    code = pyotp.TOTP(SECRET).at(NOW)
    ok = decide(enrolled, True, code, NOW, 5)
    assert ok.principal is not None and ok.update["totp_last_step"] == int(NOW // 30)
    replay = decide({**enrolled, "totp_last_step": int(NOW // 30)}, True, code, NOW, 5)
    assert replay.reason == "wrong-code" and replay.update == {"failures": 1}
    assert totp_step(pyotp.TOTP(SECRET).at(NOW - 30), SECRET, NOW, None) == int(NOW // 30) - 1  # skew
    assert totp_step(pyotp.TOTP(SECRET).at(NOW - 90), SECRET, NOW, None) is None
    assert totp_step("12345a", SECRET, NOW, None) is None


def test_argon2id_hashes() -> None:
    stored = hash_password("a long password")
    assert stored.startswith("$argon2id$") and password_matches(stored, "a long password")
    assert not password_matches(stored, "a long passwore") and not password_matches(None, "anything")


def test_scopes_are_canonical_and_narrow_queries() -> None:
    assert scopes.canonical({"tags": "partner-a"}) == '{"tags":"partner-a"}'
    assert scopes.canonical('{ "oui" : "00259E" }') == '{"oui":"00259E"}'
    for bad in ({}, "[1]", '{"$where": "1"}', "not json"):
        with pytest.raises(scopes.ScopeError):
            scopes.canonical(bad)
    scoped = Principal("a", "operator", '{"tags":"partner-a"}')
    assert scopes.job_query(scoped, {"oui": "1"}) == {"$and": [{"tags": "partner-a"}, {"oui": "1"}]}
    assert scopes.job_query(scoped, {}) == {"tags": "partner-a"}
    assert scopes.job_query(Principal("b", "admin"), {"oui": "1"}) == {"oui": "1"}


def test_audit_records_hide_every_secret() -> None:
    body = {"username": "a", "password": "p1", "new_password": "p2", "current_password": "p3", "totp_code": "1",
            "api_key": "k", "parameter_values": [{"name": "Device.X.Password", "value": "p4"},
                                                 ["Device.WiFi.KeyPassphrase", "p5"]]}
    record = make_record("orchestrator", None, "10.0.0.1", "POST", "/api/v1/x", [("api_key", "p6")],
                         json.dumps(body).encode(), 10, 401)
    dumped = record.model_dump_json()
    for secret in ("p1", "p2", "p3", "p4", "p5", "p6", '"k"'):
        assert secret not in dumped, secret
    assert record.body["username"] == "a" and record.outcome == "refused"
    assert hide_secrets({"code": "", "note": "x"}) == {"code": "", "note": "x"}
    assert [outcome_of(s) for s in (200, 204, 401, 403, 404, 409, 500)] == [
        "ok", "ok", "refused", "refused", "refused", "failed", "failed"]
    big = make_record("inventory", None, None, "POST", "/api/v1/credentials", [], b"x", 10**6, 200)
    assert big.body is None and big.body_bytes == 10**6
