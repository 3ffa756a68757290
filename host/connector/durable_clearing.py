"""The connector's own clearing balances, for proposal 2: a durable ClearingPort with an event log.

When the settlement engine runs in another process, the connector must keep clearing without it,
so it holds the clearing balances itself, in a store of its own (host.store.clearing): one
SQLite file that one connector process owns (host.store.sqlite_clearing, the default), or a
PostgreSQL database that several connector instances behind one ILP address share
(host.store.postgres_clearing). Every change, a fulfilled packet's or one applied through the
Connector API, is one transaction that

- updates the account's balance,
- records the change under its idempotency key (a replay returns the first result and changes
  nothing; the same key with another account or delta is a :class:`KeyConflict`), and
- appends a :class:`BalanceEvent` to the log, under a cursor that never repeats.

The engine follows the log (host.connector.api) and acknowledges what it processed; acknowledged
events are deleted, the others wait for it across any restart of either process. Credit limits
come from the configuration (:class:`AccountLimits`) and bound packets only
(:meth:`check_credit`): a settlement the engine reports is always applied.

Per account, the settlements among the changes (told apart by their keys) are also summed, in
the same transaction, for reconciliation with the peer (:meth:`DurableClearing.clearing_book`).

This class holds what does not depend on where the books are: the checks of the input, the
configured limits, the credit rule, and the waiting for new events. On a shared store, other
instances' changes are seen by reading: a credit check reads the committed balance and the
packets the other instances have in flight, and an engine waiting for events finds theirs within
:data:`SHARED_LOG_POLL` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from host.clearing_records import BalanceChange, InFlight, Resolution
from host.clearing_rules import ClearingBook, credit_allows
from host.connector.ports import UnknownPeer
from host.ilp.outcome import Outcome
from host.store.clearing import (
    AccountLimits,
    BalanceEvent,
    ClearingInputError,
    ClearingStore,
    CursorOutOfRange,
    KeyConflict,
    Resolving,
)
from host.store.opening import is_database_url
from host.store.sqlite_clearing import MIGRATIONS
from sdk import contract
from sdk.amount import fits

__all__ = [
    "MIGRATIONS",
    "SHARED_LOG_POLL",
    "AccountLimits",
    "BalanceEvent",
    "ClearingInputError",
    "CursorOutOfRange",
    "DurableClearing",
    "KeyConflict",
]

#: Seconds between looks at a shared log for other instances' changes while the engine waits.
SHARED_LOG_POLL = 0.1


def _check_change(account_id: str, delta: int, key: str) -> None:
    if not contract.is_account_id(account_id):
        raise ClearingInputError(
            f"account id must be {contract.ACCOUNT_ID_RULE}, got {account_id!r}"
        )
    if not contract.is_idempotency_key(key):
        raise ClearingInputError(f"idempotency key must be {contract.IDEMPOTENCY_KEY_RULE}")
    if not fits(delta):
        raise ClearingInputError("delta is too large")


class DurableClearing:
    """The connector's clearing balances (see the module docstring). Use :meth:`open`."""

    def __init__(self, store: ClearingStore, limits: Mapping[str, AccountLimits]) -> None:
        self.path = store.description
        self._store = store
        self._limits = dict(limits)
        self._changed = asyncio.Event()

    @classmethod
    async def open(
        cls, database: str | os.PathLike[str], accounts: Mapping[str, AccountLimits]
    ) -> DurableClearing:
        """Open (creating if needed) the books in ``database`` for the configured ``accounts``:
        a PostgreSQL URL (``postgresql://...``), or else an SQLite file's path.

        Missing accounts are created at balance 0; the limits and scale of existing ones are
        taken from ``accounts`` (the configuration is their truth). Accounts in the books but
        not in ``accounts`` keep their history but are unknown until configured again.
        StoreError (one line) if the database cannot be used.
        """
        store: ClearingStore
        if isinstance(database, str) and is_database_url(database):
            # Imported here: a connector on SQLite never loads the PostgreSQL driver.
            from host.store.postgres_clearing import PostgresClearing

            store = await PostgresClearing.open(database, accounts)
        else:
            from host.store.sqlite_clearing import SqliteClearing

            store = await SqliteClearing.open(Path(database), accounts)
        return cls(store, accounts)

    @property
    def shared(self) -> bool:
        """Whether other connector instances share these books."""
        return self._store.shared

    async def close(self) -> None:
        """Commit what is pending and let the database go. Idempotent."""
        await self._store.close()

    # -- accounts -------------------------------------------------------------------------------

    def limits(self, account_id: str) -> AccountLimits:
        """The configured limits and scale of an account; UnknownPeer if none."""
        limits = self._limits.get(account_id)
        if limits is None:
            raise UnknownPeer(f"no peer account {account_id[:128]!r} on this connector")
        return limits

    async def balance(self, account_id: str) -> int:
        """The clearing balance (what the peer owes us); UnknownPeer if not configured."""
        self.limits(account_id)
        return await self._store.balance(account_id)

    async def check_credit(self, account_id: str, delta: int) -> bool:
        """Whether a packet changing the balance by ``delta`` stays within the credit limits
        (host.clearing_rules: moving back toward the allowed range is always allowed).

        ``delta`` is everything this process has in flight on that side of the account (the
        balance middleware's reservations); on shared books, what the other instances have in
        flight there counts too (host.store.clearing.ClearingStore.exposure)."""
        limits = self.limits(account_id)  # UnknownPeer
        return credit_allows(await self._store.exposure(account_id, delta), delta, limits)

    async def clearing_book(self, account_id: str) -> ClearingBook:
        """The balance and the settlements' running totals, as of one moment; UnknownPeer if
        not configured."""
        scale = self.limits(account_id).asset_scale
        return ClearingBook(scale, *await self._store.book(account_id))

    # -- changes --------------------------------------------------------------------------------

    async def apply_balance_change(self, account_id: str, delta: int, idempotency_key: str) -> int:
        """Apply ``delta`` once per key, durably, and log it; the balance after it.

        Not bounded by the credit limits (packets were checked before; settlements must
        apply). UnknownPeer, ClearingInputError, KeyConflict: nothing changed.
        """
        change = BalanceChange(account_id, delta, idempotency_key)
        self._check(change)
        _, balances = await self._store.apply([change], time.time(), None)
        self._wake()
        return balances[0]

    def _check(self, change: BalanceChange) -> None:
        _check_change(change.account_id, change.delta, change.idempotency_key)
        self.limits(change.account_id)

    # -- the in-flight journal (host.connector.ports.ClearingJournal) ---------------------------

    async def journal_packet(self, packet: InFlight) -> None:
        """Record a forwarded packet as pending, durably, before it goes out."""
        await self._store.journal(packet, time.time())

    async def resolve_packet(
        self,
        packet: InFlight,
        resolution: Resolution,
        fulfillment: bytes,
        changes: Sequence[BalanceChange],
    ) -> Resolution:
        """Apply ``changes`` and record the packet's resolution, in one transaction; the
        resolution (an earlier one, and nothing done, if the packet was resolved before)."""
        for change in changes:
            self._check(change)
        earlier, _ = await self._store.apply(
            changes, time.time(), Resolving(packet, resolution, fulfillment)
        )
        if earlier is not None:
            return earlier
        if changes:
            self._wake()
        return resolution

    async def unresolved_packets(self) -> list[InFlight]:
        """The journaled packets not resolved yet, oldest first."""
        return await self._store.unresolved()

    async def packet_outcome(self, source: str, source_id: bytes) -> Outcome:
        """What peer ``source`` is told of its packet ``source_id``."""
        return await self._store.outcome(source, source_id)

    # -- the event log --------------------------------------------------------------------------

    @property
    def last_cursor(self) -> int:
        """The highest cursor written (0 before the first event); on shared books, as of the
        last look at the log (:meth:`refresh_log`)."""
        return self._store.last_cursor

    @property
    def acknowledged(self) -> int:
        """Every event up to this cursor was processed by the engine (and deleted); on shared
        books, as of the last look at the log."""
        return self._store.acknowledged

    async def refresh_log(self) -> None:
        """Bring :attr:`last_cursor` and :attr:`acknowledged` up to date with the books (other
        instances write to shared ones)."""
        await self._store.refresh_log()

    async def events_after(self, cursor: int, limit: int) -> list[BalanceEvent]:
        """At most ``limit`` events with a cursor above ``cursor``, oldest first."""
        return await self._store.events_after(cursor, limit)

    async def acknowledge(self, cursor: int) -> None:
        """Record that the engine processed every event up to ``cursor``, and delete them.

        Idempotent; an older cursor changes nothing. CursorOutOfRange if ahead of the log.
        """
        await self._store.acknowledge(cursor)

    async def wait_beyond(self, cursor: int) -> None:
        """Return once an event with a cursor above ``cursor`` is committed."""
        while self._store.last_cursor <= cursor:
            changed = self._changed
            if not self._store.shared:
                await changed.wait()
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), SHARED_LOG_POLL)
            await self._store.refresh_log()

    async def forget_keys(self, older_than: float) -> int:
        """Delete the idempotency keys recorded more than ``older_than`` seconds ago, and the
        journal's packets resolved as long ago (their peers have had the time to ask)."""
        return await self._store.forget(time.time() - older_than)

    # -- helpers --------------------------------------------------------------------------------

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
