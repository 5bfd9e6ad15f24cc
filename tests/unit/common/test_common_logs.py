"""Log calls whose ``extra=`` keys would overwrite a LogRecord attribute.

``logging`` raises KeyError for such a key when the record is made, that is only at a level that
is enabled: a call at INFO passes every test run at WARNING and crashes in production. The suite
runs at INFO (pyproject's log_level) to catch the calls it reaches; this walk catches the others.
"""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import pytest

from services.common.logs import JsonFormatter

REPO = Path(__file__).resolve().parents[3]
# Every attribute a record has, plus the two that Logger.makeRecord refuses by name.
RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
SOURCES = ("services", "acs", "simulator", "cwmp", "benchmarks")


def extra_keys(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, key) of every literal key given to a logging-style ``extra=`` argument."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        for keyword in node.keywords:
            if keyword.arg != "extra":
                continue
            value = keyword.value
            if isinstance(value, ast.Dict):
                found += [(node.lineno, k.value) for k in value.keys
                          if isinstance(k, ast.Constant) and isinstance(k.value, str)]
            elif isinstance(value, ast.Call) and getattr(value.func, "id", None) == "dict":
                found += [(node.lineno, k.arg) for k in value.keywords if k.arg]
    return found


def test_no_extra_key_collides_with_a_log_record_attribute() -> None:
    collisions = []
    for folder in SOURCES:
        for path in sorted((REPO / folder).rglob("*.py")):
            for line, key in extra_keys(ast.parse(path.read_text(), str(path))):
                if key in RESERVED:
                    collisions.append(f"{path.relative_to(REPO)}:{line}: extra key {key!r}")
    assert not collisions, "these keys overwrite LogRecord attributes (KeyError at that level):\n" + \
        "\n".join(collisions)


def test_the_walk_sees_the_shapes_a_collision_takes() -> None:
    tree = ast.parse('log.info("x", extra={"name": 1, "ok": 2})\nlog.warning("y", extra=dict(module="m"))')
    assert [key for _, key in extra_keys(tree) if key in RESERVED] == ["name", "module"]


def test_the_suite_makes_info_records(caplog: pytest.LogCaptureFixture) -> None:
    # What makes a colliding key crash a test that reaches it, as it would in production.
    with pytest.raises(KeyError):
        logging.getLogger("acs.test").info("created", extra={"name": "x"})


def test_json_lines_carry_the_extra_fields() -> None:
    record = logging.getLogger("acs.test").makeRecord("acs.test", logging.INFO, __file__, 1, "task %s", ("t1",),
                                                      None, extra={"device_id": "D", "key_name": "ops"})
    line = JsonFormatter("orchestrator").format(record)
    assert '"device_id": "D"' in line and '"key_name": "ops"' in line and '"message": "task t1"' in line
