"""The connector's clearing books on each backend (host.store.clearing): SQLite and PostgreSQL
(a real server, started once per session by tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.postgres_server import PostgresServer


@pytest.fixture(params=["sqlite", "postgres"])
def books(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a test's clearing books are: an SQLite file's path, or a PostgreSQL URL to a
    schema of its own. Opening it again gives the same books."""
    if request.param == "sqlite":
        return str(tmp_path / "connector.db")
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.new_schema()
