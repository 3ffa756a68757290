"""The embedded Store: one SQLite file, WAL, durable commits, batched by group commit.

The file, its lock, its thread and its connections are host.store.sqlitefile's: every
transaction goes through the writer (host.store.groupcommit), reads outside transactions through
a query-only reader (committed data only): an account by its id, the packet path's credit
check, on the loop's thread; anything that may scan many rows in the store's thread.
``synchronous=FULL`` makes every commit durable before it is acknowledged; group commit shares
that fsync among concurrent transactions. The accounts are also kept in memory as the store
writes them (host.store.account_cache), so that reading one, in a transaction or outside, is
no query.

The file belongs to one process at a time (an exclusive lock on ``<file>.lock``, released by
the kernel if the process dies): that is what lets ``open`` free the outbox leases a crashed
previous run left behind, and why ``try_lead`` is always true. Several hosts sharing one
database use the PostgreSQL store (host.store.postgres).
"""

from __future__ import annotations

import contextlib
import dataclasses
import operator
import os
import sqlite3
from collections.abc import Callable, Sequence
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

from host.clearing_records import InFlight, Resolution
from host.engine.model import (
    Account,
    ClearingEffect,
    IdempotencyRecord,
    Settlement,
)
from host.engine.store import Store, Transaction
from host.ilp.outcome import Outcome
from host.store import sqlite_packets, sqlite_totals
from host.store.account_cache import AccountCache
from host.store.base import StoreError
from host.store.groupcommit import TxContext
from host.store.rows import (
    ACCOUNT_COLUMNS,
    OUTBOX,
    SETTLEMENT_COLUMNS,
    UNFINISHED_OUTGOING,
    account_from_row,
    account_values,
    settlement_from_row,
    settlement_values,
)
from host.store.sqlite_schema import MIGRATIONS, migrate
from host.store.sqlitefile import SqliteFile

T = TypeVar("T")


def _one_row(cursor: sqlite3.Cursor, what: str) -> None:
    if cursor.rowcount != 1:
        raise StoreError(f"{what} does not exist")


def _insert_settlement(c: sqlite3.Connection, settlement: Settlement) -> None:
    """Record a settlement and add it to its account's running totals (one transaction)."""
    c.execute(
        f"INSERT INTO settlements ({SETTLEMENT_COLUMNS}) VALUES ({', '.join('?' * 14)})",
        settlement_values(settlement, str),
    )
    sqlite_totals.add(c, settlement.account_id, settlement.direction, settlement.amount)


#: Every field of an account but the two a packet's balance change writes (derived from the
#: model, so that a field added to it is never left out of the comparison).
_BESIDES_BALANCE = operator.attrgetter(
    *(f.name for f in dataclasses.fields(Account) if f.name not in ("balance", "updated_at"))
)


def _only_balance_changed(before: Account, after: Account) -> bool:
    return bool(_BESIDES_BALANCE(before) == _BESIDES_BALANCE(after))


