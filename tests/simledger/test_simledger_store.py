"""The simulated ledger's book on a real SQLite file: atomic transfers, idempotency, reopening."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from host.simledger.store import (
    Asset,
    BalanceOverflow,
    BookMismatch,
    InsufficientFunds,
    LedgerStore,
    TransferConflict,
    UnknownAccount,
)


@pytest.fixture
def book(tmp_path: Path) -> Iterator[LedgerStore]:
    store = LedgerStore(tmp_path / "book.db")
    store.create_account("alice")
    store.create_account("bob")
    store.transfer("fund-alice", "", "alice", 1000, "")
    yield store
    store.close()


def _balances(store: LedgerStore) -> tuple[int, int]:
    return store.balance("alice"), store.balance("bob")


def test_new_book_defaults_to_usd_cents_and_uses_wal(tmp_path: Path) -> None:
    store = LedgerStore(tmp_path / "book.db")
    assert store.asset == Asset("USD", 2)
    store.close()
    with sqlite3.connect(tmp_path / "book.db") as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert raw.execute("PRAGMA user_version").fetchone() == (1,)
    raw.close()


def test_create_account_is_idempotent_and_keeps_the_balance(book: LedgerStore) -> None:
    assert book.create_account("alice") == 1000
    assert book.create_account("carol") == 0
    with pytest.raises(UnknownAccount, match="'dave'"):
        book.balance("dave")


def test_transfer_moves_money_with_increasing_sequence(book: LedgerStore) -> None:
    first = book.transfer("t1", "alice", "bob", 300, "memo")
    second = book.transfer("t2", "alice", "bob", 200, "")
    assert (first.sequence, second.sequence) == (2, 3)
    assert _balances(book) == (500, 500)
    assert book.get_transfer("t1") == first
    assert book.get_transfer("nope") is None


def test_same_id_same_content_replays_the_first_transfer_once(book: LedgerStore) -> None:
    first = book.transfer("t1", "alice", "bob", 300, "memo")
    assert book.transfer("t1", "alice", "bob", 300, "memo") == first
    assert _balances(book) == (700, 300)


@pytest.mark.parametrize(
    ("payer", "payee", "amount", "memo"),
    [
        ("alice", "bob", 301, "memo"),
        ("alice", "bob", 300, "other memo"),
        ("bob", "alice", 300, "memo"),
        ("", "bob", 300, "memo"),
    ],
)
def test_same_id_other_content_conflicts_and_changes_nothing(
    book: LedgerStore, payer: str, payee: str, amount: int, memo: str
) -> None:
    book.transfer("t1", "alice", "bob", 300, "memo")
    with pytest.raises(TransferConflict, match="'t1'"):
        book.transfer("t1", payer, payee, amount, memo)
    assert _balances(book) == (700, 300)


def test_refused_transfers_change_nothing_and_leave_the_id_free(book: LedgerStore) -> None:
    with pytest.raises(InsufficientFunds, match="holds 1000, cannot pay 1001"):
        book.transfer("t1", "alice", "bob", 1001, "")
    with pytest.raises(UnknownAccount, match="'carol'"):
        book.transfer("t2", "alice", "carol", 1, "")
    with pytest.raises(UnknownAccount, match="'carol'"):
        book.transfer("t3", "carol", "alice", 1, "")
    assert _balances(book) == (1000, 0)
    assert book.get_transfer("t1") is None
    # A refused id was never recorded: it can be used once the payer has the money.
    book.transfer("fund-more", "", "alice", 1, "")
    assert book.transfer("t1", "alice", "bob", 1001, "").amount == 1001
    assert _balances(book) == (0, 1001)


def test_balances_beyond_64_bits_and_the_78_digit_ceiling(book: LedgerStore) -> None:
    huge = 10**77
    book.transfer("m-huge", "", "bob", huge, "")
    assert book.balance("bob") == huge
    book.transfer("m-huge-2", "", "bob", 8 * huge, "")
    with pytest.raises(BalanceOverflow):
        book.transfer("m-too-much", "", "bob", 2 * huge, "")
    assert book.balance("bob") == 9 * huge


def test_transfers_into_an_account_in_order_after_a_cursor(book: LedgerStore) -> None:
    book.transfer("t1", "alice", "bob", 1, "")
    book.create_account("carol")
    book.transfer("t2", "alice", "carol", 1, "")
    book.transfer("t3", "alice", "bob", 2, "")
    book.transfer("t4", "alice", "bob", 3, "")
    assert [t.transfer_id for t in book.transfers_into("bob", 0, 10)] == ["t1", "t3", "t4"]
    cursor = book.transfers_into("bob", 0, 1)[0].sequence
    assert [t.transfer_id for t in book.transfers_into("bob", cursor, 1)] == ["t3"]
    assert book.transfers_into("bob", 2**63 - 1, 10) == []


def test_reopening_keeps_everything_and_refuses_another_asset(tmp_path: Path) -> None:
    path = tmp_path / "book.db"
    store = LedgerStore(path, "EUR", 6)
    store.create_account("alice")
    done = store.transfer("m1", "", "alice", 5, "")
    store.close()

    again = LedgerStore(path)
    assert again.asset == Asset("EUR", 6)
    assert again.balance("alice") == 5
    assert again.transfer("m1", "", "alice", 5, "") == done
    assert again.transfer("m2", "", "alice", 5, "").sequence == done.sequence + 1
    again.close()

    with pytest.raises(BookMismatch, match="holds EUR at scale 6, not USD at scale 6"):
        LedgerStore(path, "USD")
    with pytest.raises(BookMismatch, match="not EUR at scale 2"):
        LedgerStore(path, asset_scale=2)


def test_a_book_from_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "book.db"
    LedgerStore(path).close()
    raw = sqlite3.connect(path)
    raw.execute("PRAGMA user_version = 99")
    raw.close()
    with pytest.raises(BookMismatch, match="schema version 99"):
        LedgerStore(path)
