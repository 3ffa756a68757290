"""Idempotent SendMoney: pay once per idempotency key, whatever the retries.

The engine retries SendMoney with the same key until it gets a definite answer, after a lost
reply, an adaptor restart or a host restart. ``Payments.once`` gives the answers the contract
asks for (docs/protocol.md, "Idempotency of SendMoney") over a small ``PaymentStore``:

- the first use of a key claims it for that request (account, amount, scale), before paying;
- the same key with the same request returns the first result, and pays nothing;
- the same key with another request is ``Conflict`` (ALREADY_EXISTS);
- the same key while that payment is still running in this process is ``Unavailable``: the
  engine retries, and the retry gets the result;
- a definite refusal of the payment (``Refused``, ``NotFound``, ...: nothing was paid) gives the
  key back, so a refused request leaves nothing behind;
- an unknown outcome (``Unavailable``, another error, a crash) keeps the claim without a result: the
  next call with the key pays again through ``pay``. So ``pay`` must itself be idempotent by
  key on the ledger (a ledger-side payment id derived from the key, or a look-up of the
  ledger before paying); a pending payment (``Sent.completed`` False) is asked again the same
  way, to report its progress.

Two stores: ``MemoryPaymentStore`` (lost on exit: tests, demos, ledgers that dedup by the key
themselves) and ``SqlitePaymentStore`` (a file that survives restarts).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sdk.errors import Conflict, InvalidRequest, NotFound, Refused, Unavailable
from sdk.requests import SendMoney, Sent


@dataclass(frozen=True)
class PaymentRecord:
    """What an idempotency key stands for: its first request, and its result once final."""

    request: SendMoney
    #: None while the outcome is not known (paying now, or interrupted).
    sent: Sent | None = None


class PaymentStore(Protocol):
    """Where idempotency keys are recorded. Each method is one atomic step."""

    async def claim(self, request: SendMoney) -> PaymentRecord:
        """Record ``request`` under its key unless the key is taken; the key's record."""
        ...

    async def complete(self, key: str, sent: Sent) -> None:
        """Record the final result of the key's payment."""
        ...

    async def release(self, key: str) -> None:
        """Forget a key whose payment was refused (nothing was paid)."""
        ...


class MemoryPaymentStore:
    """A PaymentStore in memory: lost when the process exits."""

    def __init__(self) -> None:
        self._records: dict[str, PaymentRecord] = {}

    async def claim(self, request: SendMoney) -> PaymentRecord:
        return self._records.setdefault(request.idempotency_key, PaymentRecord(request))

    async def complete(self, key: str, sent: Sent) -> None:
        self._records[key] = PaymentRecord(self._records[key].request, sent)

    async def release(self, key: str) -> None:
        self._records.pop(key, None)


_SCHEMA = """CREATE TABLE IF NOT EXISTS sdk_payments (
    idempotency_key TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    amount TEXT NOT NULL,
    scale INTEGER NOT NULL,
    settlement_id TEXT,
    completed INTEGER
)"""


class SqlitePaymentStore:
    """A PaymentStore in a SQLite file (its own table, ``sdk_payments``, so an adaptor can
    keep it in its own state file).

    Short transactions on the event loop, ``synchronous=NORMAL`` in WAL mode: a power cut may
    lose the last commits. A lost claim or result costs nothing when ``pay`` is idempotent on
    the ledger, as it must be (module docstring).
    """

    def __init__(self, path: str | Path) -> None:
        self._db = sqlite3.connect(str(path), isolation_level=None)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        """Close the file."""
        self._db.close()

    async def claim(self, request: SendMoney) -> PaymentRecord:
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "INSERT INTO sdk_payments (idempotency_key, account_id, amount, scale) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (idempotency_key) DO NOTHING",
                (request.idempotency_key, request.account_id, str(request.amount), request.scale),
            )
            row = self._db.execute(
                "SELECT account_id, amount, scale, settlement_id, completed FROM sdk_payments "
                "WHERE idempotency_key = ?",
                (request.idempotency_key,),
            ).fetchone()
        first = SendMoney(row[0], int(row[1]), row[2], request.idempotency_key)
        return PaymentRecord(first, None if row[3] is None else Sent(row[3], bool(row[4])))

    async def complete(self, key: str, sent: Sent) -> None:
        with self._db:
            self._db.execute(
                "UPDATE sdk_payments SET settlement_id = ?, completed = ? "
                "WHERE idempotency_key = ?",
                (sent.settlement_id, int(sent.completed), key),
            )

    async def release(self, key: str) -> None:
        with self._db:
            self._db.execute("DELETE FROM sdk_payments WHERE idempotency_key = ?", (key,))


class Payments:
    """Pays each idempotency key once, over a PaymentStore (module docstring)."""

    def __init__(self, store: PaymentStore | None = None) -> None:
        self.store: PaymentStore = store if store is not None else MemoryPaymentStore()
        self._running: set[str] = set()

    async def once(self, request: SendMoney, pay: Callable[[SendMoney], Awaitable[Sent]]) -> Sent:
        """The result of ``request``: replayed for a known key, else ``await pay(request)``."""
        key = request.idempotency_key
        record = await self.store.claim(request)
        if record.request != request:
            first = record.request
            raise Conflict(
                f"idempotency_key {key!r} was used for {first.amount} at scale {first.scale} "
                f"to {first.account_id!r}; a new payment needs a new key"
            )
        if record.sent is not None:
            return record.sent
        if key in self._running:
            raise Unavailable(
                f"the payment with idempotency_key {key!r} is in progress; retry with the same key"
            )
        self._running.add(key)
        try:
            sent = await pay(request)
        except (Refused, NotFound, Conflict, InvalidRequest):
            await self.store.release(key)  # a definite refusal: nothing was paid
            raise
        finally:
            self._running.discard(key)
        if sent.completed:
            await self.store.complete(key, sent)
        return sent
