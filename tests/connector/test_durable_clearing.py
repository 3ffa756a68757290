"""The connector's own clearing books (proposal 2), one suite for both backends (the ``books``
fixture: a real SQLite file, a real PostgreSQL server): idempotent changes, the event log and
its acknowledgements across reopening, credit limits, bad input, concurrency. What only one
backend has (SQLite's file lock and group commit, its old schemas) is tested at the end."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from host.clearing_rules import CREDIT_EFFECT, DEBIT_EFFECT, LEFTOVER_EFFECT, ClearingBook
from host.connector.durable_clearing import (
    MIGRATIONS,
    AccountLimits,
    ClearingInputError,
    CursorOutOfRange,
    DurableClearing,
    KeyConflict,
)
from host.connector.ports import UnknownPeer
from host.store import StoreInUse
from host.store.sqlite_clearing import SqliteClearing
from host.store.sqlite_schema import migrate

LIMITS = {"bob": AccountLimits(asset_scale=6, min_balance=-1000, max_balance=500)}


def with_clearing(
    path: Path | str, scenario: Callable[[DurableClearing], Awaitable[None]], limits: dict = LIMITS
) -> None:
    async def main() -> None:
        clearing = await DurableClearing.open(path, limits)
        try:
            await scenario(clearing)
        finally:
            await clearing.close()

    asyncio.run(main())


def test_changes_apply_once_per_key_and_are_logged(books: str) -> None:
    async def scenario(clearing: DurableClearing) -> None:
        assert await clearing.balance("bob") == 0
        assert await clearing.apply_balance_change("bob", -300, "k1") == -300
        assert await clearing.apply_balance_change("bob", 100, "k2") == -200
        assert (
            await clearing.apply_balance_change("bob", -300, "k1") == -300
        )  # replay: first result
        assert await clearing.balance("bob") == -200
        with pytest.raises(KeyConflict, match="k1"):
            await clearing.apply_balance_change("bob", -301, "k1")
        events = await clearing.events_after(0, 10)
        assert [(e.cursor, e.delta, e.balance, e.idempotency_key) for e in events] == [
            (1, -300, -300, "k1"),
            (2, 100, -200, "k2"),
        ]
        assert clearing.last_cursor == 2
        assert [e.cursor for e in await clearing.events_after(1, 10)] == [2]

    with_clearing(books, scenario)


def test_acknowledged_events_go_and_cursors_never_repeat_across_reopening(books: str) -> None:
    path = books

    async def first(clearing: DurableClearing) -> None:
        for n in range(3):
            await clearing.apply_balance_change("bob", -1, f"k{n}")
        await clearing.acknowledge(2)
        await clearing.acknowledge(1)  # older: nothing changes
        assert clearing.acknowledged == 2
        with pytest.raises(CursorOutOfRange):
            await clearing.acknowledge(4)
        await clearing.acknowledge(3)
        assert await clearing.events_after(0, 10) == []

    async def second(clearing: DurableClearing) -> None:
        assert (clearing.acknowledged, clearing.last_cursor) == (3, 3)
        assert await clearing.balance("bob") == -3
        await clearing.apply_balance_change("bob", 5, "k9")
        assert [e.cursor for e in await clearing.events_after(0, 10)] == [4]

    with_clearing(path, first)
    with_clearing(path, second)


def test_credit_limits_bound_packets_not_changes(books: str) -> None:
    async def scenario(clearing: DurableClearing) -> None:
        assert await clearing.check_credit("bob", 500)
        assert not await clearing.check_credit("bob", 501)
        assert await clearing.check_credit("bob", -1000)
        assert not await clearing.check_credit("bob", -1001)
        # A settlement always applies, even past a limit...
        assert await clearing.apply_balance_change("bob", -1500, "s1") == -1500
        # ...and the way back toward the range stays open while the way out does not.
        assert await clearing.check_credit("bob", 100)
        assert not await clearing.check_credit("bob", -1)
        with pytest.raises(UnknownPeer):
            await clearing.check_credit("carol", 1)

    with_clearing(books, scenario)


def test_bad_input_changes_nothing(books: str) -> None:
    async def scenario(clearing: DurableClearing) -> None:
        await clearing.apply_balance_change("bob", 7, "ok")
        for account, delta, key, error in [
            ("bob", 1, "", ClearingInputError),
            ("bob", 1, "x" * 129, ClearingInputError),
            ("bob", 1, "tab\there", ClearingInputError),
            ("bob", 10**80, "big", ClearingInputError),
            ("no spaces", 1, "k", ClearingInputError),
            ("carol", 1, "k", UnknownPeer),
        ]:
            with pytest.raises(error):
                await clearing.apply_balance_change(account, delta, key)
        assert await clearing.balance("bob") == 7
        await clearing.refresh_log()
        assert clearing.last_cursor == 1

    with_clearing(books, scenario)


def test_the_configuration_is_the_truth_for_limits(books: str) -> None:
    path = books

    async def first(clearing: DurableClearing) -> None:
        await clearing.apply_balance_change("bob", -900, "k")

    async def second(clearing: DurableClearing) -> None:
        assert await clearing.balance("bob") == -900  # kept
        assert clearing.limits("bob") == AccountLimits(2, -100, 100)
        assert not await clearing.check_credit("bob", -1)
        assert await clearing.balance("carol") == 0

    with_clearing(path, first)
    with_clearing(
        path,
        second,
        {"bob": AccountLimits(2, -100, 100), "carol": AccountLimits(2, 0, 0)},
    )


def test_a_second_process_cannot_open_it(tmp_path: Path) -> None:
    async def scenario(clearing: DurableClearing) -> None:
        with pytest.raises(StoreInUse):
            await DurableClearing.open(clearing.path, LIMITS)

    with_clearing(tmp_path / "c.db", scenario)


def test_concurrent_changes_add_up_and_wake_the_log(books: str) -> None:
    async def scenario(clearing: DurableClearing) -> None:
        woke = asyncio.create_task(clearing.wait_beyond(0))
        await asyncio.gather(
            *(clearing.apply_balance_change("bob", -1, f"p{n}") for n in range(200))
        )
        await asyncio.wait_for(woke, 10)
        assert await clearing.balance("bob") == -200
        events = await clearing.events_after(0, 1000)
        assert [e.cursor for e in events] == list(range(1, 201))
        assert sorted(e.balance for e in events) == list(range(-200, 0))

    with_clearing(books, scenario)


def test_concurrent_changes_share_commits_in_the_file(tmp_path: Path) -> None:
    async def scenario(clearing: DurableClearing) -> None:
        await asyncio.gather(
            *(clearing.apply_balance_change("bob", -1, f"p{n}") for n in range(200))
        )
        assert await clearing.balance("bob") == -200
        store = clearing._store
        assert isinstance(store, SqliteClearing)
        group = store._file.group  # the batching is what this test is about
        assert group.transactions >= 200 and group.commits < group.transactions

    with_clearing(tmp_path / "c.db", scenario)


def test_keys_are_forgotten_after_their_retention(books: str) -> None:
    async def scenario(clearing: DurableClearing) -> None:
        await clearing.apply_balance_change("bob", -5, "old")
        assert await clearing.forget_keys(3600) == 0  # younger than an hour: kept
        assert await clearing.apply_balance_change("bob", -5, "old") == -5  # still a replay
        assert await clearing.forget_keys(-1) == 1  # everything is older than a second from now
        # Past its retention a key is new again: that is what retention means.
        assert await clearing.apply_balance_change("bob", -5, "old") == -10

    with_clearing(books, scenario)


def test_settlements_are_counted_apart_from_packets_for_reconciliation(books: str) -> None:
    path = books

    async def first(clearing: DurableClearing) -> None:
        assert await clearing.clearing_book("bob") == ClearingBook(6, 0, 0, 0)
        await clearing.apply_balance_change("bob", -700, "ilp-out-1")  # a packet to bob
        await clearing.apply_balance_change("bob", 300, f"{DEBIT_EFFECT}s1")  # we paid bob
        await clearing.apply_balance_change("bob", 100, f"{LEFTOVER_EFFECT}u1")  # below a unit
        await clearing.apply_balance_change("bob", 300, f"{DEBIT_EFFECT}s1")  # a replay
        await clearing.apply_balance_change("bob", 50, "ilp-in-2")  # a packet from bob
        await clearing.apply_balance_change("bob", -20, f"{CREDIT_EFFECT}c1")  # bob paid us
        with pytest.raises(KeyConflict):
            await clearing.apply_balance_change("bob", 999, f"{CREDIT_EFFECT}c1")
        book = await clearing.clearing_book("bob")
        assert book == ClearingBook(6, balance=-270, settled_out=400, settled_in=20)
        with pytest.raises(UnknownPeer):
            await clearing.clearing_book("carol")

    async def reopened(clearing: DurableClearing) -> None:
        assert await clearing.clearing_book("bob") == ClearingBook(6, -270, 400, 20)

    with_clearing(path, first)
    with_clearing(path, reopened)


def test_books_of_the_first_schema_starts_counting_settlements_at_upgrade(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.db"
    connection = sqlite3.connect(path, isolation_level=None)
    migrate(connection, MIGRATIONS[:1])
    connection.close()

    async def scenario(clearing: DurableClearing) -> None:
        await clearing.apply_balance_change("bob", 5, f"{DEBIT_EFFECT}s1")
        assert await clearing.clearing_book("bob") == ClearingBook(6, 5, 5, 0)

    with_clearing(path, scenario)
