"""The SQLite schema, as an ordered list of migrations, and the function that applies them.

Version N of the schema is the result of applying ``MIGRATIONS[0..N-1]`` in order; the
``schema_version`` table holds N. Each migration runs in its own transaction together with the
version bump, so a crash mid-migration leaves the previous version intact. Released migrations
are never edited: a change is a new migration appended at the end. A database whose version is
higher than ``len(MIGRATIONS)`` was written by a newer host and is refused.

A migration step is an SQL statement or, where SQL cannot do the work (sums of amounts past 64
bits), a function of the connection, run inside the migration's transaction.

Amounts are TEXT holding a base-10 integer (SQLite's INTEGER is 64-bit; amounts are not);
times are REAL seconds since the epoch.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence

from host.store import sqlite_packets, sqlite_totals
from host.store.base import SchemaTooNew

Migration = tuple[str | Callable[[sqlite3.Connection], None], ...]

_V1: Migration = (
    """
    CREATE TABLE accounts (
        id                TEXT PRIMARY KEY,
        adaptor           TEXT NOT NULL,
        asset_code        TEXT NOT NULL,
        asset_scale       INTEGER NOT NULL,
        ledger_scale      INTEGER NOT NULL,
        settle_threshold  TEXT NOT NULL,
        settle_to         TEXT NOT NULL,
        min_balance       TEXT NOT NULL,
        max_balance       TEXT NOT NULL,
        balance           TEXT NOT NULL,
        outgoing_leftover TEXT NOT NULL,
        incoming_leftover TEXT NOT NULL,
        liquidity         TEXT,
        created_at        REAL NOT NULL,
        updated_at        REAL NOT NULL
    )
    """,
    "CREATE INDEX accounts_by_adaptor ON accounts (adaptor)",
    # seq: insertion order for "newest first" (an explicit INTEGER PRIMARY KEY, because VACUUM
    # may renumber an implicit rowid).
    """
    CREATE TABLE settlements (
        seq                  INTEGER PRIMARY KEY AUTOINCREMENT,
        id                   TEXT NOT NULL UNIQUE,
        account_id           TEXT NOT NULL REFERENCES accounts (id),
        adaptor              TEXT NOT NULL,
        direction            TEXT NOT NULL CHECK (direction IN ('outgoing', 'incoming')),
        state                TEXT NOT NULL
            CHECK (state IN ('pending', 'submitted', 'completed', 'failed', 'credited')),
        amount               TEXT NOT NULL,
        ledger_amount        TEXT NOT NULL,
        ledger_settlement_id TEXT NOT NULL,
        attempts             INTEGER NOT NULL,
        last_error           TEXT NOT NULL,
        next_attempt_at      REAL,
        lease_until          REAL,
        created_at           REAL NOT NULL,
        updated_at           REAL NOT NULL
    )
    """,
    "CREATE INDEX settlements_by_account ON settlements (account_id, seq)",
    """
    CREATE INDEX settlements_outbox ON settlements (next_attempt_at)
        WHERE state IN ('pending', 'submitted', 'credited')
    """,
    """
    CREATE INDEX settlements_unfinished ON settlements (account_id)
        WHERE direction = 'outgoing' AND state IN ('pending', 'submitted', 'failed')
    """,
    """
    CREATE TABLE idempotency (
        scope      TEXT NOT NULL,
        key        TEXT NOT NULL,
        account_id TEXT NOT NULL,
        request    TEXT NOT NULL,
        result     TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (scope, key)
    )
    """,
    "CREATE INDEX idempotency_by_age ON idempotency (created_at)",
)

# Version 2: the journal of clearing effects, for an engine whose connector keeps its own copy of
# the balances (proposal 2). seq keeps the push order.
_V2: Migration = (
    """
    CREATE TABLE clearing_effects (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        key        TEXT NOT NULL UNIQUE,
        account_id TEXT NOT NULL REFERENCES accounts (id),
        delta      TEXT NOT NULL,
        created_at REAL NOT NULL
    )
    """,
)

# Version 3: the connector's in-flight journal (host.store.sqlite_packets), in the store that
# keeps the clearing balances (proposal 1).
_V3: Migration = sqlite_packets.MIGRATION

# Version 4: each account's running settled totals (host.store.sqlite_totals), so that a
# reconciliation reads two numbers instead of summing every settlement of the account.
_V4: Migration = sqlite_totals.MIGRATION

#: Every migration, oldest first. Append only.
MIGRATIONS: tuple[Migration, ...] = (_V1, _V2, _V3, _V4)


def schema_version(conn: sqlite3.Connection) -> int:
    """The database's schema version (0 for a new, empty database)."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if exists is None:
        return 0
    row = conn.execute("SELECT version FROM schema_version").fetchone()
    return 0 if row is None else int(row[0])


def migrate(conn: sqlite3.Connection, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Bring the database up to ``len(migrations)``; the version it was at.

    ``conn`` must be in autocommit mode (``isolation_level=None``). Raises SchemaTooNew, leaving
    the database untouched, if the database is newer than ``migrations``.
    """
    target = len(migrations)
    conn.execute("BEGIN IMMEDIATE")  # one migrator at a time
    try:
        start = schema_version(conn)
        if start > target:
            raise SchemaTooNew(
                f"the database has schema version {start} but this host knows only up to "
                f"{target}: it was written by a newer host; upgrade this host or use another file"
            )
        if start == 0:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            conn.execute("INSERT INTO schema_version (version) VALUES (0)")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    for version in range(start + 1, target + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for step in migrations[version - 1]:
                if isinstance(step, str):
                    conn.execute(step)
                else:
                    step(conn)
            conn.execute("UPDATE schema_version SET version = ?", (version,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return start
