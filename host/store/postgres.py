"""The shared Store: PostgreSQL, for several host instances on one database.

Each transaction is a PostgreSQL transaction (READ COMMITTED) on a pooled connection; a commit
returns once PostgreSQL has made it durable (``synchronous_commit`` as the server is set up),
and the server groups concurrent commits itself. The protocol's rules map one to one
(host.store.base):

* ``lock_account`` / ``lock_settlement`` are ``SELECT ... FOR UPDATE``. A row that does not exist
  yet cannot be locked, so on a miss the transaction takes an advisory lock on the id and looks
  again: two instances creating one account (or crediting one incoming settlement) serialize,
  and the second finds the first one's row instead of failing on the primary key.
* ``claim_outbox`` is ``FOR UPDATE SKIP LOCKED`` plus a lease written in the same statement:
  instances claiming at once get disjoint rows, and a row whose lease runs stays with its
  worker. A lease is ``now + lease`` by the claiming host's clock, so the hosts' clocks must
  agree within a small part of the lease (NTP).
* Nothing is freed at start-up: other instances may hold live leases. The leases of an instance
  that died run out on their own, and then any instance takes the rows over.
* ``try_lead`` is a session advisory lock on a connection of its own: one instance at a time
  does the housekeeping, and when it dies its connection, and so the lead, goes with it.

Every schema is a deployment of its own: the tables are found through the connection's
``search_path`` (``options=-csearch_path=...`` in the URL), and the lead is per schema.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from host.clearing_records import InFlight, Resolution
from host.engine.model import (
    Account,
    ClearingEffect,
    IdempotencyRecord,
    Settlement,
)
from host.engine.store import Store, Transaction
from host.ilp.outcome import Outcome
from host.store import postgres_packets
from host.store.base import StoreError
from host.store.postgres_pool import describe, open_pool, pooled
from host.store.postgres_schema import (
    LEADER_LOCK,
    LOCK_NAMESPACE,
    MIGRATIONS,
    ROW_CREATION_LOCK,
)
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

Connection = AsyncConnection[TupleRow]
#: The in-flight journal of proposal 1 (host.store.postgres_packets).
PACKETS = "packets"
_RETURNED_SETTLEMENT = ", ".join("s." + c.strip() for c in SETTLEMENT_COLUMNS.split(","))


def _placeholders(count: int) -> str:
    return ", ".join(["%s"] * count)


class _PostgresTransaction:
    """The Transaction protocol over one connection inside ``conn.transaction()``."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def _one(self, query: str, parameters: Sequence[object]) -> TupleRow | None:
        cursor = await self._conn.execute(query, parameters)
        return await cursor.fetchone()

    async def _locked_or_created(self, query: str, key: str) -> TupleRow | None:
        row = await self._one(query, (key,))
        if row is None:
            # No row to lock: serialize creators of this id instead, then look again (READ
            # COMMITTED: the new statement sees what a creator before us committed).
            await self._conn.execute(
                "SELECT pg_advisory_xact_lock(%s::integer, hashtext(%s))",
                (LOCK_NAMESPACE + ROW_CREATION_LOCK, key),
            )
            row = await self._one(query, (key,))
        return row

    async def lock_account(self, account_id: str) -> Account | None:
        row = await self._locked_or_created(
            f"SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = %s FOR UPDATE", account_id
        )
        return None if row is None else account_from_row(row)

    async def insert_account(self, account: Account) -> None:
        await self._conn.execute(
            f"INSERT INTO accounts ({ACCOUNT_COLUMNS}) VALUES ({_placeholders(15)})",
            account_values(account, int),
        )

    async def update_account(self, account: Account) -> None:
        values = account_values(account, int)
        cursor = await self._conn.execute(
            "UPDATE accounts SET adaptor = %s, asset_code = %s, asset_scale = %s, "
            "ledger_scale = %s, settle_threshold = %s, settle_to = %s, min_balance = %s, "
            "max_balance = %s, balance = %s, outgoing_leftover = %s, incoming_leftover = %s, "
            "liquidity = %s, updated_at = %s WHERE id = %s",
            (*values[1:13], values[14], values[0]),
        )
        if cursor.rowcount != 1:
            raise StoreError(f"account {account.id} does not exist")

    async def lock_settlement(self, settlement_id: str) -> Settlement | None:
        row = await self._locked_or_created(
            f"SELECT {SETTLEMENT_COLUMNS} FROM settlements WHERE id = %s FOR UPDATE",
            settlement_id,
        )
        return None if row is None else settlement_from_row(row)

    async def insert_settlement(self, settlement: Settlement) -> None:
        await self._conn.execute(
            f"INSERT INTO settlements ({SETTLEMENT_COLUMNS}) VALUES ({_placeholders(14)})",
            settlement_values(settlement, int),
        )

    async def update_settlement(self, settlement: Settlement) -> None:
        v = settlement_values(settlement, int)
        cursor = await self._conn.execute(
            "UPDATE settlements SET state = %s, amount = %s, ledger_amount = %s, "
            "ledger_settlement_id = %s, attempts = %s, last_error = %s, next_attempt_at = %s, "
            "lease_until = %s, updated_at = %s WHERE id = %s",
            (*v[4:12], v[13], v[0]),
        )
        if cursor.rowcount != 1:
            raise StoreError(f"settlement {settlement.id} does not exist")

    async def has_failed_settlement(self, account_id: str) -> bool:
        row = await self._one(
            "SELECT 1 FROM settlements WHERE account_id = %s AND direction = 'outgoing' "
            "AND state = 'failed' LIMIT 1",
            (account_id,),
        )
        return row is not None

    async def get_idempotency(self, scope: str, key: str) -> IdempotencyRecord | None:
        row = await self._one(
            "SELECT scope, key, account_id, request, result, created_at FROM idempotency "
            "WHERE scope = %s AND key = %s",
            (scope, key),
        )
        return None if row is None else IdempotencyRecord(*row)

    async def record_idempotency(self, record: IdempotencyRecord) -> None:
        r = record
        await self._conn.execute(
            "INSERT INTO idempotency (scope, key, account_id, request, result, created_at) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            (r.scope, r.key, r.account_id, r.request, r.result, r.created_at),
        )

    async def record_clearing_effect(self, effect: ClearingEffect) -> None:
        await self._conn.execute(
            "INSERT INTO clearing_effects (key, account_id, delta, created_at) "
            "VALUES (%s, %s, %s, %s)",
            (effect.key, effect.account_id, effect.delta, effect.created_at),
        )

    async def journal_packet(self, packet: InFlight, now: float) -> None:
        await postgres_packets.journal(self._conn, PACKETS, packet, now)

    async def packet_resolution(self, key: str) -> Resolution | None:
        row = await self._locked_or_created(
            "SELECT resolution FROM packets WHERE key = %s FOR UPDATE", key
        )
        return None if row is None or row[0] is None else Resolution(row[0])

    async def resolve_packet(
        self, packet: InFlight, resolution: Resolution, fulfillment: bytes, now: float
    ) -> None:
        await postgres_packets.resolve(self._conn, PACKETS, packet, resolution, fulfillment, now)


