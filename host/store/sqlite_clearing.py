"""The connector's clearing books in one SQLite file owned by one process (host.store.clearing).

One file (WAL, synchronous=FULL, group commit through host.store.groupcommit, like the engine's
store), locked by its process (host.store.sqlitefile). Since no other process writes it, the
balances are also kept in memory (a credit check reads no disk), and so are the events written
since the engine last acknowledged: an engine that keeps up reads them from memory, not from the
file, whose one thread the packets need.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING

from host.clearing_records import BalanceChange, InFlight, Resolution
from host.ilp.outcome import Outcome
from host.store import sqlite_packets
from host.store.clearing import (
    AccountLimits,
    BalanceEvent,
    ClearingStore,
    CursorOutOfRange,
    Resolving,
    checked_balance,
    replayed,
    settled_by,
)
from host.store.sqlite_schema import Migration, migrate
from host.store.sqlitefile import SqliteFile

_V1: Migration = (
    """
    CREATE TABLE accounts (
        id          TEXT PRIMARY KEY,
        asset_scale INTEGER NOT NULL,
        min_balance TEXT NOT NULL,
        max_balance TEXT NOT NULL,
        balance     TEXT NOT NULL,
        updated_at  REAL NOT NULL
    )
    """,
    # The idempotency keys of applied changes, with their result.
    """
    CREATE TABLE changes (
        key        TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts (id),
        delta      TEXT NOT NULL,
        balance    TEXT NOT NULL,
        created_at REAL NOT NULL
    )
    """,
    "CREATE INDEX changes_by_age ON changes (created_at)",
    # AUTOINCREMENT: a cursor is never reused, even after every event was deleted.
    """
    CREATE TABLE events (
        cursor     INTEGER PRIMARY KEY AUTOINCREMENT,
        account_id TEXT NOT NULL,
        delta      TEXT NOT NULL,
        balance    TEXT NOT NULL,
        key        TEXT NOT NULL,
        created_at REAL NOT NULL
    )
    """,
    "CREATE TABLE consumer (id INTEGER PRIMARY KEY CHECK (id = 1), acknowledged INTEGER NOT NULL)",
    "INSERT INTO consumer (id, acknowledged) VALUES (1, 0)",
)
# Version 2: the in-flight journal (host.store.sqlite_packets).
# Version 3: per account, the running totals of the settlements among the changes (told apart by
# their keys, host.clearing_rules.settlement_side), for reconciliation with the peer. Counted
# from this version on: a file written before it starts them at 0.
_V3: Migration = (
    """
    CREATE TABLE settled (
        account_id  TEXT PRIMARY KEY REFERENCES accounts (id),
        settled_out TEXT NOT NULL,
        settled_in  TEXT NOT NULL
    )
    """,
)
MIGRATIONS: tuple[Migration, ...] = (_V1, sqlite_packets.MIGRATION, _V3)
#: What the file says at open: the balances, the last cursor written, the acknowledged one.
_State = tuple[dict[str, int], int, int]
#: How many unacknowledged events are kept in memory as well (beyond: read from the file).
RECENT_LIMIT = 65_536


class SqliteClearing:
    """The ClearingStore of one process's file. Use :meth:`open`."""

    shared = False

    def __init__(self, file: SqliteFile, state: _State) -> None:
        self.description = file.path
        self._file = file
        self._balances, self._last, self._acknowledged = state
        #: The events written by this process and not yet acknowledged, by cursor.
        self._recent: dict[int, BalanceEvent] = {}

    @classmethod
    async def open(
        cls, path: str | os.PathLike[str], accounts: Mapping[str, AccountLimits]
    ) -> SqliteClearing:
        """Open (creating if needed) the file at ``path`` and bring its accounts in line with
        ``accounts`` (host.connector.durable_clearing.DurableClearing.open)."""
        file, state = await SqliteFile.open(
            path, what="connector's clearing file", prepare=partial(_prepare, dict(accounts))
        )
        return cls(file, state)

    @property
    def last_cursor(self) -> int:
        return self._last

    @property
    def acknowledged(self) -> int:
        return self._acknowledged

    async def balance(self, account_id: str) -> int:
        return self._balances[account_id]

    async def exposure(self, account_id: str, delta: int) -> int:
        return self._balances[account_id]  # no other instance

    async def book(self, account_id: str) -> tuple[int, int, int]:
        balance, row = await self._file.read(
            lambda c: (
                c.execute("SELECT balance FROM accounts WHERE id = ?", (account_id,)).fetchone(),
                c.execute(
                    "SELECT settled_out, settled_in FROM settled WHERE account_id = ?",
                    (account_id,),
                ).fetchone(),
            )
        )
        out, into = (0, 0) if row is None else (int(row[0]), int(row[1]))
        return int(balance[0]), out, into

    async def apply(
        self, changes: Sequence[BalanceChange], now: float, resolving: Resolving | None
    ) -> tuple[Resolution | None, list[int]]:
        def run(c: sqlite3.Connection) -> tuple[Resolution | None, list[tuple[int, int | None]]]:
            if resolving is not None:
                earlier = sqlite_packets.resolution_of(c, resolving.packet.key)
                if earlier is not None:
                    return earlier, []
            applied = [_apply(change, now, c) for change in changes]
            if resolving is not None:
                r = resolving
                sqlite_packets.resolve(c, r.packet, r.resolution, r.fulfillment, now)
            return None, applied

        async with self._file.transaction() as context:
            earlier, applied = await context.run(run)
        for change, (balance, cursor) in zip(changes, applied, strict=False):
            self._published(change, balance, cursor)
        return earlier, [balance for balance, _ in applied]

    def _published(self, change: BalanceChange, balance: int, cursor: int | None) -> None:
        """A committed change (cursor None: a replay): only committed events are streamed."""
        if cursor is None:
            return
        self._balances[change.account_id] = balance
        self._last = max(self._last, cursor)
        if len(self._recent) < RECENT_LIMIT:
            self._recent[cursor] = BalanceEvent(
                cursor, change.account_id, change.delta, balance, change.idempotency_key
            )

    async def journal(self, packet: InFlight, now: float) -> None:
        async with self._file.transaction() as context:
            await context.run(partial(sqlite_packets.journal, packet=packet, now=now))

    async def unresolved(self) -> list[InFlight]:
        return await self._file.read(sqlite_packets.unresolved)

    async def outcome(self, source: str, source_id: bytes) -> Outcome:
        return await self._file.read(
            partial(sqlite_packets.outcome, source=source, source_id=source_id)
        )

    async def refresh_log(self) -> None:
        """Nothing to do: only this process writes the file."""

    async def events_after(self, cursor: int, limit: int) -> list[BalanceEvent]:
        wanted = range(cursor + 1, min(self._last, cursor + limit) + 1)
        if all(n in self._recent for n in wanted):
            return [self._recent[n] for n in wanted]
        rows = await self._file.read(
            lambda c: c.execute(
                "SELECT cursor, account_id, delta, balance, key FROM events WHERE cursor > ? "
                "ORDER BY cursor LIMIT ?",
                (cursor, limit),
            ).fetchall()
        )
        return [BalanceEvent(c, a, int(d), int(b), k) for c, a, d, b, k in rows]

    async def acknowledge(self, cursor: int) -> None:
        if cursor > self._last:
            raise CursorOutOfRange(f"cursor {cursor} is ahead of the log (last {self._last})")
        if cursor <= self._acknowledged:
            return
        async with self._file.transaction() as context:
            await context.run(partial(_acknowledge, cursor))
        self._acknowledged = max(self._acknowledged, cursor)
        for done in [n for n in self._recent if n <= self._acknowledged]:
            del self._recent[done]

    async def forget(self, before: float) -> int:
        def forget(c: sqlite3.Connection) -> int:
            sqlite_packets.forget(c, before)
            return c.execute("DELETE FROM changes WHERE created_at < ?", (before,)).rowcount

        async with self._file.transaction() as context:
            return await context.run(forget)

    async def close(self) -> None:
        await self._file.close()


