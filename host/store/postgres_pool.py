"""A pool of connections to a PostgreSQL database, opened and migrated, with one-line errors:
what the engine's store (host.store.postgres) and the connector's clearing books
(host.store.postgres_clearing) both open.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator, Sequence

import psycopg
from psycopg import AsyncConnection
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from host.store.base import StoreError
from host.store.postgres_schema import VERSION_TABLE, Migration, migrate

Connection = AsyncConnection[TupleRow]


def describe(url: str) -> str:
    """The database of ``url`` for messages and logs: host and name, never a password."""
    try:
        info = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "PostgreSQL (unparsable URL)"
    host = info.get("host") or "localhost"
    port = f":{info['port']}" if info.get("port") else ""
    return f"PostgreSQL database {info.get('dbname') or '(default)'!s} on {host}{port}"


def first_line(exc: BaseException) -> str:
    """An exception's message on one line (libpq's run over several)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextlib.contextmanager
def _quiet_pool() -> Iterator[None]:
    """While the pool first connects, its retries stay out of the log: if it cannot connect,
    the one StoreError says why (afterwards, a lost connection's retries are worth a warning)."""
    logger = logging.getLogger("psycopg.pool")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


async def open_pool(
    url: str,
    migrations: Sequence[Migration],
    *,
    version_table: str = VERSION_TABLE,
    min_size: int = 2,
    max_size: int = 16,
    connect_timeout: float = 15.0,
    name: str = "ilp-host",
) -> AsyncConnectionPool[Connection]:
    """Connect to ``url`` (a libpq URL or conninfo) and migrate it if needed
    (host.store.postgres_schema.migrate with ``version_table``).

    Up to ``max_size`` connections, in autocommit mode. Raises StoreError if the server cannot
    be reached within ``connect_timeout`` seconds or refuses us, SchemaTooNew if a newer host
    wrote the database.
    """
    pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        kwargs={"autocommit": True},
        timeout=connect_timeout,
        open=False,
        name=name,
    )
    try:
        try:
            with _quiet_pool():
                await pool.open(wait=True, timeout=connect_timeout)
        except PoolTimeout as exc:
            # The pool retries quietly; one direct attempt tells why it cannot connect.
            try:
                conn = await AsyncConnection.connect(url, connect_timeout=5)
            except psycopg.Error as cause:
                raise StoreError(
                    f"cannot connect to the {describe(url)}: {first_line(cause)}"
                ) from exc
            await conn.close()
            raise StoreError(
                f"cannot connect to the {describe(url)} within {connect_timeout} s"
            ) from exc
        async with pool.connection() as conn:
            await migrate(conn, migrations, version_table)
    except psycopg.Error as exc:
        await pool.close()
        raise StoreError(f"the {describe(url)} is not usable: {first_line(exc)}") from exc
    except BaseException:
        await pool.close()
        raise
    return pool


@contextlib.asynccontextmanager
async def pooled(
    pool: AsyncConnectionPool[Connection], description: str
) -> AsyncIterator[Connection]:
    """A connection of ``pool`` for the block; a database error, or no connection free in time,
    as a StoreError (one line; ``description`` names the database)."""
    try:
        async with pool.connection() as conn:
            yield conn
    except psycopg.Error as exc:
        raise StoreError(f"database error: {first_line(exc)}") from exc
    except PoolTimeout as exc:
        raise StoreError(f"no connection to the {description}: {exc}") from exc
