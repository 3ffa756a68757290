"""``--log-format json``: one JSON object per log line, for log shippers.

Keys: ``@timestamp`` (RFC 3339, UTC), ``@level`` (hclog's names: trace..error), ``@message``,
``logger``; then every structured field the record carries: the ones the host adds
(``settlement_id``, ``account``, ...) and, for an adaptor's output (host.supervisor.logs), the
adaptor's own fields as it wrote them (``@module`` included) next to ``adaptor`` and ``stream``.
A field never replaces one of the four keys above; a traceback is in ``exception``.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

#: The attributes every LogRecord has: not structured fields.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
#: host.supervisor.logs' bookkeeping: ``fields`` is spread out, the rest renamed or dropped.
_ADAPTOR_KEYS = frozenset({"fields", "adaptor_message"})
_LEVELS = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warn",
    logging.ERROR: "error",
    logging.CRITICAL: "error",
}


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        attributes = vars(record)
        message = attributes.get("adaptor_message")
        line: dict[str, Any] = {
            "@timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="microseconds"
            ),
            "@level": _LEVELS.get(record.levelno, record.levelname.lower()),
            "@message": message if isinstance(message, str) else record.getMessage(),
            "logger": record.name,
        }
        for key, value in attributes.items():
            if key not in _STANDARD and key not in _ADAPTOR_KEYS:
                line.setdefault(key, value)
        fields = attributes.get("fields")
        if isinstance(fields, dict):
            for key, value in fields.items():
                line.setdefault(str(key), value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, default=str, ensure_ascii=False)


def configure(level: str, log_format: str) -> None:
    """Log to stderr at ``level`` as ``text`` (the default) or ``json``."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler])
