"""The balance middleware: credit checks before a packet moves, durable balances once it is paid.

A packet from peer X (the source) forwarded to peer Y (the target) with amount ``a > 0``:

1. **Reserve.** ``a`` is added to X's incoming and Y's outgoing reservations (in memory), then
   the clearing port is asked whether X's balance may rise by everything reserved for X
   (``check_credit(X, +reserved)``) and Y's fall by everything reserved for Y
   (``check_credit(Y, -reserved)``). Reserving *before* the asynchronous check is what makes
   concurrent packets see each other: two packets cannot both pass a check that only one of
   them fits. A failed check undoes the reservation and the packet is refused (T04).
2. **Fulfill.** The balances are applied durably *before* the Fulfill goes back to X:
   ``apply_balance_change(Y, -a)`` first (Y fulfilled: that is a fact whatever happens next),
   then ``apply_balance_change(X, +a)``. Then the reservations are released. If X's change
   cannot be applied, the caller answers X with a Reject instead of the Fulfill: we do not
   hand over a Fulfill we have not charged for.
3. **Reject or timeout.** The reservations are released; nothing is applied.

Idempotency keys are derived from the packet (:func:`packet_id`: the source account and the
exact bytes of its Prepare) and the side, so a replayed Prepare applies nothing twice. A
replay is byte-identical; two honest payments never are (their conditions differ).

Amount 0 packets (``peer.settle`` messages among them) skip the middleware. A packet from this
host's own packet source has no source account; one delivered to the local receiver has no
target account; only the sides that exist are checked and applied.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from dataclasses import dataclass

from host.connector.ports import ClearingPort

log = logging.getLogger("ilp_host.connector.balance")


def packet_id(source: str | None, prepare: bytes) -> bytes:
    """A digest that identifies one Prepare from one source (the basis of the keys)."""
    origin = b"local" if source is None else b"peer:" + source.encode("utf-8")
    return hashlib.sha256(origin + b"\0" + prepare).digest()


def idempotency_key(packet: bytes, side: str, account_id: str) -> str:
    """The key of the balance change on one side (``in`` or ``out``) of a packet: 69 chars."""
    digest = hashlib.sha256(packet + side.encode() + b"\0" + account_id.encode("utf-8"))
    return f"ilp-{side}-{digest.hexdigest()}"


@dataclass(frozen=True, slots=True)
class Hold:
    """The reservations of one packet in flight."""

    source: str | None
    target: str | None
    amount: int


class CreditRefused(Exception):
    """A packet that would take an account past its credit limit (answered T04)."""


class BalanceMiddleware:
    """In-flight reservations over a :class:`ClearingPort`."""

    def __init__(self, clearing: ClearingPort) -> None:
        self._clearing = clearing
        self._incoming: defaultdict[str, int] = defaultdict(int)
        self._outgoing: defaultdict[str, int] = defaultdict(int)

    def reserved(self, account_id: str) -> tuple[int, int]:
        """What is in flight for an account: (incoming, outgoing) amounts."""
        return self._incoming.get(account_id, 0), self._outgoing.get(account_id, 0)

    async def reserve(self, source: str | None, target: str | None, amount: int) -> Hold:
        """Reserve ``amount`` on both sides; CreditRefused if a side's limit would be crossed.

        Any exception leaves no reservation behind.
        """
        hold = Hold(source, target, amount)
        if amount == 0:
            return hold
        if source is not None:
            self._incoming[source] += amount
        if target is not None:
            self._outgoing[target] += amount
        try:
            if source is not None and not await self._clearing.check_credit(
                source, self._incoming[source]
            ):
                raise CreditRefused(
                    f"the sending peer's balance would exceed its credit limit "
                    f"(amount {amount}, in flight {self._incoming[source] - amount})"
                )
            if target is not None and not await self._clearing.check_credit(
                target, -self._outgoing[target]
            ):
                raise CreditRefused(
                    f"not enough liquidity with the next hop "
                    f"(amount {amount}, in flight {self._outgoing[target] - amount})"
                )
        except BaseException:
            self.release(hold)
            raise
        return hold

    def release(self, hold: Hold) -> None:
        """Drop a packet's reservations (it was rejected, timed out or applied)."""
        if hold.amount == 0:
            return
        if hold.source is not None:
            self._drop(self._incoming, hold.source, hold.amount)
        if hold.target is not None:
            self._drop(self._outgoing, hold.target, hold.amount)

    async def commit(self, hold: Hold, packet: bytes) -> None:
        """Apply a fulfilled packet's balance changes durably, then release it.

        A failure on the target side is logged with what to re-apply (the Fulfill is a fact);
        a failure on the source side is raised (the caller must not pass the Fulfill back).
        The reservations are released either way.
        """
        try:
            if hold.amount == 0:
                return
            if hold.target is not None:
                key = idempotency_key(packet, "out", hold.target)
                try:
                    await self._clearing.apply_balance_change(hold.target, -hold.amount, key)
                except Exception:
                    log.exception(
                        "a fulfilled packet's debit could not be recorded: apply %d to account "
                        "%s with idempotency key %s",
                        -hold.amount,
                        hold.target,
                        key,
                    )
            if hold.source is not None:
                key = idempotency_key(packet, "in", hold.source)
                await self._clearing.apply_balance_change(hold.source, hold.amount, key)
        finally:
            self.release(hold)

    @staticmethod
    def _drop(table: defaultdict[str, int], account_id: str, amount: int) -> None:
        left = table[account_id] - amount
        if left:
            table[account_id] = left
        else:
            del table[account_id]