class _SqliteTransaction:
    """The Transaction protocol over a group-commit context: statements by key run at once;
    those that may touch many rows (``execute``) in the store's thread."""

    def __init__(self, context: TxContext, accounts: AccountCache) -> None:
        self._ctx = context
        self._accounts = accounts

    async def lock_account(self, account_id: str) -> Account | None:
        # The writer is the only one: a plain read in its transaction is already exclusive.
        account = self._accounts.written(account_id)
        if account is not None:
            return account
        row = await self._ctx.run(
            lambda c: c.execute(
                f"SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ?", (account_id,)
            ).fetchone()
        )
        if row is None:
            return None
        account = account_from_row(row)
        self._accounts.keep_written(account)
        return account

    async def insert_account(self, account: Account) -> None:
        values = account_values(account, str)
        self._ctx.defer(
            lambda c: c.execute(
                f"INSERT INTO accounts ({ACCOUNT_COLUMNS}) VALUES ({', '.join('?' * 15)})", values
            )
        )
        self._accounts.write(account)

    async def update_account(self, account: Account) -> None:
        before = self._accounts.written(account.id)
        if before is not None and _only_balance_changed(before, account):
            # A packet's change: two columns, not thirteen to convert and write.
            balance = (account.id, str(account.balance), account.updated_at)
            self._ctx.defer(
                lambda c: _one_row(
                    c.execute(
                        "UPDATE accounts SET balance = ?2, updated_at = ?3 WHERE id = ?1", balance
                    ),
                    f"account {account.id}",
                )
            )
            self._accounts.write(account)
            return
        values = account_values(account, str)
        self._ctx.defer(
            lambda c: _one_row(
                c.execute(
                    "UPDATE accounts SET adaptor = ?2, asset_code = ?3, asset_scale = ?4, "
                    "ledger_scale = ?5, settle_threshold = ?6, settle_to = ?7, min_balance = ?8, "
                    "max_balance = ?9, balance = ?10, outgoing_leftover = ?11, "
                    "incoming_leftover = ?12, liquidity = ?13, updated_at = ?15 WHERE id = ?1",
                    values,
                ),
                f"account {account.id}",
            )
        )
        self._accounts.write(account)

    async def lock_settlement(self, settlement_id: str) -> Settlement | None:
        row = await self._ctx.run(
            lambda c: c.execute(
                f"SELECT {SETTLEMENT_COLUMNS} FROM settlements WHERE id = ?", (settlement_id,)
            ).fetchone()
        )
        return None if row is None else settlement_from_row(row)

    async def insert_settlement(self, settlement: Settlement) -> None:
        self._ctx.defer(partial(_insert_settlement, settlement=settlement))

    async def update_settlement(self, settlement: Settlement) -> None:
        values = settlement_values(settlement, str)
        self._ctx.defer(
            lambda c: _one_row(
                c.execute(
                    "UPDATE settlements SET state = ?5, amount = ?6, ledger_amount = ?7, "
                    "ledger_settlement_id = ?8, attempts = ?9, last_error = ?10, "
                    "next_attempt_at = ?11, lease_until = ?12, updated_at = ?14 WHERE id = ?1",
                    values,
                ),
                f"settlement {settlement.id}",
            )
        )

    async def has_failed_settlement(self, account_id: str) -> bool:
        row = await self._ctx.run(
            lambda c: c.execute(
                f"SELECT 1 FROM settlements WHERE account_id = ? AND {UNFINISHED_OUTGOING} "
                "AND state = 'failed' LIMIT 1",
                (account_id,),
            ).fetchone()
        )
        return row is not None

    async def get_idempotency(self, scope: str, key: str) -> IdempotencyRecord | None:
        row = await self._ctx.run(
            lambda c: c.execute(
                "SELECT scope, key, account_id, request, result, created_at FROM idempotency "
                "WHERE scope = ? AND key = ?",
                (scope, key),
            ).fetchone()
        )
        return None if row is None else IdempotencyRecord(*row)

    async def record_idempotency(self, record: IdempotencyRecord) -> None:
        r = record
        values = (r.scope, r.key, r.account_id, r.request, r.result, r.created_at)
        self._ctx.defer(
            lambda c: c.execute(
                "INSERT INTO idempotency (scope, key, account_id, request, result, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                values,
            )
        )

    async def record_clearing_effect(self, effect: ClearingEffect) -> None:
        values = (effect.key, effect.account_id, str(effect.delta), effect.created_at)
        self._ctx.defer(
            lambda c: c.execute(
                "INSERT INTO clearing_effects (key, account_id, delta, created_at) "
                "VALUES (?, ?, ?, ?)",
                values,
            )
        )

    async def journal_packet(self, packet: InFlight, now: float) -> None:
        self._ctx.defer(partial(sqlite_packets.journal, packet=packet, now=now))

    async def packet_resolution(self, key: str) -> Resolution | None:
        return await self._ctx.run(partial(sqlite_packets.resolution_of, key=key))

    async def resolve_packet(
        self, packet: InFlight, resolution: Resolution, fulfillment: bytes, now: float
    ) -> None:
        self._ctx.defer(
            partial(
                sqlite_packets.resolve,
                packet=packet,
                resolution=resolution,
                fulfillment=fulfillment,
                now=now,
            )
        )

    async def claim(self, limit: int, now: float, lease: float) -> list[Settlement]:
        def claim(c: sqlite3.Connection) -> list[Settlement]:
            rows = c.execute(
                f"SELECT {SETTLEMENT_COLUMNS} FROM settlements WHERE state IN {OUTBOX} "
                "AND next_attempt_at <= ? AND (lease_until IS NULL OR lease_until <= ?) "
                "ORDER BY next_attempt_at LIMIT ?",
                (now, now, limit),
            ).fetchall()
            until = now + lease
            c.executemany(
                "UPDATE settlements SET lease_until = ? WHERE id = ?",
                [(until, row[0]) for row in rows],
            )
            return [settlement_from_row((*row[:11], until, *row[12:])) for row in rows]

        return await self._ctx.run(claim)

    async def execute(self, sql: str, parameters: Sequence[object]) -> int:
        return await self._ctx.run_in_thread(lambda c: c.execute(sql, parameters).rowcount)


