"""The connector's own clearing balances, for proposal 2: a durable ClearingPort with an event log.

When the settlement engine runs in another process, the connector must keep clearing without it,
so it holds the clearing balances itself: one SQLite file (WAL, synchronous=FULL, group commit
through host.store.groupcommit, like the engine's store). Every change, a fulfilled packet's or
one applied through the Connector API, is one transaction that

- updates the account's balance,
- records the change under its idempotency key (a replay returns the first result and changes
  nothing; the same key with another account or delta is a :class:`KeyConflict`), and
- appends a :class:`BalanceEvent` to the log, under a cursor that never repeats.

The engine follows the log (host.connector.api) and acknowledges what it processed; acknowledged
events are deleted, the others wait for it across any restart of either process. Credit limits
come from the configuration (:class:`AccountLimits`) and bound packets only
(:meth:`check_credit`): a settlement the engine reports is always applied.

Per account, the settlements among the changes (told apart by their keys) are also summed, in
the same transaction, for reconciliation with the peer (:meth:`DurableClearing.clearing_book`).

The file belongs to one process (a lock file, as the engine's store has), so the balances are
also kept in memory: a credit check reads no disk.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial

from host.clearing_records import BalanceChange, InFlight, Resolution
from host.clearing_rules import ClearingBook, credit_allows, settlement_side
from host.connector.ports import UnknownPeer
from host.ilp.outcome import Outcome
from host.store import sqlite_packets
from host.store.sqlite_schema import Migration, migrate
from host.store.sqlitefile import SqliteFile
from sdk import contract
from sdk.amount import fits

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


class ClearingInputError(ValueError):
    """A malformed account id, key or amount; nothing changed."""


class KeyConflict(ValueError):
    """An idempotency key reused with another account or delta; nothing changed."""


class CursorOutOfRange(ValueError):
    """A cursor ahead of the log."""


@dataclass(frozen=True)
class AccountLimits:
    """What the configuration says of one peer account."""

    asset_scale: int
    min_balance: int  # <= 0: how far we may owe the peer
    max_balance: int  # >= 0: the credit we extend to the peer


@dataclass(frozen=True)
class BalanceEvent:
    """One applied change, as the log keeps it."""

    cursor: int
    account_id: str
    delta: int
    balance: int  # after the change
    idempotency_key: str


def _check_change(account_id: str, delta: int, key: str) -> None:
    if not contract.is_account_id(account_id):
        raise ClearingInputError(
            f"account id must be {contract.ACCOUNT_ID_RULE}, got {account_id!r}"
        )
    if not contract.is_idempotency_key(key):
        raise ClearingInputError(f"idempotency key must be {contract.IDEMPOTENCY_KEY_RULE}")
    if not fits(delta):
        raise ClearingInputError("delta is too large")


class DurableClearing:
    """The connector's clearing balances (see the module docstring). Use :meth:`open`."""

    def __init__(
        self,
        file: SqliteFile,
        limits: Mapping[str, AccountLimits],
        state: _State,
    ) -> None:
        self.path = file.path
        self._file = file
        self._limits = dict(limits)
        self._balances, self._last, self._acknowledged = state
        self._changed = asyncio.Event()
        #: The events written by this process and not yet acknowledged, by cursor: an engine
        #: that keeps up reads them from here, not from the file (whose one thread the packets
        #: need).
        self._recent: dict[int, BalanceEvent] = {}

    @classmethod
    async def open(
        cls, path: str | os.PathLike[str], accounts: Mapping[str, AccountLimits]
    ) -> DurableClearing:
        """Open (creating if needed) the ledger at ``path`` for the configured ``accounts``.

        Missing accounts are created at balance 0; the limits and scale of existing ones are
        taken from ``accounts`` (the configuration is their truth). Accounts in the file but not
        in ``accounts`` keep their history but are unknown until configured again.
        """
        file, state = await SqliteFile.open(
            path, what="connector's clearing file", prepare=partial(_prepare, dict(accounts))
        )
        return cls(file, accounts, state)

    async def close(self) -> None:
        """Commit what is pending, close the connections and the thread, unlock. Idempotent."""
        await self._file.close()

    # -- accounts -------------------------------------------------------------------------------

    def limits(self, account_id: str) -> AccountLimits:
        """The configured limits and scale of an account; UnknownPeer if none."""
        limits = self._limits.get(account_id)
        if limits is None:
            raise UnknownPeer(f"no peer account {account_id[:128]!r} on this connector")
        return limits

    async def balance(self, account_id: str) -> int:
        """The clearing balance (what the peer owes us); UnknownPeer if not configured."""
        self.limits(account_id)
        return self._balances[account_id]

    async def check_credit(self, account_id: str, delta: int) -> bool:
        """Whether a packet changing the balance by ``delta`` stays within the credit limits
        (host.clearing_rules: moving back toward the allowed range is always allowed)."""
        limits = self.limits(account_id)  # UnknownPeer
        return credit_allows(self._balances[account_id], delta, limits)

    async def clearing_book(self, account_id: str) -> ClearingBook:
        """The balance and the settlements' running totals, as of one moment (one read in the
        file's thread, between commits); UnknownPeer if not configured."""
        scale = self.limits(account_id).asset_scale
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
        return ClearingBook(scale, int(balance[0]), out, into)

    # -- changes --------------------------------------------------------------------------------

    async def apply_balance_change(self, account_id: str, delta: int, idempotency_key: str) -> int:
        """Apply ``delta`` once per key, durably, and log it; the balance after it.

        Not bounded by the credit limits (packets were checked before; settlements must
        apply). UnknownPeer, ClearingInputError, KeyConflict: nothing changed.
        """
        _check_change(account_id, delta, idempotency_key)
        self.limits(account_id)
        now = time.time()
        async with self._file.transaction() as context:
            balance, cursor = await context.run(
                partial(_apply, account_id, delta, idempotency_key, now)
            )
        self._published(BalanceChange(account_id, delta, idempotency_key), balance, cursor)
        return balance

    def _published(self, change: BalanceChange, balance: int, cursor: int | None) -> None:
        """A committed change (cursor None: a replay) is published: only committed events
        are ever streamed."""
        if cursor is None:
            return
        self._balances[change.account_id] = balance
        self._last = max(self._last, cursor)
        if len(self._recent) < RECENT_LIMIT:
            self._recent[cursor] = BalanceEvent(
                cursor, change.account_id, change.delta, balance, change.idempotency_key
            )
        self._wake()

    # -- the in-flight journal (host.connector.ports.ClearingJournal) ---------------------------

    async def journal_packet(self, packet: InFlight) -> None:
        """Record a forwarded packet as pending, durably, before it goes out."""
        now = time.time()
        async with self._file.transaction() as context:
            await context.run(partial(sqlite_packets.journal, packet=packet, now=now))

    async def resolve_packet(
        self,
        packet: InFlight,
        resolution: Resolution,
        fulfillment: bytes,
        changes: Sequence[BalanceChange],
    ) -> Resolution:
        """Apply ``changes`` and record the packet's resolution, in one transaction; the
        resolution (an earlier one, and nothing done, if the packet was resolved before)."""
        for change in changes:
            _check_change(change.account_id, change.delta, change.idempotency_key)
            self.limits(change.account_id)
        now = time.time()

        def resolve(
            c: sqlite3.Connection,
        ) -> tuple[Resolution, list[tuple[BalanceChange, int, int | None]]]:
            earlier = sqlite_packets.resolution_of(c, packet.key)
            if earlier is not None:
                return earlier, []
            applied = [
                (change, *_apply(change.account_id, change.delta, change.idempotency_key, now, c))
                for change in changes
            ]
            sqlite_packets.resolve(c, packet, resolution, fulfillment, now)
            return resolution, applied

        async with self._file.transaction() as context:
            result, applied = await context.run(resolve)
        for change, balance, cursor in applied:
            self._published(change, balance, cursor)
        return result

    async def unresolved_packets(self) -> list[InFlight]:
        """The journaled packets not resolved yet, oldest first."""
        return await self._file.read(sqlite_packets.unresolved)

    async def packet_outcome(self, source: str, source_id: bytes) -> Outcome:
        """What peer ``source`` is told of its packet ``source_id``."""
        return await self._file.read(
            partial(sqlite_packets.outcome, source=source, source_id=source_id)
        )

    # -- the event log --------------------------------------------------------------------------

    @property
    def last_cursor(self) -> int:
        """The highest cursor written (0 before the first event)."""
        return self._last

    @property
    def acknowledged(self) -> int:
        """Every event up to this cursor was processed by the engine (and deleted)."""
        return self._acknowledged

    async def events_after(self, cursor: int, limit: int) -> list[BalanceEvent]:
        """At most ``limit`` events with a cursor above ``cursor``, oldest first."""
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
        """Record that the engine processed every event up to ``cursor``, and delete them.

        Idempotent; an older cursor changes nothing. CursorOutOfRange if ahead of the log.
        """
        if cursor > self._last:
            raise CursorOutOfRange(f"cursor {cursor} is ahead of the log (last {self._last})")
        if cursor <= self._acknowledged:
            return
        async with self._file.transaction() as context:
            await context.run(partial(_acknowledge, cursor))
        self._acknowledged = max(self._acknowledged, cursor)
        for done in [n for n in self._recent if n <= self._acknowledged]:
            del self._recent[done]

    async def wait_beyond(self, cursor: int) -> None:
        """Return once an event with a cursor above ``cursor`` is committed."""
        while self._last <= cursor:
            await self._changed.wait()

    async def forget_keys(self, older_than: float) -> int:
        """Delete the idempotency keys recorded more than ``older_than`` seconds ago, and the
        journal's packets resolved as long ago (their peers have had the time to ask)."""
        before = time.time() - older_than

        def forget(c: sqlite3.Connection) -> int:
            sqlite_packets.forget(c, before)
            return c.execute("DELETE FROM changes WHERE created_at < ?", (before,)).rowcount

        async with self._file.transaction() as context:
            return await context.run(forget)

    # -- helpers --------------------------------------------------------------------------------

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()


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


