"""The transfers the ledger committed lately, in memory, for the watch streams that keep up.

A WatchTransfers stream woken by a commit would otherwise read the book (a hop to the book's
worker thread, a query) only to find the transfer that commit just wrote. ``RecentTransfers``
keeps the newest committed transfers in sequence order together with the sequence above which
it holds every one of them, so a stream that has seen the book up to that point takes the new
ones from here; a stream further behind (a new one, one that fell behind) reads the book.
Pure bookkeeping: the service adds each transfer after its commit, before waking the streams.
"""

from __future__ import annotations

from bisect import bisect_right

from host.simledger.store import LedgerTransfer

#: Transfers kept at least (up to twice as many before the oldest are dropped).
KEEP = 1024


class RecentTransfers:
    """The newest committed transfers, complete above ``floor`` (see the module docstring)."""

    def __init__(self, last_sequence: int, keep: int = KEEP) -> None:
        """``last_sequence``: the book's highest sequence now (every later one is added)."""
        self._floor = last_sequence
        self._keep = keep
        self._transfers: list[LedgerTransfer] = []
        self._sequences: list[int] = []

    @property
    def last(self) -> int:
        """The highest committed sequence known: every transfer up to it is in the book."""
        return self._sequences[-1] if self._sequences else self._floor

    def add(self, transfer: LedgerTransfer) -> None:
        """Remember a transfer just committed (a replayed one, committed before, is known)."""
        if transfer.sequence <= self.last:
            return
        self._transfers.append(transfer)
        self._sequences.append(transfer.sequence)
        if len(self._sequences) > 2 * self._keep:
            self._floor = self._sequences[-self._keep - 1]
            del self._transfers[: -self._keep], self._sequences[: -self._keep]

    def into(self, account_id: str, seen: int, limit: int) -> list[LedgerTransfer] | None:
        """Up to ``limit`` transfers into ``account_id`` with a sequence above ``seen``, in
        order; None if transfers above ``seen`` may be missing here (read the book)."""
        if seen < self._floor:
            return None
        found = []
        for transfer in self._transfers[bisect_right(self._sequences, seen) :]:
            if transfer.to_account_id == account_id:
                found.append(transfer)
                if len(found) == limit:
                    break
        return found
