"""The SQLite store's accounts in memory (host.store.account_cache): what the store returns is
always what its file holds, for the writer and for readers, whatever a transaction or its batch
did: kept, rolled back, lost at COMMIT, or changed by a statement the cache cannot follow."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from host.engine.model import Account, Policy
from host.store import StoreError
from host.store.account_cache import AccountCache
from host.store.rows import ACCOUNT_COLUMNS, account_from_row
from host.store.sqlite import SqliteStore
from tests.store.test_store_groupcommit import add_one, engine_on

POLICY = Policy(settle_threshold=-100, settle_to=0, min_balance=-1000, max_balance=1000)
ALICE = Account("alice", "sim", "USD", 2, 2, POLICY)


def test_a_transaction_s_writes_reach_readers_only_once_its_batch_committed() -> None:
    cache = AccountCache()
    cache.keep_committed(ALICE)
    cache.keep_written(ALICE)
    cache.write(replace(ALICE, balance=5))
    assert cache.written("alice") == replace(ALICE, balance=5)
    assert cache.committed("alice") == ALICE
    cache.kept()
    assert cache.committed("alice") == ALICE
    cache.committed_batch()
    assert cache.committed("alice") == replace(ALICE, balance=5)


def test_a_rolled_back_transaction_leaves_the_batch_as_it_was() -> None:
    cache = AccountCache()
    cache.keep_written(ALICE)
    cache.write(replace(ALICE, balance=1))
    cache.kept()
    cache.write(replace(ALICE, balance=2))
    cache.write(replace(ALICE, id="bob"))
    cache.undone()
    assert cache.written("alice") == replace(ALICE, balance=1)
    assert cache.written("bob") is None
    cache.committed_batch()
    assert cache.committed("alice") == replace(ALICE, balance=1)
    assert cache.committed("bob") is None


def test_a_lost_batch_or_a_blind_statement_empties_what_it_may_have_changed() -> None:
    cache = AccountCache()
    cache.keep_committed(ALICE)
    cache.keep_written(ALICE)
    cache.write(replace(ALICE, balance=1))
    cache.kept()
    cache.lost_batch()
    assert cache.written("alice") is None
    assert cache.committed("alice") == ALICE
    cache.keep_written(ALICE)
    cache.blind_write()
    assert cache.written("alice") is None
    assert cache.committed("alice") == ALICE  # not committed yet
    cache.kept()
    cache.committed_batch()
    assert cache.committed("alice") is None


def on_file(path: Path, account_id: str) -> Account:
    with sqlite3.connect(path) as conn:
        row = conn.execute(
            f"SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ?", (account_id,)
        ).fetchone()
    return account_from_row(row)


async def in_transaction(store: SqliteStore, account_id: str) -> Account | None:
    async with store.transaction() as tx:
        return await tx.lock_account(account_id)


def test_a_batch_lost_at_commit_is_forgotten_by_the_writer_and_never_seen_by_readers(
    tmp_path: Path,
) -> None:
    """A deferred foreign key makes the COMMIT itself fail: both members of the batch fail,
    and the balance one of them wrote must not survive in memory."""

    async def orphan_settlement(store: SqliteStore) -> None:
        async with store.transaction() as tx:
            await add_one_in(tx, "bob")
            context = tx._ctx  # type: ignore[attr-defined]
            context.defer(lambda c: c.execute("PRAGMA defer_foreign_keys = ON"))
            context.defer(
                lambda c: c.execute(
                    "INSERT INTO settlements (id, account_id, adaptor, direction, state, amount, "
                    "ledger_amount, ledger_settlement_id, attempts, last_error, created_at, "
                    "updated_at) VALUES ('s', 'nobody', 'sim', 'outgoing', 'pending', '1', '1', "
                    "'', 0, '', 0, 0)"
                )
            )

    async def add_one_in(tx: object, account: str) -> None:
        current = await tx.lock_account(account)  # type: ignore[attr-defined]
        await tx.update_account(replace(current, balance=current.balance + 1))  # type: ignore[attr-defined]

    async def main() -> None:
        path = tmp_path / "host.db"
        store, _ = await engine_on(path)
        try:
            await add_one(store, "alice")
            outcomes = await asyncio.gather(
                add_one(store, "alice"), orphan_settlement(store), return_exceptions=True
            )
            assert all(isinstance(o, StoreError) for o in outcomes), outcomes
            for account_id, balance in (("alice", 1), ("bob", 0)):
                written = await in_transaction(store, account_id)
                committed = await store.get_account(account_id)
                assert written is not None and committed is not None
                assert written.balance == committed.balance == balance
                assert on_file(path, account_id) == written == committed
            await add_one(store, "alice")
            alice = await store.get_account("alice")
            assert alice is not None and alice.balance == 2
        finally:
            await store.close()

    asyncio.run(main())


def test_many_transactions_kept_and_undone_leave_memory_equal_to_the_file(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        path = tmp_path / "host.db"
        store, _ = await engine_on(path)
        try:
            calls = [add_one(store, ("alice", "bob")[i % 2], fail=i % 3 == 0) for i in range(60)]
            outcomes = await asyncio.gather(*calls, return_exceptions=True)
            kept = [i for i, o in enumerate(outcomes) if o is None]
            assert len(kept) == 40
            async with store.transaction() as tx:
                # A statement the cache cannot follow, between reads of both views.
                await tx.execute("UPDATE accounts SET liquidity = '7'", ())
            for account_id in ("alice", "bob"):
                expected = sum(1 for i in kept if ("alice", "bob")[i % 2] == account_id)
                written = await in_transaction(store, account_id)
                committed = await store.get_account(account_id)
                assert written == committed == on_file(path, account_id)
                assert committed is not None
                assert (committed.balance, committed.liquidity) == (expected, 7)
        finally:
            await store.close()
        with pytest.raises(StoreError, match="closed"):
            await store.get_account("alice")

    asyncio.run(main())
