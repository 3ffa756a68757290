"""Which store a configured database names: a file path is SQLite, a URL is PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from host.engine.store import Store

#: The URL schemes libpq accepts for PostgreSQL.
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_database_url(text: str) -> bool:
    """Whether ``text`` (an ``[engine] database`` value) is a PostgreSQL URL, not a file."""
    return text.startswith(POSTGRES_SCHEMES)


def describe_database(database: Path | str) -> str:
    """The database for messages: the file, or the server and name (never a password)."""
    if isinstance(database, Path):
        return str(database)
    from host.store.postgres_pool import describe

    return describe(database)


async def open_store(database: Path | str) -> Store:
    """Open the engine's store: SQLite at a path, PostgreSQL at a URL (StoreError if not)."""
    if isinstance(database, Path):
        from host.store.sqlite import SqliteStore

        return await SqliteStore.open(database)
    # Imported here: a host on SQLite never loads the PostgreSQL driver.
    from host.store.postgres import PostgresStore

    return await PostgresStore.open(database)
