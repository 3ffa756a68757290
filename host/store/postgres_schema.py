"""The PostgreSQL schema, as an ordered list of migrations, and the function that applies them.

The same rules as the SQLite schema (host.store.sqlite_schema), and the same version numbers for
the same content: version N is ``MIGRATIONS[0..N-1]`` applied in order, ``schema_version`` holds
N, each migration commits together with its version bump, released migrations are never edited,
and a database of a newer host is refused untouched.

Several hosts may start at once against one database: the migrator holds a transaction-level
advisory lock (MIGRATION_LOCK), so one of them migrates and the others find the work done.

Amounts are ``numeric`` without a precision (any number of digits, exact); times are
``double precision`` seconds since the epoch, as the hosts' clocks give them.
"""

from __future__ import annotations

from collections.abc import Sequence

from psycopg import AsyncConnection, sql
from psycopg.rows import TupleRow

from host.store import postgres_packets
from host.store.base import SchemaTooNew

Migration = tuple[str, ...]

#: Advisory locks of the host take two keys: ``LOCK_NAMESPACE + kind`` (one of the three below)
#: and which one of that kind (a hash of an id, say).
LOCK_NAMESPACE = 0x11_9C_05_70
MIGRATION_LOCK = 1
LEADER_LOCK = 2
ROW_CREATION_LOCK = 3
#: The table that holds the engine store's schema version.
VERSION_TABLE = "schema_version"

_V1: Migration = (
    """
    CREATE TABLE accounts (
        id                text PRIMARY KEY,
        adaptor           text NOT NULL,
        asset_code        text NOT NULL,
        asset_scale       integer NOT NULL,
        ledger_scale      integer NOT NULL,
        settle_threshold  numeric NOT NULL,
        settle_to         numeric NOT NULL,
        min_balance       numeric NOT NULL,
        max_balance       numeric NOT NULL,
        balance           numeric NOT NULL,
        outgoing_leftover numeric NOT NULL,
        incoming_leftover numeric NOT NULL,
        liquidity         numeric,
        created_at        double precision NOT NULL,
        updated_at        double precision NOT NULL
    )
    """,
    "CREATE INDEX accounts_by_adaptor ON accounts (adaptor)",
    # seq: insertion order for "newest first".
    """
    CREATE TABLE settlements (
        seq                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id                   text NOT NULL UNIQUE,
        account_id           text NOT NULL REFERENCES accounts (id),
        adaptor              text NOT NULL,
        direction            text NOT NULL CHECK (direction IN ('outgoing', 'incoming')),
        state                text NOT NULL
            CHECK (state IN ('pending', 'submitted', 'completed', 'failed', 'credited')),
        amount               numeric NOT NULL,
        ledger_amount        numeric NOT NULL,
        ledger_settlement_id text NOT NULL,
        attempts             integer NOT NULL,
        last_error           text NOT NULL,
        next_attempt_at      double precision,
        lease_until          double precision,
        created_at           double precision NOT NULL,
        updated_at           double precision NOT NULL
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
        scope      text NOT NULL,
        key        text NOT NULL,
        account_id text NOT NULL,
        request    text NOT NULL,
        result     text NOT NULL,
        created_at double precision NOT NULL,
        PRIMARY KEY (scope, key)
    )
    """,
    "CREATE INDEX idempotency_by_age ON idempotency (created_at)",
)

# Version 2: the journal of clearing effects (proposal 2), as in SQLite's version 2.
_V2: Migration = (
    """
    CREATE TABLE clearing_effects (
        seq        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        key        text NOT NULL UNIQUE,
        account_id text NOT NULL REFERENCES accounts (id),
        delta      numeric NOT NULL,
        created_at double precision NOT NULL
    )
    """,
)

# Version 3: the connector's in-flight journal, as in SQLite's version 3
# (host.store.sqlite_packets).
_V3: Migration = postgres_packets.migration("packets")

