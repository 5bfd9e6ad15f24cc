"""Settings: URLs that point at a service follow its port setting unless set explicitly."""

from __future__ import annotations

import pytest

from services.common.settings import Settings


def test_the_default_urls_are_the_default_ports() -> None:
    settings = Settings()
    assert (settings.orchestrator_url, settings.inventory_url, settings.fileserver_url,
            settings.files_public_url) == ("http://127.0.0.1:7560", "http://127.0.0.1:7561",
                                           "http://127.0.0.1:7562", "http://127.0.0.1:7567")


def test_moving_a_port_moves_the_urls_that_point_at_it(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in (("ORCHESTRATOR_PORT", "8560"), ("INVENTORY_PORT", "8561"), ("FILESERVER_PORT", "8562"),
                        ("DOWNLOADS_PORT", "8567")):
        monkeypatch.setenv(f"ACS_{name}", value)
    settings = Settings()
    assert (settings.orchestrator_url, settings.inventory_url, settings.fileserver_url,
            settings.files_public_url) == ("http://127.0.0.1:8560", "http://127.0.0.1:8561",
                                           "http://127.0.0.1:8562", "http://127.0.0.1:8567")


def test_an_explicit_url_wins_over_the_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACS_INVENTORY_PORT", "8561")
    monkeypatch.setenv("ACS_INVENTORY_URL", "http://inventory:7561")
    monkeypatch.setenv("ACS_FILES_PUBLIC_URL", "https://files.example.net")
    settings = Settings()
    assert settings.inventory_url == "http://inventory:7561"
    assert settings.files_public_url == "https://files.example.net"
    assert Settings(fileserver_port=9562).fileserver_url == "http://127.0.0.1:9562"
