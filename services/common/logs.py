"""Structured JSON logs, one object per line, with device and session ids when known.

Call sites pass context with ``extra={"device_id": ..., "session_id": ...}``; any such field is
copied into the JSON object. Credentials are never passed to a logger; should one be, the fields
go through services.common.redaction (secret parameter values, ``password``-like keys) on the way.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from services.common import redaction

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        # Whatever a call site passed, no secret parameter value or credential leaves as a log line.
        entry = redaction.redact(entry)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's own handlers would print plain text beside ours.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "aiokafka"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
