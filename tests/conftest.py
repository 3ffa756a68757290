"""Shared test setup."""

import os

# Before anything imports grpc: see host/__init__.py (tests start supervisors in-process).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from collections.abc import Iterator

import pytest

from tests.postgres_server import TEST_SETTINGS, PostgresServer, postgres_server


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole session, started on first use (tests.postgres_server);
    each test takes a schema of its own with ``postgres.new_schema()``."""
    with postgres_server(TEST_SETTINGS) as server:
        yield server
