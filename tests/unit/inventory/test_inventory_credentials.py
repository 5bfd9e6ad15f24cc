"""CPE credential import parsing and HA1 derivation (no database)."""

from __future__ import annotations

import hashlib

from services.inventory.credentials import Row, ha1, rows_from_csv, rows_from_json


def test_ha1_matches_the_rfc_2617_example_and_its_sha256_twin() -> None:
    assert ha1("Mufasa", "testrealm@host.com", "Circle Of Life", "md5") == "939e7578ed9e3c518a452acee763bce9"
    assert ha1("Mufasa", "http-auth@example.org", "Circle of Life", "sha256") == hashlib.sha256(
        b"Mufasa:http-auth@example.org:Circle of Life").hexdigest()


def test_json_rows_take_device_id_as_the_username_by_default() -> None:
    rows, errors = rows_from_json([{"device_id": "00259E-Box-1", "password": "p1"},
                                   {"username": "cpe2", "password": "p2"},
                                   {"username": "cpe3", "device_id": "00259E-Box-3", "password": "p3"}])
    assert errors == []
    assert rows == [Row("00259E-Box-1", "p1", "00259E-Box-1"), Row("cpe2", "p2", None),
                    Row("cpe3", "p3", "00259E-Box-3")]
    assert rows_from_json({"credentials": [{"username": "u", "password": "p"}]})[0] == [Row("u", "p", None)]


def test_json_errors_name_the_row() -> None:
    rows, errors = rows_from_json([{"password": "p"}, {"username": "u"}, "x",
                                   {"username": "u", "password": "p"}, {"username": "u", "password": "q"},
                                   {"username": "a\nb", "password": "p"}])
    assert [(e.row, e.error) for e in errors] == [
        (1, "device_id or username is required"), (2, "password is required"), (3, "expected an object"),
        (5, "username 'u' already given in row 4"), (6, "username and device_id must be printable")]
    assert rows == [Row("u", "p", None)]
    assert rows_from_json("nope")[1][0].error.startswith("expected a list")


def test_csv_with_a_header_and_a_spreadsheet_row_number_in_errors() -> None:
    rows, errors = rows_from_csv("device_id,password\n00259E-Box-1,secret\n00259E-Box-2,\n")
    assert rows == [Row("00259E-Box-1", "secret", "00259E-Box-1")]
    assert [(e.row, e.error) for e in errors] == [(3, "password is required")]
    assert rows_from_csv("serial,pw\nA,B\n")[1][0].error.startswith("the header must name")


def test_imports_are_bounded() -> None:
    from services.inventory import credentials

    rows, errors = credentials.rows_from_json(
        [{"username": f"u{i}", "password": "p"} for i in range(credentials.MAX_ROWS + 1)])
    assert len(rows) == credentials.MAX_ROWS
    assert [(e.row, e.error) for e in errors] == [
        (credentials.MAX_ROWS + 1, "more than 100000 rows; split the import")]
