"""The in-flight journal's table in PostgreSQL (host.connector.ports.ClearingJournal), for the
engine's store (table ``packets``, proposal 1) and the connector's clearing books (table
``clearing_packets``, proposal 2): the PostgreSQL twin of host.store.sqlite_packets.

The functions run on a connection of the caller, inside its transaction where one is needed.
"""

from __future__ import annotations

from psycopg import AsyncConnection, sql
from psycopg.rows import TupleRow

from host.clearing_records import InFlight, Resolution
from host.ilp.outcome import Outcome
from host.store.rows import PACKET_COLUMNS, outcome_from_row, packet_from_row, packet_values

Connection = AsyncConnection[TupleRow]

_COLUMNS = sql.SQL(", ").join(sql.Identifier(name) for name in PACKET_COLUMNS.split(", "))


def migration(table: str) -> tuple[str, ...]:
    """The statements that create the journal's table ``table`` and its indexes.

    Released in the migrations of both the engine's store and the clearing books: never edit
    what it returns (a change is a new migration appended to each).
    """
    return (
        f"""
    CREATE TABLE {table} (
        key         text PRIMARY KEY,
        source      text,
        source_id   bytea NOT NULL,
        target      text,
        target_id   bytea NOT NULL,
        amount      numeric NOT NULL,
        expires_at  double precision NOT NULL,
        condition   bytea NOT NULL,
        resolution  text CHECK (resolution IN ('fulfilled', 'forwarded', 'rejected')),
        fulfillment bytea NOT NULL,
        created_at  double precision NOT NULL,
        resolved_at double precision
    )
    """,
        f"CREATE INDEX {table}_by_source ON {table} (source, source_id)",
        f"CREATE INDEX {table}_unresolved ON {table} (created_at) WHERE resolution IS NULL",
    )


def _values(count: int) -> sql.Composable:
    return sql.SQL(", ").join([sql.Placeholder()] * count)


async def journal(conn: Connection, table: str, packet: InFlight, now: float) -> None:
    """Record ``packet`` as pending (a replay of its key changes nothing)."""
    await conn.execute(
        sql.SQL(
            "INSERT INTO {} ({}, resolution, fulfillment, created_at) "
            "VALUES ({}, NULL, '', %s) ON CONFLICT (key) DO NOTHING"
        ).format(sql.Identifier(table), _COLUMNS, _values(8)),
        (*packet_values(packet, int), now),
    )


async def resolution_for_update(conn: Connection, table: str, key: str) -> Resolution | None:
    """How the packet ``key`` ended (None: pending or not recorded), its row locked."""
    cursor = await conn.execute(
        sql.SQL("SELECT resolution FROM {} WHERE key = %s FOR UPDATE").format(
            sql.Identifier(table)
        ),
        (key,),
    )
    row = await cursor.fetchone()
    return None if row is None or row[0] is None else Resolution(row[0])


async def resolve(
    conn: Connection,
    table: str,
    packet: InFlight,
    resolution: Resolution,
    fulfillment: bytes,
    now: float,
) -> None:
    """Record how ``packet`` ended (inserting it if it was never journaled)."""
    await conn.execute(
        sql.SQL(
            "INSERT INTO {table} ({columns}, resolution, fulfillment, created_at, resolved_at) "
            "VALUES ({values}) ON CONFLICT (key) DO UPDATE SET "
            "resolution = excluded.resolution, fulfillment = excluded.fulfillment, "
            "resolved_at = excluded.resolved_at WHERE {table}.resolution IS NULL"
        ).format(table=sql.Identifier(table), columns=_COLUMNS, values=_values(12)),
        (*packet_values(packet, int), resolution.value, fulfillment, now, now),
    )


async def unresolved(conn: Connection, table: str) -> list[InFlight]:
    """The pending packets, oldest first."""
    cursor = await conn.execute(
        sql.SQL("SELECT {} FROM {} WHERE resolution IS NULL ORDER BY created_at").format(
            _COLUMNS, sql.Identifier(table)
        )
    )
    return [packet_from_row(row) for row in await cursor.fetchall()]


async def outcome(conn: Connection, table: str, source: str, source_id: bytes) -> Outcome:
    """What peer ``source`` is told of its packet ``source_id``."""
    cursor = await conn.execute(
        sql.SQL(
            "SELECT resolution, fulfillment FROM {} WHERE source = %s AND source_id = %s"
        ).format(sql.Identifier(table)),
        (source, source_id),
    )
    return outcome_from_row(await cursor.fetchone())


async def forget(conn: Connection, table: str, resolved_before: float) -> int:
    """Delete the packets resolved before ``resolved_before``; how many went."""
    cursor = await conn.execute(
        sql.SQL("DELETE FROM {} WHERE resolution IS NOT NULL AND resolved_at < %s").format(
            sql.Identifier(table)
        ),
        (resolved_before,),
    )
    return cursor.rowcount
