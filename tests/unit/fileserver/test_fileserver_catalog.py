"""File names and metadata that the catalog accepts or refuses."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.fileserver.catalog import FileMetadata, validate_file_name


@pytest.mark.parametrize("file_type", ["1 Firmware Upgrade Image", "3 Vendor Configuration File",
                                       "6 Stored Firmware Image", "X 00D09E Profile", "X ACME Dial Plan"])
def test_fileserver_tr069_file_types_are_accepted(file_type: str) -> None:
    assert FileMetadata(file_type=file_type).file_type == file_type


@pytest.mark.parametrize("file_type", ["", "Firmware", "7 Something", "1 firmware upgrade image", "X 00D09E",
                                       "X " + "a" * 70])
def test_fileserver_other_file_types_are_refused(file_type: str) -> None:
    with pytest.raises(ValidationError):
        FileMetadata(file_type=file_type)


def test_fileserver_oui_is_normalised_and_checked() -> None:
    assert FileMetadata(file_type="2 Web Content", oui="00d09e").oui == "00D09E"
    assert FileMetadata(file_type="2 Web Content", oui="").oui is None
    with pytest.raises(ValidationError):
        FileMetadata(file_type="2 Web Content", oui="00D09")


@pytest.mark.parametrize("name", ["fw.bin", "fw 1.0 (beta).bin", "ünïcode.img", "a" * 255])
def test_fileserver_valid_file_names(name: str) -> None:
    assert validate_file_name(name) == name


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a\\b", "line\nbreak", " padded", "a" * 256])
def test_fileserver_invalid_file_names(name: str) -> None:
    with pytest.raises(ValueError):
        validate_file_name(name)
