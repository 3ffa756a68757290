"""Test doubles for the engine's ports: a clock to move by hand and a small in-memory ledger.

The store is never faked: tests run the engine against a real SQLite file.
"""

from __future__ import annotations

import random
import tempfile
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from host.engine import (
    AdaptorRegistry,
    Engine,
    PermanentSettlementError,
    Policy,
    SendResult,
    SettlementPort,
    TransientSettlementError,
)
from host.engine.store import Store
from host.store.opening import open_store
from sdk.backoff import Backoff

START = 1_700_000_000.0


class FakeClock:
    """Time that moves only when told to."""

    def __init__(self, now: float = START) -> None:
        self.t = now

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@dataclass(frozen=True)
class Payment:
    account_id: str
    amount: int
    ledger_id: str


class FakeLedger:
    """A SettlementPort that is a tiny ledger with its own idempotency, plus scripted faults.

    ``script`` holds the outcomes of the next send_money calls: "ok", "pending" (accepted, not
    final: the next call with the key reports it completed), "transient" (fails before paying),
    "lost" (pays, then the reply is lost: raises transient), "permanent" (refuses; only possible
    for a key it has not paid, as a real adaptor's idempotency check comes first). Empty: "ok".
    ``ack_script`` does the same for acknowledge_incoming ("ok", "transient", "permanent").
    """

    def __init__(self) -> None:
        self.payments: dict[str, Payment] = {}
        self.paid: Counter[str] = Counter()  # payments made per key: must never exceed 1
        self.calls: Counter[str] = Counter()
        self.not_final: set[str] = set()
        self.script: deque[str] = deque()
        self.acks: Counter[str] = Counter()
        self.ack_script: deque[str] = deque()

    async def send_money(
        self, account_id: str, ledger_amount: int, idempotency_key: str
    ) -> SendResult:
        self.calls[idempotency_key] += 1
        outcome = self.script.popleft() if self.script else "ok"
        if outcome == "transient":
            raise TransientSettlementError("ledger unreachable")
        payment = self.payments.get(idempotency_key)
        if payment is not None:
            if (payment.account_id, payment.amount) != (account_id, ledger_amount):
                raise PermanentSettlementError("idempotency key reused with other content")
            if outcome != "pending":
                self.not_final.discard(idempotency_key)
        elif outcome == "permanent":
            raise PermanentSettlementError("peer account unknown to the ledger")
        else:
            payment = Payment(account_id, ledger_amount, f"tx-{len(self.payments) + 1}")
            self.payments[idempotency_key] = payment
            self.paid[idempotency_key] += 1
            if outcome == "pending":
                self.not_final.add(idempotency_key)
        if outcome == "lost":
            raise TransientSettlementError("connection reset after the ledger committed")
        return SendResult(payment.ledger_id, idempotency_key not in self.not_final)

    async def acknowledge_incoming(self, settlement_id: str) -> None:
        outcome = self.ack_script.popleft() if self.ack_script else "ok"
        if outcome == "transient":
            raise TransientSettlementError("adaptor unreachable")
        if outcome == "permanent":
            raise PermanentSettlementError("unknown settlement")
        self.acks[settlement_id] += 1

    def total_paid(self, account_id: str) -> int:
        return sum(p.amount for p in self.payments.values() if p.account_id == account_id)


POLICY = Policy(settle_threshold=-1000, settle_to=-200, min_balance=-5000, max_balance=3000)


def socket_dir() -> tempfile.TemporaryDirectory[str]:
    """A short temporary directory (sockets need paths under ~100 bytes)."""
    return tempfile.TemporaryDirectory(prefix="ilp")


async def open_engine(
    path: Path | str,
    ports: AdaptorRegistry | Mapping[str, SettlementPort],
    clock: FakeClock,
    *,
    seed: int = 1,
    backoff: Backoff | None = None,
) -> tuple[Store, Engine]:
    """A store on ``path`` (SQLite file, or PostgreSQL URL) and an engine over it with
    deterministic time and jitter."""
    store = await open_store(path)
    engine = Engine(store, ports, clock=clock, rng=random.Random(seed), backoff=backoff)
    return store, engine


async def add_account(
    engine: Engine,
    account_id: str = "alice",
    *,
    asset_scale: int = 2,
    ledger_scale: int = 2,
    policy: Policy = POLICY,
) -> None:
    await engine.create_account(
        account_id,
        adaptor="sim",
        asset_code="USD",
        asset_scale=asset_scale,
        ledger_scale=ledger_scale,
        policy=policy,
    )
