"""The connector's clearing books (proposal 2) as a store: what host.connector.durable_clearing
asks of a backend, the records and errors that cross, and the rules every backend applies
inside its transactions.

Two backends implement :class:`ClearingStore`: one SQLite file owned by one connector process
(host.store.sqlite_clearing) and a PostgreSQL database that several connector instances share
(host.store.postgres_clearing). The rules of a change are written once, here: an idempotency
key replays its first result or is a :class:`KeyConflict` (:func:`replayed`), a balance must stay
an amount (:func:`checked_balance`), and a settlement's change moves the running totals kept for
reconciliation (:func:`settled_by`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from host.clearing_records import BalanceChange, InFlight, Resolution
from host.clearing_rules import settlement_side
from host.ilp.outcome import Outcome
from sdk.amount import fits


class ClearingInputError(ValueError):
    """A malformed account id, key or amount; nothing changed."""


class KeyConflict(ValueError):
    """An idempotency key reused with another account or delta; nothing changed."""


class CursorOutOfRange(ValueError):
    """A cursor ahead of the log."""


@dataclass(frozen=True)
class AccountLimits:
    """What the configuration says of one peer account."""

    asset_scale: int
    min_balance: int  # <= 0: how far we may owe the peer
    max_balance: int  # >= 0: the credit we extend to the peer


@dataclass(frozen=True)
class BalanceEvent:
    """One applied change, as the log keeps it."""

    cursor: int
    account_id: str
    delta: int
    balance: int  # after the change
    idempotency_key: str


@dataclass(frozen=True)
class Resolving:
    """A packet's resolution, recorded with the changes it causes (ClearingStore.apply)."""

    packet: InFlight
    resolution: Resolution
    fulfillment: bytes


class ClearingStore(Protocol):
    """Where the clearing books are kept. Every method is one transaction (or one read of
    committed data); a failure of the database is a host.store.StoreError."""

    #: The database, for messages (a file, or a server and database name: no password).
    description: str
    #: Whether other processes change the same books: balances are then read from the
    #: database, and the log is looked at for their changes too.
    shared: bool

    @property
    def last_cursor(self) -> int:
        """The highest cursor of the log as this process last saw it (0: none yet)."""
        ...

    @property
    def acknowledged(self) -> int:
        """The highest acknowledged cursor as this process last saw it."""
        ...

    async def balance(self, account_id: str) -> int:
        """The committed balance of a configured account."""
        ...

    async def exposure(self, account_id: str, delta: int) -> int:
        """The balance a packet's credit check for ``delta`` starts from: the committed
        balance, and on shared books also the amounts other instances have in flight with the
        account on that side (journaled, not resolved): lower for a debit, higher for a credit.
        This process's own packets in flight are the caller's (its reservations)."""
        ...

    async def book(self, account_id: str) -> tuple[int, int, int]:
        """(balance, settled out, settled in) of a configured account, as of one moment."""
        ...

    async def apply(
        self, changes: Sequence[BalanceChange], now: float, resolving: Resolving | None
    ) -> tuple[Resolution | None, list[int]]:
        """In one transaction: apply ``changes`` (validated, of configured accounts), each once
        per key, logging each new one, and record ``resolving``'s resolution.

        Returns the packet's earlier resolution (and nothing applied) if it was resolved
        before, else None and the balance after each change (a replay: its first result).
        KeyConflict, ClearingInputError: nothing changed.
        """
        ...

    async def journal(self, packet: InFlight, now: float) -> None:
        """Record ``packet`` as pending (a replay of its key changes nothing)."""
        ...

    async def unresolved(self) -> list[InFlight]:
        """The journaled packets not resolved yet, oldest first."""
        ...

    async def outcome(self, source: str, source_id: bytes) -> Outcome:
        """What peer ``source`` is told of its packet ``source_id``."""
        ...

    async def refresh_log(self) -> None:
        """Bring ``last_cursor`` and ``acknowledged`` up to date with the database."""
        ...

    async def events_after(self, cursor: int, limit: int) -> list[BalanceEvent]:
        """At most ``limit`` events with a cursor above ``cursor``, oldest first."""
        ...

    async def acknowledge(self, cursor: int) -> None:
        """Every event up to ``cursor`` was processed: delete them (an older cursor changes
        nothing). CursorOutOfRange if ``cursor`` is ahead of the log."""
        ...

    async def forget(self, before: float) -> int:
        """Delete the idempotency keys recorded before ``before`` and the packets resolved
        before then; how many keys went."""
        ...

    async def close(self) -> None:
        """Commit what is pending and let the database go. Idempotent."""
        ...


# -- the rules each backend applies inside its transaction --------------------------------------


def replayed(change: BalanceChange, seen_account: str, seen_delta: int) -> None:
    """A change whose key was applied before (to ``seen_account`` by ``seen_delta``): a
    replay if it is the same change, else KeyConflict."""
    if (seen_account, seen_delta) != (change.account_id, change.delta):
        raise KeyConflict(
            f"idempotency key {change.idempotency_key!r} was used for another change "
            f"({seen_account} {seen_delta})"
        )


def checked_balance(account_id: str, balance: int, delta: int) -> int:
    """The balance after ``delta``; ClearingInputError if it would no longer be an amount."""
    after = balance + delta
    if not fits(after):
        raise ClearingInputError(f"account {account_id}: the balance would no longer fit")
    return after


def settled_by(change: BalanceChange) -> tuple[int, int]:
    """How much ``change`` adds to the account's (settled out, settled in) totals: a
    settlement we paid raises the balance, one the peer paid us lowers it; (0, 0) for any
    other change (host.clearing_rules.settlement_side tells them apart by their keys)."""
    side = settlement_side(change.idempotency_key)
    if side == "out":
        return change.delta, 0
    if side == "in":
        return 0, -change.delta
    return 0, 0
