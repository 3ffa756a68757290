"""Running settled totals per account in SQLite: what Store.settled_totals answers in one read.

Settlements are never deleted and their amounts never change, so an account's totals (the sum
of its outgoing settlements, the sum of its incoming ones) only grow, each by the amount of a
settlement when it is recorded. The store adds that amount in the statement group that inserts
the settlement, inside the same transaction, so the totals and the rows they sum commit
together. Amounts are decimal TEXT of any length (SQLite's INTEGER is 64-bit), so the addition
is Python's, never SQL's.

The functions run on the store's writer connection; the caller owns the transaction.
"""

from __future__ import annotations

import sqlite3

from host.engine.model import Direction


def _create(c: sqlite3.Connection) -> None:
    c.execute(
        """
        CREATE TABLE settled_totals (
            account_id TEXT PRIMARY KEY REFERENCES accounts (id),
            outgoing   TEXT NOT NULL,
            incoming   TEXT NOT NULL
        ) WITHOUT ROWID
        """
    )


def recount(c: sqlite3.Connection) -> None:
    """Sum the settlements the database holds, from scratch (the migration; a tool that wrote
    settlement rows behind the store's back)."""
    c.execute("DELETE FROM settled_totals")
    totals: dict[str, list[int]] = {}
    rows = c.execute("SELECT account_id, direction, amount FROM settlements")
    while batch := rows.fetchmany(10_000):
        for account_id, direction, amount in batch:
            sums = totals.setdefault(account_id, [0, 0])
            sums[direction == Direction.INCOMING.value] += int(amount)
    c.executemany(
        "INSERT INTO settled_totals (account_id, outgoing, incoming) VALUES (?, ?, ?)",
        [(account_id, str(out), str(into)) for account_id, (out, into) in totals.items()],
    )


#: The migration that adds the table and counts what is there (appended to MIGRATIONS).
MIGRATION = (_create, recount)


def add(c: sqlite3.Connection, account_id: str, direction: Direction, amount: int) -> None:
    """Add a newly recorded settlement's ``amount`` to its account's total of ``direction``."""
    row = c.execute(
        "SELECT outgoing, incoming FROM settled_totals WHERE account_id = ?", (account_id,)
    ).fetchone()
    outgoing, incoming = (0, 0) if row is None else (int(row[0]), int(row[1]))
    if direction is Direction.INCOMING:
        incoming += amount
    else:
        outgoing += amount
    c.execute(
        "INSERT INTO settled_totals (account_id, outgoing, incoming) VALUES (?, ?, ?) "
        "ON CONFLICT (account_id) DO UPDATE SET outgoing = excluded.outgoing, "
        "incoming = excluded.incoming",
        (account_id, str(outgoing), str(incoming)),
    )


def read(c: sqlite3.Connection, account_id: str) -> tuple[int, int]:
    """An account's totals: (outgoing, incoming); zeros for an account without settlements."""
    row = c.execute(
        "SELECT outgoing, incoming FROM settled_totals WHERE account_id = ?", (account_id,)
    ).fetchone()
    return (0, 0) if row is None else (int(row[0]), int(row[1]))
