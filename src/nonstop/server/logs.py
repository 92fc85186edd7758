"""Structured logs: one JSON object per line on stderr.

Callers pass facts as ``extra={"fields": {...}}``. Nothing that could be a
secret is ever passed: no header, no request body, no token or key (only their
public ids), and database URLs go through ``db.redact_url`` first.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

LOGGER_NAME = "nonstop.server"


class JsonFormatter(logging.Formatter):
    """A record as one JSON line: ts, level, logger, pid, msg, the record's ``fields``
    merged in at top level, and the exception's traceback if any.
    """

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,  # which worker, with --workers N
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            document.update(fields)
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str)


def configure(level: int = logging.INFO) -> None:
    """Send the server's and uvicorn's logs to stderr as JSON: once in every process."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in (LOGGER_NAME, "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False


def logger(name: str = "") -> logging.Logger:
    """``nonstop.server`` or its child NAME: a logger ``configure`` sends to the JSON handler."""
    return logging.getLogger(f"{LOGGER_NAME}.{name}" if name else LOGGER_NAME)