# -- in the writer thread ---------------------------------------------------------------------


def _prepare(accounts: dict[str, AccountLimits], conn: sqlite3.Connection) -> _State:
    """At open, in the thread: migrate, bring the accounts in line with the configuration, and
    read the balances and the log's two cursors."""
    migrate(conn, MIGRATIONS)
    now = time.time()
    conn.execute("BEGIN IMMEDIATE")
    try:
        for account_id, limits in accounts.items():
            conn.execute(
                "INSERT INTO accounts (id, asset_scale, min_balance, max_balance, balance, "
                "updated_at) VALUES (?, ?, ?, ?, '0', ?) ON CONFLICT (id) DO UPDATE SET "
                "asset_scale = excluded.asset_scale, min_balance = excluded.min_balance, "
                "max_balance = excluded.max_balance",
                (
                    account_id,
                    limits.asset_scale,
                    str(limits.min_balance),
                    str(limits.max_balance),
                    now,
                ),
            )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    balances = {
        account_id: int(balance)
        for account_id, balance in conn.execute("SELECT id, balance FROM accounts")
        if account_id in accounts
    }
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
    (acked,) = conn.execute("SELECT acknowledged FROM consumer").fetchone()
    return balances, 0 if row is None else int(row[0]), int(acked)


def _apply(change: BalanceChange, now: float, c: sqlite3.Connection) -> tuple[int, int | None]:
    """(balance, new cursor), or (first balance, None) for a replay."""
    account_id, delta, key = change.account_id, change.delta, change.idempotency_key
    seen = c.execute(
        "SELECT account_id, delta, balance FROM changes WHERE key = ?", (key,)
    ).fetchone()
    if seen is not None:
        replayed(change, seen[0], int(seen[1]))
        return int(seen[2]), None
    (balance,) = c.execute("SELECT balance FROM accounts WHERE id = ?", (account_id,)).fetchone()
    balance = checked_balance(account_id, int(balance), delta)
    c.execute(
        "UPDATE accounts SET balance = ?, updated_at = ? WHERE id = ?",
        (str(balance), now, account_id),
    )
    c.execute(
        "INSERT INTO changes (key, account_id, delta, balance, created_at) VALUES (?, ?, ?, ?, ?)",
        (key, account_id, str(delta), str(balance), now),
    )
    out, into = settled_by(change)
    if out or into:
        row = c.execute(
            "SELECT settled_out, settled_in FROM settled WHERE account_id = ?", (account_id,)
        ).fetchone()
        if row is not None:
            out, into = out + int(row[0]), into + int(row[1])
        c.execute(
            "INSERT INTO settled (account_id, settled_out, settled_in) VALUES (?, ?, ?) "
            "ON CONFLICT (account_id) DO UPDATE SET settled_out = excluded.settled_out, "
            "settled_in = excluded.settled_in",
            (account_id, str(out), str(into)),
        )
    cursor = c.execute(
        "INSERT INTO events (account_id, delta, balance, key, created_at) VALUES (?, ?, ?, ?, ?)",
        (account_id, str(delta), str(balance), key, now),
    ).lastrowid
    assert cursor is not None
    return balance, cursor


def _acknowledge(cursor: int, c: sqlite3.Connection) -> None:
    c.execute("UPDATE consumer SET acknowledged = MAX(acknowledged, ?)", (cursor,))
    c.execute("DELETE FROM events WHERE cursor <= ?", (cursor,))


if TYPE_CHECKING:
    # mypy proves here that SqliteClearing implements the ClearingStore protocol.
    def _is_a_clearing_store(store: SqliteClearing) -> ClearingStore:
        return store
