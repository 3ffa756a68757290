"""The ledger's recent transfers in memory: complete above their floor, or a read of the book."""

from __future__ import annotations

from host.simledger.recent import RecentTransfers
from host.simledger.store import LedgerTransfer


def transfer(sequence: int, payee: str = "bob") -> LedgerTransfer:
    return LedgerTransfer(f"t{sequence}", "alice", payee, 1, "", sequence)


def test_new_transfers_above_what_a_stream_has_seen_come_from_memory() -> None:
    recent = RecentTransfers(last_sequence=10)
    for sequence, payee in ((11, "bob"), (12, "carol"), (13, "bob")):
        recent.add(transfer(sequence, payee))
    assert recent.last == 13
    assert [t.sequence for t in recent.into("bob", 10, 100) or []] == [11, 13]
    assert [t.sequence for t in recent.into("bob", 11, 100) or []] == [13]
    assert recent.into("bob", 13, 100) == []
    assert [t.sequence for t in recent.into("bob", 10, 1) or []] == [11]


def test_a_stream_behind_the_floor_reads_the_book() -> None:
    recent = RecentTransfers(last_sequence=10)
    assert recent.last == 10
    assert recent.into("bob", 10, 100) == []
    assert recent.into("bob", 9, 100) is None


def test_a_replayed_transfer_is_not_added_again() -> None:
    recent = RecentTransfers(last_sequence=0)
    recent.add(transfer(1))
    recent.add(transfer(2))
    recent.add(transfer(1))
    assert [t.sequence for t in recent.into("bob", 0, 100) or []] == [1, 2]


def test_the_oldest_are_dropped_and_the_floor_rises_with_them() -> None:
    recent = RecentTransfers(last_sequence=0, keep=3)
    for sequence in range(1, 8):  # the seventh passes twice the keep: four go
        recent.add(transfer(sequence))
    assert recent.last == 7
    assert recent.into("bob", 3, 100) is None
    assert [t.sequence for t in recent.into("bob", 4, 100) or []] == [5, 6, 7]
