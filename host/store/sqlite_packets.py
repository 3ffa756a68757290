"""The in-flight journal's table in SQLite (host.connector.ports.ClearingJournal).

One row per packet that moved money through this host: written as pending (``resolution``
NULL) before a forwarded Prepare goes out, resolved in the transaction that applies the
packet's balance changes; a packet delivered here is written already resolved, with its
fulfillment, so that its sender can ask about it (``peer.outcome``). The functions run in the
store's writer or reader thread, on its connection; the caller owns the transaction.
"""

from __future__ import annotations

import sqlite3

from host.clearing_records import InFlight, Resolution
from host.ilp.outcome import Outcome
from host.store.rows import PACKET_COLUMNS, outcome_from_row, packet_from_row, packet_values

#: The migration that adds the table (appended to a store's MIGRATIONS).
MIGRATION: tuple[str, ...] = (
    # WITHOUT ROWID: the key is the table's own order, no second index to write per packet.
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
    ) WITHOUT ROWID
    """,
    "CREATE INDEX packets_by_source ON packets (source, source_id)",
    # Read at start-up only; forgetting old packets (hourly) scans the table instead of
    # keeping an index of resolution times up to date on every packet.
    "CREATE INDEX packets_unresolved ON packets (created_at) WHERE resolution IS NULL",
)


def journal(c: sqlite3.Connection, packet: InFlight, now: float) -> None:
    """Record ``packet`` as pending (a replay of its key changes nothing)."""
    c.execute(
        f"INSERT INTO packets ({PACKET_COLUMNS}, resolution, fulfillment, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, x'', ?) ON CONFLICT (key) DO NOTHING",
        (*packet_values(packet, str), now),
    )


def resolution_of(c: sqlite3.Connection, key: str) -> Resolution | None:
    """How the packet ``key`` ended (None: pending, or not recorded)."""
    row = c.execute("SELECT resolution FROM packets WHERE key = ?", (key,)).fetchone()
    return None if row is None or row[0] is None else Resolution(row[0])


def resolve(
    c: sqlite3.Connection,
    packet: InFlight,
    resolution: Resolution,
    fulfillment: bytes,
    now: float,
) -> None:
    """Record how ``packet`` ended (inserting it if it was never journaled)."""
    c.execute(
        f"INSERT INTO packets ({PACKET_COLUMNS}, resolution, fulfillment, created_at, resolved_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET "
        "resolution = excluded.resolution, fulfillment = excluded.fulfillment, "
        "resolved_at = excluded.resolved_at WHERE packets.resolution IS NULL",
        (*packet_values(packet, str), resolution.value, fulfillment, now, now),
    )


def unresolved(c: sqlite3.Connection) -> list[InFlight]:
    """The pending packets, oldest first."""
    rows = c.execute(
        f"SELECT {PACKET_COLUMNS} FROM packets WHERE resolution IS NULL ORDER BY created_at"
    ).fetchall()
    return [packet_from_row(row) for row in rows]


def outcome(c: sqlite3.Connection, source: str, source_id: bytes) -> Outcome:
    """What peer ``source`` is told of its packet ``source_id``."""
    row = c.execute(
        "SELECT resolution, fulfillment FROM packets WHERE source = ? AND source_id = ?",
        (source, source_id),
    ).fetchone()
    return outcome_from_row(row)


def forget(c: sqlite3.Connection, resolved_before: float) -> int:
    """Delete the packets resolved before ``resolved_before``; how many went."""
    return c.execute(
        "DELETE FROM packets WHERE resolution IS NOT NULL AND resolved_at < ?", (resolved_before,)
    ).rowcount
