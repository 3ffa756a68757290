"""Group commit: concurrent transactions share commits, yet each one is all-or-nothing, every
acknowledged one is committed, and failures or cancellations of some never stall the others."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from host.engine import Engine, Policy
from host.engine.store import Transaction
from host.store import StoreError
from host.store.sqlite import SqliteStore

NO_SETTLING = Policy(settle_threshold=-(10**30), settle_to=0, min_balance=-(10**30), max_balance=0)


async def engine_on(path: Path, max_batch: int = 256) -> tuple[SqliteStore, Engine]:
    store = await SqliteStore.open(path, max_batch=max_batch)
    engine = Engine(store, {})
    for account in ("alice", "bob"):
        await engine.create_account(
            account,
            adaptor="sim",
            asset_code="USD",
            asset_scale=2,
            ledger_scale=2,
            policy=NO_SETTLING,
        )
    return store, engine


async def add_one(store: SqliteStore, account: str, fail: bool = False) -> None:
    """A raw read-modify-write transaction; ``fail`` raises after writing."""
    async with store.transaction() as tx:
        current = await tx.lock_account(account)
        assert current is not None
        await tx.update_account(replace(current, balance=current.balance + 1))
        if fail:
            raise LookupError("the caller changed its mind")


def test_concurrent_changes_are_all_applied_with_few_commits(tmp_path: Path) -> None:
    async def main() -> None:
        store, engine = await engine_on(tmp_path / "host.db")
        try:
            commits, transactions = store.commits, store.transactions
            deltas = [(i % 7) - 2 for i in range(200)]
            results = await asyncio.gather(
                *(
                    engine.apply_balance_change("alice" if i % 2 else "bob", d, f"k{i}")
                    for i, d in enumerate(deltas)
                )
            )
            alice = (await engine.get_account("alice")).account.balance
            bob = (await engine.get_account("bob")).account.balance
            assert alice == sum(deltas[1::2]) and bob == sum(deltas[0::2])
            # Each caller saw the balance right after its own change; the last one, the total.
            assert alice in results[1::2] and bob in results[0::2]
            assert store.transactions - transactions == 200
            # Batched: everything queued behind the first transaction shares commits.
            assert store.commits - commits <= 100
        finally:
            await store.close()
        store, engine = await engine_on(tmp_path / "host.db")
        try:
            assert (await engine.get_account("alice")).account.balance == alice
        finally:
            await store.close()

    asyncio.run(main())


def test_a_failing_transaction_in_a_batch_leaves_the_others_intact(tmp_path: Path) -> None:
    async def main() -> None:
        store, engine = await engine_on(tmp_path / "host.db")
        try:
            outcomes = await asyncio.gather(
                *(add_one(store, "alice", fail=i % 3 == 0) for i in range(90)),
                return_exceptions=True,
            )
            failed = [o for o in outcomes if isinstance(o, LookupError)]
            assert len(failed) == 30
            assert outcomes.count(None) == 60
            assert (await engine.get_account("alice")).account.balance == 60
        finally:
            await store.close()

    asyncio.run(main())


def test_a_write_that_fails_at_commit_time_fails_only_its_transaction(tmp_path: Path) -> None:
    async def main() -> None:
        store, engine = await engine_on(tmp_path / "host.db")
        try:
            existing = await store.get_account("bob")
            assert existing is not None

            async def duplicate() -> None:
                async with store.transaction() as tx:
                    await tx.insert_account(existing)  # deferred; fails when flushed

            calls = [add_one(store, "alice") for _ in range(20)]
            calls.insert(10, duplicate())
            outcomes = await asyncio.gather(*calls, return_exceptions=True)
            errors = [o for o in outcomes if o is not None]
            assert len(errors) == 1 and isinstance(errors[0], StoreError)
            assert (await engine.get_account("alice")).account.balance == 20
        finally:
            await store.close()

    asyncio.run(main())


def test_cancelled_callers_never_stall_the_others(tmp_path: Path) -> None:
    async def main() -> None:
        store, engine = await engine_on(tmp_path / "host.db")
        try:
            tasks = [asyncio.create_task(add_one(store, "alice")) for _ in range(60)]
            for _ in range(3):  # let some start, some wait for their turn
                await asyncio.sleep(0)
            for task in tasks[::4]:
                task.cancel()
            async with asyncio.timeout(60):
                outcomes = await asyncio.gather(*tasks, return_exceptions=True)
                ok = outcomes.count(None)
                assert ok + sum(isinstance(o, asyncio.CancelledError) for o in outcomes) == 60
                assert ok >= 45
                await add_one(store, "alice")  # the store still works
            balance = (await engine.get_account("alice")).account.balance
            # A caller cancelled while its commit was under way may still have been applied.
            assert ok + 1 <= balance <= 61
        finally:
            await store.close()

    asyncio.run(main())


def test_batches_never_exceed_the_configured_size(tmp_path: Path) -> None:
    async def main() -> None:
        store, engine = await engine_on(tmp_path / "host.db", max_batch=4)
        try:
            commits = store.commits
            await asyncio.gather(*(add_one(store, "alice") for _ in range(40)))
            assert store.commits - commits >= 10
            assert (await engine.get_account("alice")).account.balance == 40
        finally:
            await store.close()

    asyncio.run(main())


def test_a_nested_transaction_is_refused_instead_of_deadlocking(tmp_path: Path) -> None:
    async def main() -> None:
        store, _ = await engine_on(tmp_path / "host.db")
        try:
            with pytest.raises(RuntimeError, match="nested"):
                async with store.transaction(), store.transaction():
                    pass
            await add_one(store, "alice")
        finally:
            await store.close()

    asyncio.run(main())


def test_closing_commits_what_is_pending(tmp_path: Path) -> None:
    async def main() -> None:
        store, engine = await engine_on(tmp_path / "host.db")
        tasks = [asyncio.create_task(add_one(store, "alice")) for _ in range(30)]
        await asyncio.sleep(0)
        await store.close()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        applied = outcomes.count(None)
        assert all(o is None or isinstance(o, StoreError) for o in outcomes)
        store, engine = await engine_on(tmp_path / "host.db")
        try:
            assert (await engine.get_account("alice")).account.balance == applied
        finally:
            await store.close()

    asyncio.run(main())


def test_a_caller_resumes_only_after_its_commit(tmp_path: Path) -> None:
    """Hold the writer thread at the start of COMMIT: the caller must still be waiting."""
    reached, release = threading.Event(), threading.Event()

    def hold_commits(statement: str) -> None:
        if statement == "COMMIT":
            reached.set()
            release.wait(60)

    async def main() -> None:
        store, engine = await engine_on(tmp_path / "host.db")
        # Test-only reach into the store: install the hook from the thread owning the connection.
        connection = store._file.group._conn
        await store._file.group.writer.submit(lambda: connection.set_trace_callback(hold_commits))
        try:
            change = asyncio.create_task(engine.apply_balance_change("alice", 5, "k"))
            assert await asyncio.to_thread(reached.wait, 60)
            for _ in range(20):
                await asyncio.sleep(0)
            assert not change.done()  # the commit has not happened: no acknowledgement yet
            with sqlite3.connect(tmp_path / "host.db") as other:
                (balance,) = other.execute(
                    "SELECT balance FROM accounts WHERE id = 'alice'"
                ).fetchone()
            other.close()
            assert balance == "0"
            release.set()
            assert await change == 5
            with sqlite3.connect(tmp_path / "host.db") as other:
                (balance,) = other.execute(
                    "SELECT balance FROM accounts WHERE id = 'alice'"
                ).fetchone()
            other.close()
            assert balance == "5"
        finally:
            release.set()
            await store._file.group.writer.submit(lambda: connection.set_trace_callback(None))
            await store.close()

    asyncio.run(main())


def test_reads_outside_transactions_see_committed_data_only(tmp_path: Path) -> None:
    """get_account reads on the loop's thread, beside the open batch: never from it."""
    reached, release = threading.Event(), threading.Event()

    def hold_commits(statement: str) -> None:
        if statement == "COMMIT":
            reached.set()
            release.wait(60)

    async def main() -> None:
        store, engine = await engine_on(tmp_path / "host.db")
        connection = store._file.group._conn
        await store._file.group.writer.submit(lambda: connection.set_trace_callback(hold_commits))
        try:
            change = asyncio.create_task(engine.apply_balance_change("alice", 5, "k"))
            assert await asyncio.to_thread(reached.wait, 60)
            # The change is written in the batch, whose COMMIT has not returned.
            account = await store.get_account("alice")
            assert account is not None and account.balance == 0
            assert await engine.check_credit("alice", -1)
            release.set()
            assert await change == 5
            account = await store.get_account("alice")
            assert account is not None and account.balance == 5
        finally:
            release.set()
            await store._file.group.writer.submit(lambda: connection.set_trace_callback(None))
            await store.close()

    asyncio.run(main())