class _InTransaction(contextlib.AbstractAsyncContextManager[_SqliteTransaction]):
    """A group-commit transaction seen as a _SqliteTransaction: one plain ``async with`` layer
    rather than nested generator-based ones (a forwarded packet enters two transactions)."""

    __slots__ = ("_accounts", "_inner")

    def __init__(
        self, inner: contextlib.AbstractAsyncContextManager[TxContext], accounts: AccountCache
    ) -> None:
        self._inner = inner
        self._accounts = accounts

    async def __aenter__(self) -> _SqliteTransaction:
        return _SqliteTransaction(await self._inner.__aenter__(), self._accounts)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        return await self._inner.__aexit__(exc_type, exc, traceback)


def _prepare(conn: sqlite3.Connection) -> None:
    migrate(conn, MIGRATIONS)
    # The file is ours alone (see the module docstring): no lease can be live.
    conn.execute("UPDATE settlements SET lease_until = NULL WHERE lease_until IS NOT NULL")


class SqliteStore:
    """The Store protocol over one SQLite file (see the module docstring). Use ``open``."""

    def __init__(self, file: SqliteFile, accounts: AccountCache) -> None:
        self.path = file.path
        self._file = file
        self._accounts = accounts

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        max_batch: int = 256,
        busy_timeout_ms: int = 5000,
    ) -> SqliteStore:
        """Open (creating and migrating if needed) the database at ``path``.

        Raises StoreInUse if another process has it open, SchemaTooNew if a newer host wrote it,
        StoreError if it is not a host database.
        """
        accounts = AccountCache()
        file, _ = await SqliteFile.open(
            path,
            what="host database",
            prepare=_prepare,
            max_batch=max_batch,
            busy_timeout_ms=busy_timeout_ms,
            listener=accounts,
        )
        return cls(file, accounts)

    @property
    def commits(self) -> int:
        """How many batches were committed (for tests and benchmarks)."""
        return self._file.group.commits

    @property
    def transactions(self) -> int:
        """How many logical transactions ended (for tests and benchmarks)."""
        return self._file.group.transactions

    def transaction(self) -> contextlib.AbstractAsyncContextManager[Transaction]:
        """A logical transaction, committed with its batch (host.store.groupcommit)."""
        return self._sqlite_transaction()

    def _sqlite_transaction(self) -> _InTransaction:
        return _InTransaction(self._file.transaction(), self._accounts)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._file.read(fn)

    async def get_account(self, account_id: str) -> Account | None:
        """The committed account, or None."""
        account = self._accounts.committed(account_id)
        if account is not None:
            self._file.check_open()
            return account
        row = await self._file.read_now(
            lambda c: c.execute(
                f"SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ?", (account_id,)
            ).fetchone()
        )
        if row is None:
            return None
        account = account_from_row(row)
        self._accounts.keep_committed(account)
        return account

    async def list_accounts(self) -> list[Account]:
        """Every account, by id."""
        rows = await self._read(
            lambda c: c.execute(f"SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY id").fetchall()
        )
        return [account_from_row(row) for row in rows]

    async def pending_settlement_totals(self, account_id: str | None) -> dict[str, int]:
        """Per account, the sum of its unfinished outgoing settlements (summed here: TEXT)."""
        where = UNFINISHED_OUTGOING + ("" if account_id is None else " AND account_id = ?")
        parameters = () if account_id is None else (account_id,)
        rows = await self._read(
            lambda c: c.execute(
                f"SELECT account_id, amount FROM settlements WHERE {where}", parameters
            ).fetchall()
        )
        totals: dict[str, int] = {}
        for account, amount in rows:
            totals[account] = totals.get(account, 0) + int(amount)
        return totals

    async def settled_totals(self, account_id: str) -> tuple[int, int]:
        """Per direction, the sum of an account's settlements: its running totals, one row."""
        return await self._file.read_now(partial(sqlite_totals.read, account_id=account_id))

    async def get_settlement(self, settlement_id: str) -> Settlement | None:
        """The committed settlement, or None."""
        row = await self._read(
            lambda c: c.execute(
                f"SELECT {SETTLEMENT_COLUMNS} FROM settlements WHERE id = ?", (settlement_id,)
            ).fetchone()
        )
        return None if row is None else settlement_from_row(row)

    async def list_settlements(self, account_id: str | None, limit: int) -> list[Settlement]:
        """At most ``limit`` settlements, newest first."""
        where = "" if account_id is None else "WHERE account_id = ?"
        parameters: tuple[object, ...] = (limit,) if account_id is None else (account_id, limit)
        rows = await self._read(
            lambda c: c.execute(
                f"SELECT {SETTLEMENT_COLUMNS} FROM settlements {where} ORDER BY seq DESC LIMIT ?",
                parameters,
            ).fetchall()
        )
        return [settlement_from_row(row) for row in rows]

    async def claim_outbox(self, limit: int, now: float, lease: float) -> list[Settlement]:
        """Lease up to ``limit`` due rows with work left (see Store.claim_outbox)."""
        async with self._sqlite_transaction() as tx:
            return await tx.claim(limit, now, lease)

    async def resume_outbox(self, now: float) -> int:
        """Make every row with work left due at ``now``."""
        async with self._sqlite_transaction() as tx:
            return await tx.execute(
                f"UPDATE settlements SET next_attempt_at = ? WHERE state IN {OUTBOX}", (now,)
            )

    async def next_outbox_due(self) -> float | None:
        """When the next row with work left is due (its lease included), or None."""
        row = await self._read(
            lambda c: c.execute(
                "SELECT MIN(MAX(next_attempt_at, COALESCE(lease_until, 0))) FROM settlements "
                f"WHERE state IN {OUTBOX} AND next_attempt_at IS NOT NULL"
            ).fetchone()
        )
        return None if row[0] is None else float(row[0])

    async def outbox_summary(self) -> tuple[int, float | None]:
        """The rows with work left and the creation time of the oldest (None: none), for
        the outbox metrics (host.metrics)."""
        row = await self._read(
            lambda c: c.execute(
                f"SELECT COUNT(*), MIN(created_at) FROM settlements WHERE state IN {OUTBOX}"
            ).fetchone()
        )
        return int(row[0]), None if row[1] is None else float(row[1])

    async def set_liquidity(self, adaptor: str, liquidity: int | None, now: float) -> int:
        """Record the adaptor's liquidity on each of its accounts."""
        value = None if liquidity is None else str(liquidity)
        async with self._sqlite_transaction() as tx:
            return await tx.execute(
                "UPDATE accounts SET liquidity = ?, updated_at = ? WHERE adaptor = ?",
                (value, now, adaptor),
            )

    async def forget_idempotency(self, created_before: float) -> int:
        """Delete idempotency records created before ``created_before``."""
        async with self._sqlite_transaction() as tx:
            await tx.execute(
                "DELETE FROM packets WHERE resolution IS NOT NULL AND resolved_at < ?",
                (created_before,),
            )
            return await tx.execute(
                "DELETE FROM idempotency WHERE created_at < ?", (created_before,)
            )

    async def clearing_effects(self, limit: int) -> list[ClearingEffect]:
        """At most ``limit`` journaled clearing effects, oldest first."""
        rows = await self._read(
            lambda c: c.execute(
                "SELECT key, account_id, delta, created_at FROM clearing_effects "
                "ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
        )
        return [ClearingEffect(key, account, int(delta), at) for key, account, delta, at in rows]

    async def count_clearing_effects(self) -> int:
        """How many journaled effects wait for the connector."""
        row = await self._read(
            lambda c: c.execute("SELECT COUNT(*) FROM clearing_effects").fetchone()
        )
        return int(row[0])

    async def forget_clearing_effect(self, key: str) -> None:
        """Drop a journaled effect the connector confirmed."""
        async with self._sqlite_transaction() as tx:
            await tx.execute("DELETE FROM clearing_effects WHERE key = ?", (key,))

    async def unresolved_packets(self) -> list[InFlight]:
        """The journaled packets not resolved yet, oldest first."""
        return await self._read(sqlite_packets.unresolved)

    async def packet_outcome(self, source: str, source_id: bytes) -> Outcome:
        """What peer ``source`` is told of its packet ``source_id``."""
        return await self._file.read_now(
            partial(sqlite_packets.outcome, source=source, source_id=source_id)
        )

    async def try_lead(self) -> bool:
        """Always true: the file has one process (see the module docstring)."""
        return True

    async def close(self) -> None:
        """Commit what is pending, close the connections and the thread, unlock. Idempotent."""
        await self._file.close()


if TYPE_CHECKING:
    # mypy proves here that SqliteStore implements the Store protocol.
    def _is_a_store(store: SqliteStore) -> Store:
        return store
