"""The connector's clearing books in PostgreSQL, shared by several connector instances
(host.store.clearing).

Several ``ilp-host connector`` processes behind one ILP address keep one set of books:

* **Balances under row locks.** A change (a fulfilled packet's two sides, an engine's settlement)
  is one transaction that first locks its accounts' rows (``FOR UPDATE``, in id order: two
  packets crossing between the same peers never deadlock), then reads the idempotency keys,
  writes the changes and updates the balances. The credit check of a packet reads the
  committed balance, whichever instance changed it last.
* **The event log, numbered once committed.** A change is written to ``clearing_pending``
  under an identity; it gets its cursor only when an instance moves it into ``clearing_events``
  (:meth:`PostgresClearing.refresh_log`, under the lock of the log's head row). An identity is
  taken when a transaction inserts, not when it commits, so numbering at insert would let an
  engine read cursor 11 while 10 is still uncommitted, acknowledge 11, and never see 10;
  numbering committed rows in one place keeps the log gap-free in the order it is read, and
  every instance serves the same cursors.
* **The in-flight journal** is one table: the instance that resolves a packet after a crash
  (host.connector.inflight) may be another than the one that forwarded it, and a packet's
  resolution is locked with its row (a packet is resolved once, by whichever instance first).

Amounts are ``numeric`` (any size). The tables carry a ``clearing_`` prefix and their own
version table (``clearing_schema_version``), so the books may live in the same schema as the
engine's store (host.store.postgres) or in one of their own.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING

from psycopg import AsyncConnection, errors
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from host.clearing_records import BalanceChange, InFlight, Resolution
from host.ilp.outcome import Outcome
from host.store import postgres_packets
from host.store.base import StoreError
from host.store.clearing import (
    AccountLimits,
    BalanceEvent,
    ClearingStore,
    CursorOutOfRange,
    KeyConflict,
    Resolving,
    checked_balance,
    replayed,
    settled_by,
)
from host.store.postgres_pool import describe, open_pool, pooled
from host.store.postgres_schema import Migration

Connection = AsyncConnection[TupleRow]

_V1: Migration = (
    """
    CREATE TABLE clearing_accounts (
        id          text PRIMARY KEY,
        asset_scale integer NOT NULL,
        min_balance numeric NOT NULL,
        max_balance numeric NOT NULL,
        balance     numeric NOT NULL,
        settled_out numeric NOT NULL,
        settled_in  numeric NOT NULL,
        updated_at  double precision NOT NULL
    )
    """,
    # The idempotency keys of applied changes, with their result.
    """
    CREATE TABLE clearing_changes (
        key        text PRIMARY KEY,
        account_id text NOT NULL REFERENCES clearing_accounts (id),
        delta      numeric NOT NULL,
        balance    numeric NOT NULL,
        created_at double precision NOT NULL
    )
    """,
    "CREATE INDEX clearing_changes_by_age ON clearing_changes (created_at)",
    # Committed changes wait here for their cursor (see the module docstring).
    """
    CREATE TABLE clearing_pending (
        seq        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        account_id text NOT NULL,
        delta      numeric NOT NULL,
        balance    numeric NOT NULL,
        key        text NOT NULL,
        created_at double precision NOT NULL
    )
    """,
    """
    CREATE TABLE clearing_events (
        cursor     bigint PRIMARY KEY,
        account_id text NOT NULL,
        delta      numeric NOT NULL,
        balance    numeric NOT NULL,
        key        text NOT NULL,
        created_at double precision NOT NULL
    )
    """,
    # The log's head: the last cursor given, and the last one the engine acknowledged.
    """
    CREATE TABLE clearing_log (
        id           integer PRIMARY KEY CHECK (id = 1),
        last         bigint NOT NULL,
        acknowledged bigint NOT NULL
    )
    """,
    "INSERT INTO clearing_log (id, last, acknowledged) VALUES (1, 0, 0)",
    *postgres_packets.migration("clearing_packets"),
    # What is in flight with a peer, on each side, for the credit checks of every instance.
    "CREATE INDEX clearing_packets_out ON clearing_packets (target) WHERE resolution IS NULL",
    "CREATE INDEX clearing_packets_in ON clearing_packets (source) WHERE resolution IS NULL",
)
#: Every migration, oldest first. Append only.
MIGRATIONS: tuple[Migration, ...] = (_V1,)
VERSION_TABLE = "clearing_schema_version"
PACKETS = "clearing_packets"
#: Changes numbered per statement when the log is brought up to date.
NUMBER_BATCH = 1024


class PostgresClearing:
    """The ClearingStore of a database several connector instances share. Use :meth:`open`."""

    shared = True

    def __init__(self, pool: AsyncConnectionPool[Connection], url: str) -> None:
        self._pool = pool
        self.description = describe(url)
        self._last = 0
        self._acknowledged = 0
        self._closed = False
        #: The packets this instance journaled and has not resolved: (source, target, amount)
        #: by key. Its balance middleware reserves them already (ClearingStore.exposure).
        self._in_flight: dict[str, tuple[str | None, str | None, int]] = {}

    @classmethod
    async def open(
        cls,
        url: str,
        accounts: Mapping[str, AccountLimits],
        *,
        max_size: int = 16,
        connect_timeout: float = 15.0,
    ) -> PostgresClearing:
        """Connect to ``url``, migrate under the migration lock, and bring the accounts in line
        with ``accounts`` (host.connector.durable_clearing.DurableClearing.open). StoreError
        with one line saying why if the database cannot be used."""
        pool = await open_pool(
            url,
            MIGRATIONS,
            version_table=VERSION_TABLE,
            max_size=max_size,
            connect_timeout=connect_timeout,
            name="ilp-clearing",
        )
        store = cls(pool, url)
        try:
            await store._configure(accounts)
            await store.refresh_log()
        except BaseException:
            await store.close()
            raise
        return store

    async def _configure(self, accounts: Mapping[str, AccountLimits]) -> None:
        ids = sorted(accounts)
        async with self._transaction() as conn:
            await conn.execute(
                "INSERT INTO clearing_accounts (id, asset_scale, min_balance, max_balance, "
                "balance, settled_out, settled_in, updated_at) "
                "SELECT id, scale, low, high, 0, 0, 0, extract(epoch FROM now()) "
                "FROM unnest(%s::text[], %s::integer[], %s::numeric[], %s::numeric[]) "
                "AS a (id, scale, low, high) ORDER BY id "
                "ON CONFLICT (id) DO UPDATE SET asset_scale = excluded.asset_scale, "
                "min_balance = excluded.min_balance, max_balance = excluded.max_balance",
                (
                    ids,
                    [accounts[i].asset_scale for i in ids],
                    [accounts[i].min_balance for i in ids],
                    [accounts[i].max_balance for i in ids],
                ),
            )

    # -- connections ----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Connection]:
        if self._closed:
            raise StoreError(f"the clearing books in the {self.description} are closed")
        async with pooled(self._pool, self.description) as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Connection]:
        async with self._connection() as conn, conn.transaction():
            yield conn

    async def _rows(self, query: str, parameters: Sequence[object]) -> list[TupleRow]:
        async with self._connection() as conn:
            cursor = await conn.execute(query.encode(), parameters)
            return await cursor.fetchall()

    # -- balances -------------------------------------------------------------------------------

    @property
    def last_cursor(self) -> int:
        return self._last

    @property
    def acknowledged(self) -> int:
        return self._acknowledged

    async def balance(self, account_id: str) -> int:
        rows = await self._rows(
            "SELECT balance FROM clearing_accounts WHERE id = %s", (account_id,)
        )
        return int(rows[0][0])

    async def exposure(self, account_id: str, delta: int) -> int:
        if delta == 0:
            return await self.balance(account_id)
        side, sign = ("target", -1) if delta < 0 else ("source", 1)
        rows = await self._rows(
            "SELECT balance, (SELECT COALESCE(SUM(amount), 0) FROM clearing_packets "
            f"WHERE resolution IS NULL AND {side} = %s) FROM clearing_accounts WHERE id = %s",
            (account_id, account_id),
        )
        balance, in_flight = rows[0]
        own = sum(
            amount
            for source, target, amount in self._in_flight.values()
            if (target if delta < 0 else source) == account_id
        )
        return int(balance) + sign * max(0, int(in_flight) - own)

    async def book(self, account_id: str) -> tuple[int, int, int]:
        rows = await self._rows(
            "SELECT balance, settled_out, settled_in FROM clearing_accounts WHERE id = %s",
            (account_id,),
        )
        balance, out, into = rows[0]
        return int(balance), int(out), int(into)

    async def apply(
        self, changes: Sequence[BalanceChange], now: float, resolving: Resolving | None
    ) -> tuple[Resolution | None, list[int]]:
        try:
            async with self._transaction() as conn:
                done = await _apply(conn, changes, now, resolving)
            if resolving is not None:
                self._in_flight.pop(resolving.packet.key, None)
            return done
        except StoreError as exc:
            if isinstance(exc.__cause__, errors.UniqueViolation):
                # The same key inserted at once for another account (the same account's
                # changes wait for each other on its row lock and see the first one).
                raise KeyConflict(
                    "idempotency key used at the same time for another change: "
                    + ", ".join(change.idempotency_key for change in changes)
                ) from exc
            raise

    # -- the in-flight journal ------------------------------------------------------------------

    async def journal(self, packet: InFlight, now: float) -> None:
        async with self._connection() as conn:
            await postgres_packets.journal(conn, PACKETS, packet, now)
        self._in_flight[packet.key] = (packet.source, packet.target, packet.amount)

    async def unresolved(self) -> list[InFlight]:
        """Read by this instance's resolver at its start, which then holds each packet's
        next-hop side as its own reservation (host.connector.inflight)."""
        async with self._connection() as conn:
            packets = await postgres_packets.unresolved(conn, PACKETS)
        for packet in packets:
            self._in_flight.setdefault(packet.key, (None, packet.target, packet.amount))
        return packets

    async def outcome(self, source: str, source_id: bytes) -> Outcome:
        async with self._connection() as conn:
            return await postgres_packets.outcome(conn, PACKETS, source, source_id)

    # -- the event log --------------------------------------------------------------------------

    async def refresh_log(self) -> None:
        """Number the committed changes that wait for a cursor, in the order of their
        identities, under the lock of the log's head (one instance at a time), and read the
        head."""
        while True:
            async with self._transaction() as conn:
                cursor = await conn.execute("SELECT EXISTS (SELECT 1 FROM clearing_pending)")
                row = await cursor.fetchone()
                waiting = row is not None and row[0]
                query = "SELECT last, acknowledged FROM clearing_log" + (
                    " FOR UPDATE" if waiting else ""
                )
                cursor = await conn.execute(query.encode())
                head = await cursor.fetchone()
                assert head is not None
                last, acknowledged = int(head[0]), int(head[1])
                moved = 0
                if waiting:
                    cursor = await conn.execute(
                        "WITH moved AS (DELETE FROM clearing_pending WHERE seq IN ("
                        "  SELECT seq FROM clearing_pending ORDER BY seq LIMIT %s)"
                        "  RETURNING seq, account_id, delta, balance, key, created_at) "
                        "INSERT INTO clearing_events (cursor, account_id, delta, balance, key, "
                        "created_at) SELECT %s + row_number() OVER (ORDER BY seq), account_id, "
                        "delta, balance, key, created_at FROM moved",
                        (NUMBER_BATCH, last),
                    )
                    moved = cursor.rowcount
                    if moved:
                        last += moved
                        await conn.execute("UPDATE clearing_log SET last = %s", (last,))
            self._last = max(self._last, last)
            self._acknowledged = max(self._acknowledged, acknowledged)
            if moved < NUMBER_BATCH:
                return

    async def events_after(self, cursor: int, limit: int) -> list[BalanceEvent]:
        if cursor + limit > self._last:
            await self.refresh_log()  # number what committed since
        rows = await self._rows(
            "SELECT cursor, account_id, delta, balance, key FROM clearing_events "
            "WHERE cursor > %s ORDER BY cursor LIMIT %s",
            (cursor, limit),
        )
        return [BalanceEvent(int(c), a, int(d), int(b), k) for c, a, d, b, k in rows]

    async def acknowledge(self, cursor: int) -> None:
        if cursor > self._last:
            await self.refresh_log()  # committed changes count as written
        async with self._transaction() as conn:
            result = await conn.execute("SELECT last FROM clearing_log FOR UPDATE")
            head = await result.fetchone()
            assert head is not None
            last = int(head[0])
            if cursor > last:
                raise CursorOutOfRange(f"cursor {cursor} is ahead of the log (last {last})")
            result = await conn.execute(
                "UPDATE clearing_log SET acknowledged = GREATEST(acknowledged, %s) "
                "RETURNING acknowledged",
                (cursor,),
            )
            row = await result.fetchone()
            assert row is not None
            await conn.execute("DELETE FROM clearing_events WHERE cursor <= %s", (row[0],))
        self._last = max(self._last, last)
        self._acknowledged = max(self._acknowledged, int(row[0]))

    async def forget(self, before: float) -> int:
        async with self._transaction() as conn:
            await postgres_packets.forget(conn, PACKETS, before)
            cursor = await conn.execute(
                "DELETE FROM clearing_changes WHERE created_at < %s", (before,)
            )
            return cursor.rowcount

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._pool.close()


async def _apply(
    conn: Connection, changes: Sequence[BalanceChange], now: float, resolving: Resolving | None
) -> tuple[Resolution | None, list[int]]:
    """ClearingStore.apply inside ``conn``'s transaction."""
    ids = sorted({change.account_id for change in changes})
    balances: dict[str, int] = {}
    if ids:
        cursor = await conn.execute(
            "SELECT id, balance FROM clearing_accounts WHERE id = ANY(%s) ORDER BY id FOR UPDATE",
            (ids,),
        )
        balances = {account: int(balance) for account, balance in await cursor.fetchall()}
    if resolving is not None:
        earlier = await postgres_packets.resolution_for_update(conn, PACKETS, resolving.packet.key)
        if earlier is not None:
            return earlier, []
    seen: dict[str, tuple[str, int, int]] = {}
    if changes:
        cursor = await conn.execute(
            "SELECT key, account_id, delta, balance FROM clearing_changes WHERE key = ANY(%s)",
            ([change.idempotency_key for change in changes],),
        )
        seen = {key: (a, int(d), int(b)) for key, a, d, b in await cursor.fetchall()}
    results: list[int] = []
    new: list[tuple[BalanceChange, int]] = []
    settled = {account: [0, 0] for account in ids}
    for change in changes:
        earlier_change = seen.get(change.idempotency_key)
        if earlier_change is not None:
            replayed(change, earlier_change[0], earlier_change[1])
            results.append(earlier_change[2])
            continue
        balance = checked_balance(change.account_id, balances[change.account_id], change.delta)
        balances[change.account_id] = balance
        out, into = settled_by(change)
        settled[change.account_id][0] += out
        settled[change.account_id][1] += into
        # The same key twice in one call: the second is the first's replay.
        seen[change.idempotency_key] = (change.account_id, change.delta, balance)
        new.append((change, balance))
        results.append(balance)
    if new:
        columns = (
            [change.idempotency_key for change, _ in new],
            [change.account_id for change, _ in new],
            [change.delta for change, _ in new],
            [balance for _, balance in new],
        )
        await conn.execute(
            "INSERT INTO clearing_changes (key, account_id, delta, balance, created_at) "
            "SELECT k, a, d, b, %s FROM unnest(%s::text[], %s::text[], %s::numeric[], "
            "%s::numeric[]) AS c (k, a, d, b)",
            (now, *columns),
        )
        await conn.execute(
            "INSERT INTO clearing_pending (account_id, delta, balance, key, created_at) "
            "SELECT a, d, b, k, %s FROM unnest(%s::text[], %s::text[], %s::numeric[], "
            "%s::numeric[]) WITH ORDINALITY AS c (k, a, d, b, n) ORDER BY n",
            (now, *columns),
        )
        touched = sorted({change.account_id for change, _ in new})
        await conn.execute(
            "UPDATE clearing_accounts AS a SET balance = u.balance, "
            "settled_out = a.settled_out + u.out, settled_in = a.settled_in + u.paid_in, "
            "updated_at = %s FROM unnest(%s::text[], %s::numeric[], %s::numeric[], "
            "%s::numeric[]) AS u (id, balance, out, paid_in) WHERE a.id = u.id",
            (
                now,
                touched,
                [balances[account] for account in touched],
                [settled[account][0] for account in touched],
                [settled[account][1] for account in touched],
            ),
        )
    if resolving is not None:
        r = resolving
        await postgres_packets.resolve(conn, PACKETS, r.packet, r.resolution, r.fulfillment, now)
    return None, results


if TYPE_CHECKING:
    # mypy proves here that PostgresClearing implements the ClearingStore protocol.
    def _is_a_clearing_store(store: PostgresClearing) -> ClearingStore:
        return store