class PostgresStore:
    """The Store protocol over a PostgreSQL database (see the module docstring). Use ``open``."""

    def __init__(self, pool: AsyncConnectionPool[Connection], url: str) -> None:
        self._pool = pool
        self._url = url
        self._closed = False
        self._leader: Connection | None = None
        self.description = describe(url)

    @classmethod
    async def open(
        cls, url: str, *, min_size: int = 2, max_size: int = 16, connect_timeout: float = 15.0
    ) -> PostgresStore:
        """Connect to ``url`` (a libpq URL or conninfo) and migrate it if needed.

        Up to ``max_size`` connections: each running transaction holds one. Raises StoreError
        if the server cannot be reached within ``connect_timeout`` seconds, SchemaTooNew if a
        newer host wrote the database.
        """
        pool = await open_pool(
            url,
            MIGRATIONS,
            min_size=min_size,
            max_size=max_size,
            connect_timeout=connect_timeout,
        )
        return cls(pool, url)

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Connection]:
        if self._closed:
            raise StoreError(f"the store of the {self.description} is closed")
        async with pooled(self._pool, self.description) as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """One PostgreSQL transaction; committed (durably) when the block is left normally."""
        async with self._connection() as conn, conn.transaction():
            yield _PostgresTransaction(conn)

    async def _fetch(self, query: str, parameters: Sequence[object] = ()) -> list[TupleRow]:
        async with self._connection() as conn:
            cursor = await conn.execute(query, parameters)
            return await cursor.fetchall()

    async def _change(self, query: str, parameters: Sequence[object]) -> int:
        async with self._connection() as conn:
            cursor = await conn.execute(query, parameters)
            return cursor.rowcount

    async def get_account(self, account_id: str) -> Account | None:
        """The committed account, or None."""
        rows = await self._fetch(
            f"SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = %s", (account_id,)
        )
        return account_from_row(rows[0]) if rows else None

    async def list_accounts(self) -> list[Account]:
        """Every account, by id."""
        rows = await self._fetch(f"SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY id")
        return [account_from_row(row) for row in rows]

    async def pending_settlement_totals(self, account_id: str | None) -> dict[str, int]:
        """Per account, the sum of its unfinished outgoing settlements."""
        where = UNFINISHED_OUTGOING + ("" if account_id is None else " AND account_id = %s")
        rows = await self._fetch(
            f"SELECT account_id, SUM(amount) FROM settlements WHERE {where} GROUP BY account_id",
            () if account_id is None else (account_id,),
        )
        return {account: int(total) for account, total in rows}

    async def settled_totals(self, account_id: str) -> tuple[int, int]:
        """Per direction, the sum of an account's settlements: its running totals (kept by a
        trigger on every insert, host.store.postgres_schema version 4), one row."""
        rows = await self._fetch(
            "SELECT outgoing, incoming FROM settled_totals WHERE account_id = %s", (account_id,)
        )
        return (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)

    async def get_settlement(self, settlement_id: str) -> Settlement | None:
        """The committed settlement, or None."""
        rows = await self._fetch(
            f"SELECT {SETTLEMENT_COLUMNS} FROM settlements WHERE id = %s", (settlement_id,)
        )
        return settlement_from_row(rows[0]) if rows else None

    async def list_settlements(self, account_id: str | None, limit: int) -> list[Settlement]:
        """At most ``limit`` settlements, newest first."""
        where = "" if account_id is None else "WHERE account_id = %s"
        parameters: tuple[object, ...] = (limit,) if account_id is None else (account_id, limit)
        rows = await self._fetch(
            f"SELECT {SETTLEMENT_COLUMNS} FROM settlements {where} ORDER BY seq DESC LIMIT %s",
            parameters,
        )
        return [settlement_from_row(row) for row in rows]

    async def claim_outbox(self, limit: int, now: float, lease: float) -> list[Settlement]:
        """Lease up to ``limit`` due rows with work left, skipping rows other claimers hold."""
        rows = await self._fetch(
            "WITH due AS ("
            f"  SELECT seq FROM settlements WHERE state IN {OUTBOX} AND next_attempt_at <= %s"
            "   AND (lease_until IS NULL OR lease_until <= %s)"
            "   ORDER BY next_attempt_at LIMIT %s FOR UPDATE SKIP LOCKED"
            ") UPDATE settlements AS s SET lease_until = %s FROM due WHERE s.seq = due.seq "
            f"RETURNING s.seq, {_RETURNED_SETTLEMENT}",
            (now, now, limit, now + lease),
        )
        rows.sort(key=lambda row: (row[11], row[0]))  # next_attempt_at, then insertion order
        return [settlement_from_row(row[1:]) for row in rows]

    async def resume_outbox(self, now: float) -> int:
        """Make every row with work left due at ``now`` (running leases stay).

        Rows another transaction holds are skipped (they are being worked), and the others are
        locked in one order: instances starting together never deadlock here.
        """
        return await self._change(
            "UPDATE settlements SET next_attempt_at = %s WHERE seq IN ("
            f"  SELECT seq FROM settlements WHERE state IN {OUTBOX}"
            "   ORDER BY seq FOR UPDATE SKIP LOCKED)",
            (now,),
        )

    async def next_outbox_due(self) -> float | None:
        """When the next row with work left is due (its lease included), or None."""
        rows = await self._fetch(
            "SELECT MIN(GREATEST(next_attempt_at, COALESCE(lease_until, 0))) FROM settlements "
            f"WHERE state IN {OUTBOX} AND next_attempt_at IS NOT NULL"
        )
        return None if rows[0][0] is None else float(rows[0][0])

    async def outbox_summary(self) -> tuple[int, float | None]:
        """The rows with work left and the creation time of the oldest (None: none), for
        the outbox metrics (host.metrics)."""
        rows = await self._fetch(
            f"SELECT COUNT(*), MIN(created_at) FROM settlements WHERE state IN {OUTBOX}"
        )
        return int(rows[0][0]), None if rows[0][1] is None else float(rows[0][1])

    async def set_liquidity(self, adaptor: str, liquidity: int | None, now: float) -> int:
        """Record the adaptor's liquidity on each of its accounts (locked in id order, as every
        instance reporting it does: no deadlock between them)."""
        return await self._change(
            "UPDATE accounts SET liquidity = %s, updated_at = %s WHERE id IN ("
            "  SELECT id FROM accounts WHERE adaptor = %s ORDER BY id FOR UPDATE)",
            (liquidity, now, adaptor),
        )

    async def forget_idempotency(self, created_before: float) -> int:
        """Delete idempotency records created before ``created_before`` (and the packets
        resolved before then)."""
        async with self._connection() as conn:
            await postgres_packets.forget(conn, PACKETS, created_before)
        return await self._change(
            "DELETE FROM idempotency WHERE created_at < %s", (created_before,)
        )

    async def unresolved_packets(self) -> list[InFlight]:
        """The journaled packets not resolved yet, oldest first."""
        async with self._connection() as conn:
            return await postgres_packets.unresolved(conn, PACKETS)

    async def packet_outcome(self, source: str, source_id: bytes) -> Outcome:
        """What peer ``source`` is told of its packet ``source_id``."""
        async with self._connection() as conn:
            return await postgres_packets.outcome(conn, PACKETS, source, source_id)

    async def clearing_effects(self, limit: int) -> list[ClearingEffect]:
        """At most ``limit`` journaled clearing effects, oldest first."""
        rows = await self._fetch(
            "SELECT key, account_id, delta, created_at FROM clearing_effects ORDER BY seq LIMIT %s",
            (limit,),
        )
        return [ClearingEffect(key, account, int(delta), at) for key, account, delta, at in rows]

    async def count_clearing_effects(self) -> int:
        """How many journaled effects wait for the connector."""
        rows = await self._fetch("SELECT COUNT(*) FROM clearing_effects")
        return int(rows[0][0])

    async def forget_clearing_effect(self, key: str) -> None:
        """Drop a journaled effect the connector confirmed."""
        await self._change("DELETE FROM clearing_effects WHERE key = %s", (key,))

    async def try_lead(self) -> bool:
        """Whether this instance leads the housekeeping of its database (see the docstring).

        The lead is kept until this store closes or loses its connection; meanwhile every
        call checks that the connection still holds it.
        """
        if self._closed:
            return False
        if self._leader is not None:
            try:
                await self._leader.execute("SELECT 1")
                return True
            except psycopg.Error:
                await self._drop_leader()
        try:
            conn = await AsyncConnection.connect(self._url, autocommit=True)
        except psycopg.Error:
            return False
        try:
            cursor = await conn.execute(
                "SELECT pg_try_advisory_lock(%s::integer, hashtext(current_schema()))",
                (LOCK_NAMESPACE + LEADER_LOCK,),
            )
            row = await cursor.fetchone()
        except psycopg.Error:
            row = None
        if row is None or not row[0]:
            await conn.close()
            return False
        self._leader = conn
        return True

    async def _drop_leader(self) -> None:
        leader, self._leader = self._leader, None
        if leader is not None:
            with contextlib.suppress(psycopg.Error):
                await leader.close()

    async def close(self) -> None:
        """Give up the lead and close every connection. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._drop_leader()
        await self._pool.close()


if TYPE_CHECKING:
    # mypy proves here that PostgresStore implements the Store protocol.
    def _is_a_store(store: PostgresStore) -> Store:
        return store
