"""The SQLite store beyond the contract suite (test_store_contract.py): schema migrations,
refusal of foreign or newer databases, the one-process lock, leases void after a restart."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import pytest

from host.engine.model import Account, Direction, Policy, Settlement, SettlementState
from host.store import SchemaTooNew, StoreError, StoreInUse
from host.store.rows import (
    ACCOUNT_COLUMNS,
    SETTLEMENT_COLUMNS,
    account_values,
    settlement_values,
)
from host.store.sqlite import SqliteStore
from host.store.sqlite_schema import MIGRATIONS, Migration, migrate, schema_version

T = TypeVar("T")
BIG = 10**70  # far beyond SQLite's 64-bit INTEGER


def run(coro: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await coro()

    return asyncio.run(main())


def account(account_id: str = "alice", balance: int = 0) -> Account:
    return Account(
        id=account_id,
        adaptor="sim",
        asset_code="ETH",
        asset_scale=18,
        ledger_scale=18,
        policy=Policy(-BIG, -BIG // 2, -2 * BIG, BIG),
        balance=balance,
        outgoing_leftover=BIG + 1,
        incoming_leftover=3,
        liquidity=BIG * 7,
        created_at=1.5,
        updated_at=2.5,
    )


def outgoing(settlement_id: str, next_attempt_at: float | None = 0.0) -> Settlement:
    return Settlement(
        id=settlement_id,
        account_id="alice",
        adaptor="sim",
        direction=Direction.OUTGOING,
        state=SettlementState.PENDING,
        amount=BIG,
        ledger_amount=BIG * 10,
        next_attempt_at=next_attempt_at,
        created_at=1.0,
        updated_at=1.0,
    )


def version_of(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        (version,) = conn.execute("SELECT version FROM schema_version").fetchone()
    conn.close()
    return int(version)


def test_a_new_database_is_migrated_to_the_latest_version(tmp_path: Path) -> None:
    async def main() -> None:
        store = await SqliteStore.open(tmp_path / "host.db")
        await store.close()

    run(main)
    assert version_of(tmp_path / "host.db") == len(MIGRATIONS)
    with sqlite3.connect(tmp_path / "host.db") as conn:
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    conn.close()
    assert mode == "wal"
    assert {"accounts", "settlements", "idempotency", "schema_version"} <= tables


def test_migrations_apply_in_order_once_and_atomically(tmp_path: Path) -> None:
    m1: Migration = ("CREATE TABLE things (n INTEGER)", "INSERT INTO things VALUES (1)")
    m2: Migration = ("INSERT INTO things VALUES (2)",)
    broken: Migration = ("INSERT INTO things VALUES (3)", "THIS IS NOT SQL")
    conn = sqlite3.connect(tmp_path / "custom.db", isolation_level=None)
    try:
        assert schema_version(conn) == 0
        assert migrate(conn, [m1]) == 0
        assert migrate(conn, [m1, m2]) == 1
        assert migrate(conn, [m1, m2]) == 2  # nothing left to do
        assert schema_version(conn) == 2
        with pytest.raises(sqlite3.OperationalError):
            migrate(conn, [m1, m2, broken])
        assert schema_version(conn) == 2  # the broken migration left nothing behind
        assert [r[0] for r in conn.execute("SELECT n FROM things ORDER BY n")] == [1, 2]
        with pytest.raises(SchemaTooNew, match=r"version 2 .* only up to 1"):
            migrate(conn, [m1])
        assert schema_version(conn) == 2
        assert not conn.in_transaction
    finally:
        conn.close()


def test_a_function_step_runs_in_its_migrations_transaction(tmp_path: Path) -> None:
    def count(conn: sqlite3.Connection) -> None:
        (n,) = conn.execute("SELECT COUNT(*) FROM things").fetchone()
        conn.execute("INSERT INTO things VALUES (?)", (n * 10,))

    def broken(conn: sqlite3.Connection) -> None:
        raise RuntimeError("no")

    m1: Migration = ("CREATE TABLE things (n INTEGER)", "INSERT INTO things VALUES (1)", count)
    m2: Migration = ("INSERT INTO things VALUES (2)", broken)
    conn = sqlite3.connect(tmp_path / "custom.db", isolation_level=None)
    try:
        migrate(conn, [m1])
        with pytest.raises(RuntimeError, match="no"):
            migrate(conn, [m1, m2])
        assert schema_version(conn) == 1
        assert [r[0] for r in conn.execute("SELECT n FROM things ORDER BY n")] == [1, 10]
    finally:
        conn.close()


def test_an_older_database_gets_the_running_totals_of_the_settlements_it_holds(
    tmp_path: Path,
) -> None:
    path = tmp_path / "host.db"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        migrate(conn, MIGRATIONS[:3])  # the schema before the running totals
        conn.execute(
            f"INSERT INTO accounts ({ACCOUNT_COLUMNS}) VALUES ({', '.join('?' * 15)})",
            account_values(account(), str),
        )
        rows = [
            outgoing("o1"),
            replace(outgoing("o2"), state=SettlementState.COMPLETED, amount=3),
            replace(
                outgoing("i1"),
                direction=Direction.INCOMING,
                state=SettlementState.CREDITED,
                amount=BIG * 2,
            ),
        ]
        conn.executemany(
            f"INSERT INTO settlements ({SETTLEMENT_COLUMNS}) VALUES ({', '.join('?' * 14)})",
            [settlement_values(row, str) for row in rows],
        )
    finally:
        conn.close()

    async def main() -> None:
        store = await SqliteStore.open(path)
        try:
            assert await store.settled_totals("alice") == (BIG + 3, BIG * 2)
            async with store.transaction() as tx:
                await tx.insert_settlement(replace(outgoing("o3"), amount=BIG))
            assert await store.settled_totals("alice") == (2 * BIG + 3, BIG * 2)
        finally:
            await store.close()

    run(main)
    assert version_of(path) == len(MIGRATIONS)


def test_a_database_from_a_newer_host_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "host.db"

    async def open_close() -> None:
        store = await SqliteStore.open(path)
        await store.close()

    run(open_close)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE schema_version SET version = 99")
    conn.close()
    with pytest.raises(SchemaTooNew, match=r"schema version 99 .* newer host"):
        run(open_close)
    assert version_of(path) == 99
    with pytest.raises(SchemaTooNew):  # and the lock was released
        run(open_close)


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"this is not an SQLite database, it is a long enough text file" * 20)

    async def open_close() -> None:
        store = await SqliteStore.open(path)
        await store.close()

    with pytest.raises(StoreError, match="not a usable host database"):
        run(open_close)

    async def open_missing() -> None:
        await SqliteStore.open(tmp_path / "no-such-dir" / "host.db")

    with pytest.raises(StoreError, match="cannot open the lock file"):
        run(open_missing)


def test_one_process_one_store_per_file(tmp_path: Path) -> None:
    async def main() -> None:
        store = await SqliteStore.open(tmp_path / "host.db")
        try:
            with pytest.raises(StoreInUse, match="in use"):
                await SqliteStore.open(tmp_path / "host.db")
        finally:
            await store.close()
        await store.close()  # idempotent
        with pytest.raises(StoreError, match="closed"):
            await store.get_account("alice")
        with pytest.raises(StoreError, match="closed"):
            async with store.transaction():
                pass
        again = await SqliteStore.open(tmp_path / "host.db")
        await again.close()

    run(main)


def test_a_new_run_voids_the_leases_of_the_previous_one(tmp_path: Path) -> None:
    async def main() -> None:
        store = await SqliteStore.open(tmp_path / "host.db")
        try:
            async with store.transaction() as tx:
                await tx.insert_account(account())
                await tx.insert_settlement(outgoing("due-1", 10.0))
                await tx.insert_settlement(outgoing("due-2", 20.0))
            assert len(await store.claim_outbox(10, now=100.0, lease=30.0)) == 2
            assert await store.claim_outbox(10, now=110.0, lease=30.0) == []  # leased
        finally:
            await store.close()
        store = await SqliteStore.open(tmp_path / "host.db")
        try:
            # The file is this run's alone: leases of the previous one are void.
            rows = await store.claim_outbox(10, now=110.0, lease=30.0)
            assert sorted(r.id for r in rows) == ["due-1", "due-2"]
        finally:
            await store.close()

    run(main)