# Version 4: each account's running settled totals, as in SQLite's version 4
# (host.store.sqlite_totals), so that a reconciliation reads two numbers instead of summing every
# settlement of the account. Here a trigger adds each settlement as it is inserted: ``numeric``
# adds exactly, and every writer of the table keeps the totals, a host of an older version still
# running included. The table is locked against inserts while the totals are first counted.
_V4: Migration = (
    "LOCK TABLE settlements IN SHARE MODE",
    """
    CREATE TABLE settled_totals (
        account_id text PRIMARY KEY REFERENCES accounts (id),
        outgoing   numeric NOT NULL,
        incoming   numeric NOT NULL
    )
    """,
    """
    INSERT INTO settled_totals (account_id, outgoing, incoming)
        SELECT account_id,
               COALESCE(SUM(amount) FILTER (WHERE direction = 'outgoing'), 0),
               COALESCE(SUM(amount) FILTER (WHERE direction = 'incoming'), 0)
        FROM settlements GROUP BY account_id
    """,
    """
    CREATE FUNCTION settled_totals_add() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO settled_totals AS t (account_id, outgoing, incoming)
            VALUES (NEW.account_id,
                    CASE WHEN NEW.direction = 'outgoing' THEN NEW.amount ELSE 0 END,
                    CASE WHEN NEW.direction = 'incoming' THEN NEW.amount ELSE 0 END)
            ON CONFLICT (account_id) DO UPDATE
                SET outgoing = t.outgoing + EXCLUDED.outgoing,
                    incoming = t.incoming + EXCLUDED.incoming;
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE TRIGGER settled_totals_add AFTER INSERT ON settlements
        FOR EACH ROW EXECUTE FUNCTION settled_totals_add()
    """,
)

#: Every migration, oldest first. Append only.
MIGRATIONS: tuple[Migration, ...] = (_V1, _V2, _V3, _V4)


async def schema_version(conn: AsyncConnection[TupleRow], table: str = VERSION_TABLE) -> int:
    """The schema version of the connection's current schema, as ``table`` records it (0 when
    it has no such table)."""
    cursor = await conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,))
    row = await cursor.fetchone()
    if row is None or not row[0]:
        return 0
    cursor = await conn.execute(sql.SQL("SELECT version FROM {}").format(sql.Identifier(table)))
    row = await cursor.fetchone()
    return 0 if row is None else int(row[0])


async def migrate(
    conn: AsyncConnection[TupleRow],
    migrations: Sequence[Migration] = MIGRATIONS,
    table: str = VERSION_TABLE,
) -> int:
    """Bring the current schema up to ``len(migrations)``; the version it was at.

    ``table`` holds the version of this set of migrations: the engine's store and the
    connector's clearing books (host.store.postgres_clearing) each have their own, so both may
    live in one schema. ``conn`` must be in autocommit mode (each step opens its own
    transaction). Raises SchemaTooNew, leaving the database untouched, if the database is newer
    than ``migrations``.
    """
    target = len(migrations)
    start = None
    version = 0
    versions = sql.Identifier(table)
    while True:
        async with conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(%s::integer, 0)", (LOCK_NAMESPACE + MIGRATION_LOCK,)
            )
            version = await schema_version(conn, table)
            if start is None:
                start = version
            if version > target:
                raise SchemaTooNew(
                    f"the database has schema version {version} but this host knows only up to "
                    f"{target}: it was written by a newer host; upgrade this host or use another "
                    "database"
                )
            if version == target:
                return start
            if version == 0:
                await conn.execute(
                    sql.SQL("CREATE TABLE {} (version integer NOT NULL)").format(versions)
                )
                await conn.execute(sql.SQL("INSERT INTO {} (version) VALUES (0)").format(versions))
            for statement in migrations[version]:
                await conn.execute(statement.encode())  # not a LiteralString
            await conn.execute(
                sql.SQL("UPDATE {} SET version = %s").format(versions), (version + 1,)
            )
