"""The Store protocol: the engine's persistence seam, owned by the engine. It never sees SQL.

Two implementations: SQLite (host.store.sqlite: embedded; one writer thread, group commit) and
PostgreSQL (host.store.postgres: several hosts sharing one database). The correspondence:

* ``async with store.transaction() as tx:`` is one atomic unit. Leaving the block normally
  commits, and returns only once the commit is durable: a caller may acknowledge as soon as
  the block is left. Leaving it with an exception undoes everything done in it. No await on
  anything but ``tx`` inside the block: a transaction holds locks (SQLite: the only writer).
* ``tx.lock_account`` is ``SELECT ... FOR UPDATE`` on the account row: every read-modify-write
  of an account starts with it, so concurrent changes of one account serialize. Idempotency
  records are read *after* locking the account they belong to, so two requests with one key
  serialize on that account (PostgreSQL: a unique violation on a key recorded concurrently for
  another account must surface as an error, never as a second effect).
* ``store.claim_outbox`` is ``SELECT ... FOR UPDATE SKIP LOCKED`` plus a lease: it hands each
  due row to one worker at a time. A lease that expires (a crashed worker) frees the row again;
  paying twice is prevented by the adaptor's idempotency on the settlement's stable key, the
  lease only avoids needless duplicate calls.
* Reads outside a transaction see committed data only.
* ``store.try_lead`` elects the one instance that does the housekeeping (forgetting old
  idempotency keys): PostgreSQL, a session advisory lock; SQLite, always the one process.

Amounts are arbitrary-precision ints; implementations store them as decimal text (SQLite's
INTEGER is 64-bit). A store that fails raises host.store.StoreError (the message says what to do).
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Protocol

from host.clearing_records import InFlight, Resolution
from host.engine.model import Account, ClearingEffect, IdempotencyRecord, Settlement
from host.ilp.outcome import Outcome

__all__ = ["Store", "Transaction"]


class Transaction(Protocol):
    """The operations of one store transaction (see the module docstring)."""

    async def lock_account(self, account_id: str) -> Account | None:
        """The account, locked until the transaction ends; None if unknown."""
        ...

    async def insert_account(self, account: Account) -> None:
        """Create an account (its id must be new)."""
        ...

    async def update_account(self, account: Account) -> None:
        """Overwrite a locked account's mutable fields (balances, leftovers, policy...)."""
        ...

    async def lock_settlement(self, settlement_id: str) -> Settlement | None:
        """The settlement, locked until the transaction ends; None if unknown."""
        ...

    async def insert_settlement(self, settlement: Settlement) -> None:
        """Record a new settlement (its id must be new)."""
        ...

    async def update_settlement(self, settlement: Settlement) -> None:
        """Overwrite a locked settlement's mutable fields (state, attempts, schedule...)."""
        ...

    async def has_failed_settlement(self, account_id: str) -> bool:
        """Whether the account has an outgoing settlement parked as FAILED."""
        ...

    async def get_idempotency(self, scope: str, key: str) -> IdempotencyRecord | None:
        """The record of ``key`` in ``scope``, or None."""
        ...

    async def record_idempotency(self, record: IdempotencyRecord) -> None:
        """Record a key (new in its scope) with its request and result."""
        ...

    async def record_clearing_effect(self, effect: ClearingEffect) -> None:
        """Journal a change the engine made to a clearing balance (its key must be new)."""
        ...

    async def journal_packet(self, packet: InFlight, now: float) -> None:
        """Record a packet in flight as pending (nothing if its key is recorded already)."""
        ...

    async def packet_resolution(self, key: str) -> Resolution | None:
        """How the packet ``key`` ended, None if pending or unknown (PostgreSQL: its row
        locked until the end of the transaction)."""
        ...

    async def resolve_packet(
        self, packet: InFlight, resolution: Resolution, fulfillment: bytes, now: float
    ) -> None:
        """Record how a packet ended (inserting it if never journaled; a resolved one stays)."""
        ...


class Store(Protocol):
    """Durable state of the engine: accounts, settlements (the outbox), idempotency keys."""

    def transaction(self) -> AbstractAsyncContextManager[Transaction]:
        """One atomic unit; see the module docstring for the contract."""
        ...

    async def get_account(self, account_id: str) -> Account | None:
        """The committed account, or None."""
        ...

    async def list_accounts(self) -> list[Account]:
        """Every account, by id."""
        ...

    async def pending_settlement_totals(self, account_id: str | None) -> dict[str, int]:
        """Per account id (one, or all), the sum of ``amount`` of unfinished outgoing settlements.

        Unfinished: pending, submitted or failed (debited, not paid). Accounts without any may
        be absent from the result.
        """
        ...

    async def settled_totals(self, account_id: str) -> tuple[int, int]:
        """The sums of ``amount`` over every settlement of an account: (outgoing, incoming).

        Outgoing in any state (each was debited when queued), incoming credited or completed.
        Settlements are never deleted and their amounts never change, so the store keeps these
        as running totals, added to in the transaction that records each settlement: one read,
        however long the account's history.
        """
        ...

    async def get_settlement(self, settlement_id: str) -> Settlement | None:
        """The committed settlement, or None."""
        ...

    async def list_settlements(self, account_id: str | None, limit: int) -> list[Settlement]:
        """At most ``limit`` settlements (of one account, or all), newest first."""
        ...

    async def claim_outbox(self, limit: int, now: float, lease: float) -> list[Settlement]:
        """Lease up to ``limit`` due settlements with work left (pending, submitted, credited).

        Due: ``next_attempt_at <= now`` and no lease running at ``now``. Each returned row is
        leased until ``now + lease`` (the returned rows carry that ``lease_until``).
        """
        ...

    async def resume_outbox(self, now: float) -> int:
        """Make every settlement with work left due at ``now`` (not touching running leases).

        Returns how many rows were rescheduled.
        """
        ...

    async def next_outbox_due(self) -> float | None:
        """The earliest time a settlement with work left becomes due (lease included), or None."""
        ...

    async def set_liquidity(self, adaptor: str, liquidity: int | None, now: float) -> int:
        """Record the settlement-account liquidity on every account of ``adaptor``; the count."""
        ...

    async def forget_idempotency(self, created_before: float) -> int:
        """Delete idempotency records older than ``created_before``, and the journal's packets
        resolved before then (their peers had the time to ask); how many records went."""
        ...

    async def clearing_effects(self, limit: int) -> list[ClearingEffect]:
        """At most ``limit`` journaled clearing effects, oldest first."""
        ...

    async def forget_clearing_effect(self, key: str) -> None:
        """Drop a journaled effect once the connector confirmed it (no error if gone)."""
        ...

    async def count_clearing_effects(self) -> int:
        """How many journaled effects wait for the connector."""
        ...

    async def unresolved_packets(self) -> list[InFlight]:
        """The journaled packets not resolved yet, oldest first."""
        ...

    async def packet_outcome(self, source: str, source_id: bytes) -> Outcome:
        """What peer ``source`` is told of its packet ``source_id`` (host.ilp.outcome)."""
        ...

    async def try_lead(self) -> bool:
        """Whether this instance leads the housekeeping of the database (kept until close)."""
        ...

    async def close(self) -> None:
        """Finish pending work and release the database. Idempotent."""
        ...
