"""The in-flight journal's table in SQLite (host.connector.ports.ClearingJournal).

One row per packet that moved money through this host: written as pending (``resolution``
NULL) before a forwarded Prepare goes out, resolved in the transaction that applies the
packet's balance changes; a packet delivered here is written already resolved, with its
fulfillment, so that its sender can ask about it (``peer.outcome``). The functions run in the
store's writer or reader thread, on its connection; the caller owns the transaction.
"""

from __future__ import annotations

import sqlite3

from host.connector.ports import STATUS_OF_RESOLUTION, InFlight, Resolution
from host.ilp.outcome import Outcome, Status

#: The migration that adds the table (appended to a store's MIGRATIONS).
MIGRATION: tuple[str, ...] = (
    """
    CREATE TABLE packets (
        key         TEXT PRIMARY KEY,
        source      TEXT,
        source_id   BLOB NOT NULL,
        target      TEXT,
        target_id   BLOB NOT NULL,
        amount      TEXT NOT NULL,
        expires_at  REAL NOT NULL,
        condition   BLOB NOT NULL,
        resolution  TEXT CHECK (resolution IN ('fulfilled', 'forwarded', 'rejected')),
        fulfillment BLOB NOT NULL,
        created_at  REAL NOT NULL,
        resolved_at REAL
    )
    """,
    "CREATE INDEX packets_by_source ON packets (source, source_id)",
    "CREATE INDEX packets_unresolved ON packets (created_at) WHERE resolution IS NULL",
    "CREATE INDEX packets_resolved ON packets (resolved_at) WHERE resolution IS NOT NULL",
)

_COLUMNS = "key, source, source_id, target, target_id, amount, expires_at, condition"


def _values(packet: InFlight) -> tuple[object, ...]:
    p = packet
    return (
        p.key,
        p.source,
        p.source_id,
        p.target,
        p.target_id,
        str(p.amount),
        p.expires_at,
        p.condition,
    )


def journal(c: sqlite3.Connection, packet: InFlight, now: float) -> None:
    """Record ``packet`` as pending (a replay of its key changes nothing)."""
    c.execute(
        f"INSERT INTO packets ({_COLUMNS}, resolution, fulfillment, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, x'', ?) ON CONFLICT (key) DO NOTHING",
        (*_values(packet), now),
    )


def is_resolved(c: sqlite3.Connection, key: str) -> bool:
    """Whether the packet ``key`` is recorded as resolved."""
    row = c.execute("SELECT resolution FROM packets WHERE key = ?", (key,)).fetchone()
    return row is not None and row[0] is not None


def resolve(
    c: sqlite3.Connection,
    packet: InFlight,
    resolution: Resolution,
    fulfillment: bytes,
    now: float,
) -> None:
    """Record how ``packet`` ended (inserting it if it was never journaled)."""
    c.execute(
        f"INSERT INTO packets ({_COLUMNS}, resolution, fulfillment, created_at, resolved_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET "
        "resolution = excluded.resolution, fulfillment = excluded.fulfillment, "
        "resolved_at = excluded.resolved_at WHERE packets.resolution IS NULL",
        (*_values(packet), resolution.value, fulfillment, now, now),
    )


def unresolved(c: sqlite3.Connection) -> list[InFlight]:
    """The pending packets, oldest first."""
    rows = c.execute(
        f"SELECT {_COLUMNS} FROM packets WHERE resolution IS NULL ORDER BY created_at"
    ).fetchall()
    return [
        InFlight(key, source, bytes(sid), target, bytes(tid), int(amount), float(at), bytes(cond))
        for key, source, sid, target, tid, amount, at, cond in rows
    ]


def outcome(c: sqlite3.Connection, source: str, source_id: bytes) -> Outcome:
    """What peer ``source`` is told of its packet ``source_id``."""
    row = c.execute(
        "SELECT resolution, fulfillment FROM packets WHERE source = ? AND source_id = ?",
        (source, source_id),
    ).fetchone()
    if row is None:
        return Outcome(Status.UNKNOWN)
    if row[0] is None:
        return Outcome(Status.PENDING)
    status = STATUS_OF_RESOLUTION[Resolution(row[0])]
    return Outcome(status, bytes(row[1]) if status == Status.FULFILLED else b"")


def forget(c: sqlite3.Connection, resolved_before: float) -> int:
    """Delete the packets resolved before ``resolved_before``; how many went."""
    return c.execute(
        "DELETE FROM packets WHERE resolution IS NOT NULL AND resolved_at < ?", (resolved_before,)
    ).rowcount
