"""host.status: the status table and the --watch change lines, from hand-made messages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from host.pb.ilphost.admin.v1 import admin_pb2
from host.status import (
    describe_change,
    format_age,
    render_status,
    status_rows,
)
from sdk.pb.ilphost.types.v1 import types_pb2

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def connection(
    name: str, kind: str, state: int, since: datetime | None, attempts: int = 0, error: str = ""
) -> types_pb2.Connection:
    message = types_pb2.Connection(
        name=name, kind=kind, state=state, attempts=attempts, last_error=error
    )
    if since is not None:
        message.since.FromDatetime(since)
    return message


def adaptor(
    name: str,
    state: int,
    since: datetime,
    *,
    pid: int = 0,
    attempts: int = 0,
    error: str = "",
    connections: tuple[types_pb2.Connection, ...] = (),
) -> admin_pb2.Adaptor:
    message = admin_pb2.Adaptor(
        name=name,
        state=state,
        pid=pid,
        attempts=attempts,
        last_error=error,
        connections=connections,
    )
    message.since.FromDatetime(since)
    return message


SERVING = adaptor(
    "memory",
    admin_pb2.PROCESS_STATE_SERVING,
    ago(12),
    pid=4242,
    connections=(
        connection("host", "host-channel", types_pb2.CONNECTIVITY_STATE_READY, ago(12)),
        connection("ledger", "settlement-system", types_pb2.CONNECTIVITY_STATE_READY, ago(11.5)),
    ),
)
BACKOFF = adaptor(
    "xrpl",
    admin_pb2.PROCESS_STATE_BACKOFF,
    ago(3 * 60 + 4),
    attempts=3,
    error="exited with code 1 before the handshake:\n  cookie refused",
    connections=(
        connection(
            "host",
            "host-channel",
            types_pb2.CONNECTIVITY_STATE_TRANSIENT_FAILURE,
            ago(2 * 3600 + 5 * 60),
            attempts=3,
            error="connection refused",
        ),
    ),
)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.9, "0s"),
        (12, "12s"),
        (59.99, "59s"),
        (60, "1m00s"),
        (184, "3m04s"),
        (3599, "59m59s"),
        (3600, "1h00m"),
        (2 * 3600 + 5 * 60 + 59, "2h05m"),
        (86400, "1d00h"),
        (3 * 86400 + 4 * 3600 + 1, "3d04h"),
        (-5, "0s"),
    ],
)
def test_format_age(seconds: float, text: str) -> None:
    assert format_age(seconds) == text


def test_table() -> None:
    table = render_status([SERVING, BACKOFF], NOW)
    assert table.splitlines() == [
        "NAME      KIND               STATE              SINCE  PID   ATTEMPTS  LAST ERROR",
        "memory    adaptor            SERVING            12s    4242  0         -",
        "  host    host-channel       READY              12s    -     0         -",
        "  ledger  settlement-system  READY              11s    -     0         -",
        "xrpl      adaptor            BACKOFF            3m04s  -     3         "
        "exited with code 1 before the handshake: cookie refused",
        "  host    host-channel       TRANSIENT_FAILURE  2h05m  -     3         connection refused",
    ]


def test_rows_without_since_and_unknown_enum_values() -> None:
    message = admin_pb2.Adaptor(name="new", state=admin_pb2.PROCESS_STATE_STARTING)
    message.connections.append(types_pb2.Connection(name="host", state=99))
    rows = status_rows([message], NOW)
    assert rows[1] == ("new", "adaptor", "STARTING", "-", "-", "0", "-")
    assert rows[2] == ("  host", "-", "99", "-", "-", "0", "-")


def test_no_adaptors() -> None:
    assert render_status([], NOW) == "no adaptors configured"


def test_change_first_sight() -> None:
    assert describe_change(None, SERVING) == ["memory: SERVING (pid 4242)"]


def test_no_change_no_line() -> None:
    again = admin_pb2.Adaptor()
    again.CopyFrom(SERVING)
    again.since.FromDatetime(NOW)  # a new timestamp alone is not worth a line
    assert describe_change(SERVING, again) == []


def test_crash_and_connection_change() -> None:
    crashed = admin_pb2.Adaptor()
    crashed.CopyFrom(SERVING)
    crashed.state = admin_pb2.PROCESS_STATE_CRASHED
    crashed.last_error = "killed by SIGKILL"
    del crashed.connections[1]
    crashed.connections[0].state = types_pb2.CONNECTIVITY_STATE_TRANSIENT_FAILURE
    crashed.connections[0].last_error = "socket closed"
    assert describe_change(SERVING, crashed) == [
        "memory: SERVING -> CRASHED (pid 4242): killed by SIGKILL",
        "memory/host: READY -> TRANSIENT_FAILURE: socket closed",
        "memory/ledger: removed",
    ]


def test_restart_shows_the_new_pid() -> None:
    restarted = admin_pb2.Adaptor()
    restarted.CopyFrom(SERVING)
    restarted.pid = 5000
    assert describe_change(SERVING, restarted) == ["memory: pid 4242 -> 5000"]
    gone = admin_pb2.Adaptor()
    gone.CopyFrom(SERVING)
    gone.pid = 0
    assert describe_change(SERVING, gone) == ["memory: pid 4242 -> -"]


def test_an_error_is_shown_once_and_shortened() -> None:
    crashed = admin_pb2.Adaptor()
    crashed.CopyFrom(SERVING)
    crashed.state = admin_pb2.PROCESS_STATE_CRASHED
    crashed.pid = 0
    crashed.last_error = "x" * 500
    backoff = admin_pb2.Adaptor()
    backoff.CopyFrom(crashed)
    backoff.state = admin_pb2.PROCESS_STATE_BACKOFF
    backoff.attempts = 1
    [line] = describe_change(SERVING, crashed)
    assert line == "memory: SERVING -> CRASHED: " + "x" * 197 + "..."
    assert describe_change(crashed, backoff) == ["memory: CRASHED -> BACKOFF (attempt 1)"]


def test_new_error_in_the_same_state() -> None:
    later = admin_pb2.Adaptor()
    later.CopyFrom(BACKOFF)
    later.last_error = "no handshake line within 10 s"
    assert describe_change(BACKOFF, later) == [
        "xrpl: BACKOFF, error: no handshake line within 10 s"
    ]
