"""An adaptor's output lines as structured log records.

``LineParser`` is pure: it understands hclog JSON (``@level``, ``@message``, ``@timestamp``;
every other key is a field), go-plugin style text with a ``[TRACE]``..``[ERROR]`` prefix
(optionally after a timestamp), and Go panics (after a line starting ``panic:`` every line is an
error: the goroutine dump). Anything else is kept as text at INFO. Odd JSON never raises.
``emit`` hands a record to Python logging, under ``ilp_host.adaptor.<name>``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: hclog level names (and the spellings other loggers use) to Python levels. Python has no
#: TRACE; it maps to DEBUG.
LEVELS: Mapping[str, int] = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "fatal": logging.CRITICAL,
    "critical": logging.CRITICAL,
}

_TEXT_LEVEL = re.compile(
    r"^(?:(?P<ts>\S+)\s+)?\[(?P<level>TRACE|DEBUG|INFO|WARN|WARNING|ERROR)\]\s?(?P<msg>.*)$"
)
_META_KEYS = ("@level", "@message", "@timestamp")


@dataclass(frozen=True)
class LogRecord:
    """One line of adaptor output, understood."""

    level: int
    message: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    timestamp: str = ""


class LineParser:
    """Parses the lines of one output stream; stateful only to follow a Go panic to the end."""

    def __init__(self) -> None:
        self.panicking = False

    def parse(self, line: str) -> LogRecord:
        """The record for one line (trailing newline optional)."""
        text = line.rstrip("\r\n")
        if self.panicking:
            return LogRecord(logging.ERROR, text)
        if text.startswith("panic:") or text.startswith("fatal error:"):
            self.panicking = True
            return LogRecord(logging.ERROR, text)
        if text.lstrip().startswith("{"):
            record = _parse_json(text)
            if record is not None:
                return record
        match = _TEXT_LEVEL.match(text)
        if match is not None:
            return LogRecord(
                LEVELS[match["level"].lower()], match["msg"], timestamp=match["ts"] or ""
            )
        return LogRecord(logging.INFO, text)


def _parse_json(text: str) -> LogRecord | None:
    """An hclog JSON line, or None when the line is not a JSON object."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, dict):
        return None
    level_name = value.get("@level")
    level = LEVELS.get(level_name.lower(), logging.INFO) if isinstance(level_name, str) else None
    message = value.get("@message", "")
    timestamp = value.get("@timestamp", "")
    fields = {key: item for key, item in value.items() if key not in _META_KEYS}
    return LogRecord(
        level if level is not None else logging.INFO,
        message if isinstance(message, str) else json.dumps(message),
        fields,
        timestamp if isinstance(timestamp, str) else json.dumps(timestamp),
    )


# Attributes of logging.LogRecord: a field of the same name is renamed, or logging would refuse
# the record ("Attempt to overwrite ...").
_RESERVED = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
_OURS = ("adaptor", "stream", "fields", "adaptor_timestamp", "adaptor_message")


def logger_for(adaptor: str) -> logging.Logger:
    """The logger an adaptor's output goes to."""
    return logging.getLogger(f"ilp_host.adaptor.{adaptor}")


def emit(logger: logging.Logger, adaptor: str, stream: str, record: LogRecord) -> None:
    """Log ``record``: the fields are in ``extra`` (also together as ``fields``) and, for human
    readers, appended to the message as ``key=value``."""
    if not logger.isEnabledFor(record.level):
        return
    extra: dict[str, Any] = {
        "adaptor": adaptor,
        "stream": stream,
        "fields": dict(record.fields),
        "adaptor_timestamp": record.timestamp,
        # The message without the fields appended below (JSON logs keep them apart).
        "adaptor_message": record.message,
    }
    for key, value in record.fields.items():
        if key in _OURS:
            continue
        extra[f"field_{key}" if key in _RESERVED else key] = value
    text = record.message
    if record.fields:
        text += " " + " ".join(f"{key}={_short(value)}" for key, value in record.fields.items())
    logger.log(record.level, "%s", text, extra=extra)


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 200 else text[:197] + "..."


class LineBuffer:
    """Reassembles lines from chunks of bytes (GRPCStdio sends chunks, not lines)."""

    def __init__(self, limit: int = 256 * 1024) -> None:
        self._pending = bytearray()
        self._limit = limit

    def feed(self, data: bytes) -> list[str]:
        """The complete lines ``data`` finishes, without newlines. A line longer than the limit
        is cut into pieces rather than kept without bound."""
        self._pending += data
        *complete, rest = self._pending.split(b"\n")
        self._pending = bytearray(rest)
        lines = [line.decode("utf-8", "replace").rstrip("\r") for line in complete]
        while len(self._pending) > self._limit:
            lines.append(self._pending[: self._limit].decode("utf-8", "replace"))
            del self._pending[: self._limit]
        return lines

    def flush(self) -> list[str]:
        """The unfinished last line, if any (the stream ended)."""
        rest, self._pending = self._pending, bytearray()
        return [rest.decode("utf-8", "replace").rstrip("\r")] if rest else []
