"""Minted download credentials: what they encode, what they allow, and what they refuse."""

from __future__ import annotations

import re

import pytest

from cwmp.digest import DigestClient, DigestServer
from services.common.settings import Settings
from services.fileserver.credentials import (
    MAX_USERNAME_LENGTH,
    InvalidDownloadCredentials,
    _base36,
    check_download_password,
    check_download_username,
    download_password,
    download_url,
    file_tag,
    mint_download_credentials,
)

NOW = 1_700_000_000.0


@pytest.fixture
def settings() -> Settings:
    return Settings(secret_key="unit-test-secret-key", files_public_url="https://files.example.net:7567/")


def test_fileserver_minted_pair_is_for_one_file_one_device_until_expiry(settings: Settings) -> None:
    username, password = mint_download_credentials(settings, "fw-2.0.bin", "00D09E-Box-SN1", 600, now=NOW)
    assert username.isascii() and ":" not in username and '"' not in username
    assert password == download_password(settings, username)
    assert len(password) == 24

    grant = check_download_username(username, "fw-2.0.bin", now=NOW + 599)
    assert (grant.device_id, grant.expires_at) == ("00D09E-Box-SN1", int(NOW + 600))
    with pytest.raises(InvalidDownloadCredentials, match="another file"):
        check_download_username(username, "fw-2.1.bin", now=NOW)
    with pytest.raises(InvalidDownloadCredentials, match="expired"):
        check_download_username(username, "fw-2.0.bin", now=NOW + 601)


def test_fileserver_password_depends_on_secret_and_every_username_field(settings: Settings) -> None:
    username, password = mint_download_credentials(settings, "fw.bin", "dev", 600, now=NOW)
    other_secret = settings.model_copy(update={"secret_key": "another-secret-key"})
    assert download_password(other_secret, username) != password
    # Changing the expiry (or any field) in the username breaks the password.
    later, _ = mint_download_credentials(settings, "fw.bin", "dev", 6000, now=NOW)
    assert check_download_password(settings, username, password)
    assert not check_download_password(settings, later, password)
    assert not check_download_password(settings, username, password[:-1])


UNRESERVED = re.compile(r"[A-Za-z0-9._~-]+")  # RFC 3986: safe to paste into http://user:pass@host/


def test_fileserver_device_ids_round_trip_through_the_username(settings: Settings) -> None:
    for device in ("00D09E-Some%20Box-SN.1", "A-B-C:d\"e", "00D09E-Box-ünïcode", "a~b%7E_c", "x" * 70):
        username, password = mint_download_credentials(settings, "fw.bin", device, now=NOW)
        assert UNRESERVED.fullmatch(username) and UNRESERVED.fullmatch(password)
        assert check_download_username(username, "fw.bin", now=NOW).device_id == device
    anonymous, _ = mint_download_credentials(settings, "fw.bin", None, now=NOW)
    assert check_download_username(anonymous, "fw.bin", now=NOW).device_id is None


def test_fileserver_username_names_the_device_readably_without_a_percent_sign(settings: Settings) -> None:
    username, _ = mint_download_credentials(settings, "fw.bin", "00D09E-easy%20cwmp-SN1", now=NOW)
    assert username.startswith("dl2.") and username.endswith(".00D09E-easy~2520cwmp-SN1")
    assert "%" not in username


def test_fileserver_usernames_minted_before_are_still_accepted(settings: Settings) -> None:
    """dl1 (device id percent-encoded) from an orchestrator not yet upgraded, within its life."""
    legacy = f"dl1.{_base36(int(NOW) + 600)}.{file_tag('fw.bin')}.00D09E-easy%2520cwmp-SN1"
    assert check_download_username(legacy, "fw.bin", now=NOW).device_id == "00D09E-easy%20cwmp-SN1"


@pytest.mark.parametrize("device", ["a%20b", "a~2", "a~zz", "a~c3", "a~C3", "a b"])
def test_fileserver_escaped_device_ids_that_escape_device_id_cannot_produce_are_refused(device: str) -> None:
    username = f"dl2.{_base36(int(NOW) + 600)}.{file_tag('fw.bin')}.{device}"
    with pytest.raises(InvalidDownloadCredentials, match="malformed device id"):
        check_download_username(username, "fw.bin", now=NOW)


def test_fileserver_minting_refuses_what_a_download_rpc_cannot_carry(settings: Settings) -> None:
    with pytest.raises(ValueError, match="256"):
        mint_download_credentials(settings, "fw.bin", "x" * MAX_USERNAME_LENGTH)
    with pytest.raises(ValueError):
        mint_download_credentials(settings, "", "dev")
    with pytest.raises(ValueError):
        mint_download_credentials(settings, "fw.bin", "dev", ttl=0)


@pytest.mark.parametrize("username", ["", "testcpe", "dl1.x", "dl2.abc.tag.dev", "dl1.!!.tag.dev"])
def test_fileserver_foreign_usernames_are_refused(username: str) -> None:
    with pytest.raises(InvalidDownloadCredentials):
        check_download_username(username, "fw.bin", now=NOW)


def test_fileserver_download_url_escapes_the_name(settings: Settings) -> None:
    assert download_url(settings, "fw 1.0/+ü.bin") == \
        "https://files.example.net:7567/download/fw%201.0%2F%2B%C3%BC.bin"


def test_fileserver_minted_pair_works_with_a_digest_client(settings: Settings) -> None:
    """The pair as a CPE uses it: Digest MD5 against the server's lookup of our password."""
    username, password = mint_download_credentials(settings, "fw.bin", "dev", 600)
    server = DigestServer("files", "0123456789abcdef0123")
    client = DigestClient(username, password)
    header = client.authorization("GET", "/download/fw.bin", server.challenge())
    result = server.verify("GET", "/download/fw.bin", header, lambda name: download_password(settings, name))
    assert result.ok and result.username == username