def test_a_statement_sent_to_the_thread_belongs_to_its_transaction(tmp_path: Path) -> None:
    """Transaction.execute runs in the writer thread, inside the caller's savepoint."""

    async def set_liquidity(store: SqliteStore, value: str, fail: bool) -> None:
        async with store.transaction() as tx:
            changed = await tx.execute("UPDATE accounts SET liquidity = ?", (value,))
            assert changed == 2
            await add_one_in(tx, "alice")
            if fail:
                raise LookupError("the caller changed its mind")

    async def add_one_in(tx: Transaction, account: str) -> None:
        current = await tx.lock_account(account)
        assert current is not None
        await tx.update_account(replace(current, balance=current.balance + 1))

    async def main() -> None:
        store, _ = await engine_on(tmp_path / "host.db")
        try:
            outcomes = await asyncio.gather(
                *(set_liquidity(store, str(i), fail=i % 2 == 1) for i in range(10)),
                return_exceptions=True,
            )
            assert outcomes.count(None) == 5
            assert all(isinstance(o, LookupError) for o in outcomes if o is not None)
            alice = await store.get_account("alice")
            bob = await store.get_account("bob")
            assert alice is not None and bob is not None
            assert alice.balance == 5
            # The last transaction that kept its changes wrote the liquidity: 8.
            assert alice.liquidity == bob.liquidity == 8
        finally:
            await store.close()

    asyncio.run(main())


def test_a_caller_cancelled_during_a_statement_in_the_thread_waits_for_it(tmp_path: Path) -> None:
    """The savepoint is rolled back on the connection only once the thread let go of it."""
    started, release = threading.Event(), threading.Event()

    def blocking_statement(connection: sqlite3.Connection) -> int:
        started.set()
        release.wait(60)
        return connection.execute("UPDATE accounts SET liquidity = '1'").rowcount

    async def main() -> None:
        store, _ = await engine_on(tmp_path / "host.db")
        try:

            async def caller() -> None:
                async with store._file.transaction() as context:
                    await context.run_in_thread(blocking_statement)

            task = asyncio.create_task(caller())
            assert await asyncio.to_thread(started.wait, 60)
            task.cancel()
            for _ in range(20):
                await asyncio.sleep(0)
            assert not task.done()  # still waiting for the thread's statement
            release.set()
            with pytest.raises(asyncio.CancelledError):
                await task
            await add_one(store, "alice")  # the store still works
            alice = await store.get_account("alice")
            assert alice is not None and alice.balance == 1 and alice.liquidity is None
        finally:
            release.set()
            await store.close()

    asyncio.run(main())
