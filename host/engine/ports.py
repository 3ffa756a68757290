"""The engine's collaborators, as Protocols: the adaptors, the clock, randomness (the store's
protocol is host.engine.store).

The engine is pure orchestration over these; the host binds them to SQLite or PostgreSQL, to
gRPC stubs of the running adaptors (host.engine.grpc_port), to the wall clock.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "Clock",
    "RandomSource",
    "SendResult",
    "SettlementPort",
    "SystemClock",
]


@dataclass(frozen=True, slots=True)
class SendResult:
    """What the ledger said about a payment."""

    #: The ledger's id for the payment.
    settlement_id: str
    #: True when final on the ledger; False when accepted but not final (ask again, same key).
    completed: bool


class SettlementPort(Protocol):
    """One adaptor, as the engine sees it.

    Both methods raise TransientSettlementError (outcome unknown or refusal that may pass: the
    engine retries with the same key) or PermanentSettlementError (refused, nothing paid).
    """

    async def send_money(
        self, account_id: str, ledger_amount: int, idempotency_key: str
    ) -> SendResult:
        """Pay ``ledger_amount`` (> 0, at the ledger's scale) to the peer of ``account_id``.

        Idempotent by key: a repeated call with the same key reports the first call's payment.
        """
        ...

    async def acknowledge_incoming(self, settlement_id: str) -> None:
        """Tell the adaptor an incoming settlement (the ledger's id) is credited. Idempotent."""
        ...


class Clock(Protocol):
    """Wall-clock time in seconds since the epoch (stored in rows, compared across restarts)."""

    def now(self) -> float:
        """The current time."""
        ...


class RandomSource(Protocol):
    """Randomness for backoff jitter (``random.Random`` fits)."""

    def random(self) -> float:
        """A float in [0, 1)."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        """``time.time()``."""
        return time.time()