def _apply(
    account_id: str, delta: int, key: str, now: float, c: sqlite3.Connection
) -> tuple[int, int | None]:
    """(balance, new cursor), or (first balance, None) for a replay."""
    seen = c.execute(
        "SELECT account_id, delta, balance FROM changes WHERE key = ?", (key,)
    ).fetchone()
    if seen is not None:
        if (seen[0], int(seen[1])) != (account_id, delta):
            raise KeyConflict(
                f"idempotency key {key!r} was used for another change ({seen[0]} {seen[1]})"
            )
        return int(seen[2]), None
    (balance,) = c.execute("SELECT balance FROM accounts WHERE id = ?", (account_id,)).fetchone()
    balance = int(balance) + delta
    if not fits(balance):
        raise ClearingInputError(f"account {account_id}: the balance would no longer fit")
    c.execute(
        "UPDATE accounts SET balance = ?, updated_at = ? WHERE id = ?",
        (str(balance), now, account_id),
    )
    c.execute(
        "INSERT INTO changes (key, account_id, delta, balance, created_at) VALUES (?, ?, ?, ?, ?)",
        (key, account_id, str(delta), str(balance), now),
    )
    side = settlement_side(key)
    if side is not None:
        out, into = (delta, 0) if side == "out" else (0, -delta)
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
