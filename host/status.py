"""What ``ilp-host status`` prints: the adaptor table and one-line change notes. Pure.

Works on the admin API's messages (what the CLI receives), with ``now`` passed in so that
ages are testable::

    NAME      KIND               STATE    SINCE  PID    ATTEMPTS  LAST ERROR
    memory    adaptor            SERVING  12s    4242   0         -
      host    host-channel       READY    12s    -      0         -
      ledger  settlement-system  READY    11s    -      0         -
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from sdk.pb.ilphost.admin.v1 import admin_pb2
from sdk.pb.ilphost.types.v1 import types_pb2

HEADER = ("NAME", "KIND", "STATE", "SINCE", "PID", "ATTEMPTS", "LAST ERROR")
EMPTY = "-"


def format_age(seconds: float) -> str:
    """A short age: ``12s``, ``3m04s``, ``2h05m``, ``3d04h`` (negative clock skew: ``0s``)."""
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def process_state_name(state: int) -> str:
    """``SERVING`` for PROCESS_STATE_SERVING; the number if the value is unknown."""
    return _enum_name(admin_pb2.ProcessState, state, "PROCESS_STATE_")


def connectivity_name(state: int) -> str:
    """``READY`` for CONNECTIVITY_STATE_READY; the number if the value is unknown."""
    return _enum_name(types_pb2.ConnectivityState, state, "CONNECTIVITY_STATE_")


def _enum_name(enum: object, value: int, prefix: str) -> str:
    try:
        name: str = enum.Name(value)  # type: ignore[attr-defined]
    except ValueError:
        return str(value)
    return name.removeprefix(prefix)


def _age(since: Timestamp, has_since: bool, now: datetime) -> str:
    if not has_since:
        return EMPTY
    return format_age((now - since.ToDatetime(tzinfo=now.tzinfo)).total_seconds())


def one_line(text: str) -> str:
    """``text`` on one line (errors may span several), ``-`` if empty."""
    return " ".join(text.split()) or EMPTY


def status_rows(adaptors: Sequence[admin_pb2.Adaptor], now: datetime) -> list[tuple[str, ...]]:
    """The table's rows (header first): each adaptor, then its connections indented."""
    rows: list[tuple[str, ...]] = [HEADER]
    for adaptor in adaptors:
        rows.append(
            (
                adaptor.name,
                "adaptor",
                process_state_name(adaptor.state),
                _age(adaptor.since, adaptor.HasField("since"), now),
                str(adaptor.pid) if adaptor.pid else EMPTY,
                str(adaptor.attempts),
                one_line(adaptor.last_error),
            )
        )
        for connection in adaptor.connections:
            rows.append(
                (
                    f"  {connection.name}",
                    connection.kind or EMPTY,
                    connectivity_name(connection.state),
                    _age(connection.since, connection.HasField("since"), now),
                    EMPTY,
                    str(connection.attempts),
                    one_line(connection.last_error),
                )
            )
    return rows


def render_table(rows: Sequence[tuple[str, ...]]) -> str:
    """Rows as left-aligned columns two spaces apart; the last column is not padded."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


def render_status(adaptors: Sequence[admin_pb2.Adaptor], now: datetime) -> str:
    """The whole status table, or a note when no adaptor is configured."""
    if not adaptors:
        return "no adaptors configured"
    return render_table(status_rows(adaptors, now))


def describe_change(before: admin_pb2.Adaptor | None, after: admin_pb2.Adaptor) -> list[str]:
    """One line per difference between two states of an adaptor (``--watch`` output).

    ``before`` None means the adaptor is seen for the first time. An error is shown when it is
    new, not repeated on every later line; a new timestamp alone gives no line, so a watch that
    repeats the current state prints nothing.
    """
    name = after.name
    state = process_state_name(after.state)
    if before is None:
        return [f"{name}: {state}{_details(after, None)}"]
    lines = []
    if before.state != after.state:
        old = process_state_name(before.state)
        lines.append(f"{name}: {old} -> {state}{_details(after, before)}")
    elif before.pid != after.pid:
        lines.append(f"{name}: pid {before.pid or EMPTY} -> {after.pid or EMPTY}")
    elif before.last_error != after.last_error and after.last_error:
        lines.append(f"{name}: {state}, error: {_short(after.last_error)}")
    old_connections = {connection.name: connection for connection in before.connections}
    for connection in after.connections:
        old_connection = old_connections.pop(connection.name, None)
        new_state = connectivity_name(connection.state)
        new_error = old_connection is None or old_connection.last_error != connection.last_error
        error = f": {_short(connection.last_error)}" if connection.last_error and new_error else ""
        if old_connection is None:
            lines.append(f"{name}/{connection.name}: {new_state}{error}")
        elif old_connection.state != connection.state:
            old_state = connectivity_name(old_connection.state)
            lines.append(f"{name}/{connection.name}: {old_state} -> {new_state}{error}")
    lines.extend(f"{name}/{gone}: removed" for gone in old_connections)
    return lines


#: Longest error quoted in a change line; the table and --json have it whole.
MAX_ERROR_CHARS = 200


def _short(error: str) -> str:
    text = one_line(error)
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


def _details(after: admin_pb2.Adaptor, before: admin_pb2.Adaptor | None) -> str:
    parts = []
    if after.pid:
        parts.append(f"pid {after.pid}")
    if after.attempts:
        parts.append(f"attempt {after.attempts}")
    text = f" ({', '.join(parts)})" if parts else ""
    new_error = after.last_error and (before is None or before.last_error != after.last_error)
    return f"{text}: {_short(after.last_error)}" if new_error else text
