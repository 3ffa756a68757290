"""The balance middleware: credit checks before a packet moves, durable balances once it is paid.

A packet from peer X (the source) forwarded to peer Y (the target) with amount ``a > 0``:

1. **Reserve.** ``a`` is added to X's incoming and Y's outgoing reservations (in memory), then
   the clearing port is asked whether X's balance may rise by everything reserved for X
   (``check_credit(X, +reserved)``) and Y's fall by everything reserved for Y
   (``check_credit(Y, -reserved)``). Reserving *before* the asynchronous check is what makes
   concurrent packets see each other: two packets cannot both pass a check that only one of
   them fits. A failed check undoes the reservation and the packet is refused (T04).
2. **Journal.** With a clearing port that keeps the in-flight journal
   (host.connector.ports.ClearingJournal), the packet is recorded durably before it goes out
   to Y, so that a crash cannot forget it (host.connector.inflight resolves what is left).
3. **Fulfill.** The balances are applied durably *before* the Fulfill goes back to X:
   Y's ``-a`` (Y fulfilled: that is a fact whatever happens next) and X's ``+a``, in one
   transaction with the packet's resolution when journaled. Then the reservations are
   released. If the changes cannot be applied, the caller answers X with a Reject instead of
   the Fulfill (we do not hand over a Fulfill we have not charged for) and retries Y's debit
   until it is recorded (host.connector.inflight).
4. **Reject or timeout.** The reservations are released; nothing is applied.

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

from host.clearing_records import BalanceChange, InFlight, Resolution
from host.connector.ports import ClearingJournal, ClearingPort
from sdk import failpoints

log = logging.getLogger("ilp_host.connector.balance")


def packet_id(source: str | None, prepare: bytes) -> bytes:
    """A digest that identifies one Prepare from one source (the basis of the keys)."""
    origin = b"local" if source is None else b"peer:" + source.encode("utf-8")
    return hashlib.sha256(origin + b"\0" + prepare).digest()


def idempotency_key(packet: bytes, side: str, account_id: str) -> str:
    """The key of the balance change on one side (``in`` or ``out``) of a packet: 69 chars."""
    digest = hashlib.sha256(packet + side.encode() + b"\0" + account_id.encode("utf-8"))
    return f"ilp-{side}-{digest.hexdigest()}"


def debit_of(packet: InFlight) -> BalanceChange | None:
    """The next hop's side of a fulfilled packet (None without a next hop)."""
    if packet.target is None:
        return None
    key = idempotency_key(bytes.fromhex(packet.key), "out", packet.target)
    return BalanceChange(packet.target, -packet.amount, key)


def changes_of(packet: InFlight) -> list[BalanceChange]:
    """Both sides of a fulfilled packet: the next hop's debit first, then the source's credit."""
    changes: list[BalanceChange] = []
    debit = debit_of(packet)
    if debit is not None:
        changes.append(debit)
    if packet.source is not None:
        key = idempotency_key(bytes.fromhex(packet.key), "in", packet.source)
        changes.append(BalanceChange(packet.source, packet.amount, key))
    return changes


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
        self._journal = clearing if isinstance(clearing, ClearingJournal) else None
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

    @property
    def journal_port(self) -> ClearingJournal | None:
        """The clearing port as the in-flight journal, if it keeps one."""
        return self._journal

    @property
    def journaled(self) -> bool:
        """Whether the clearing port keeps the in-flight journal (host.connector.ports)."""
        return self._journal is not None

    async def journal(self, packet: InFlight) -> None:
        """Record a packet durably before it goes out (nothing without a journal)."""
        if self._journal is not None:
            await self._journal.journal_packet(packet)

    async def resolve_rejected(self, packet: InFlight) -> None:
        """Record that a journaled packet was rejected: nothing to apply."""
        if self._journal is not None:
            await self._journal.resolve_packet(packet, Resolution.REJECTED, b"", ())

    def keep(self, target: str, amount: int) -> Hold:
        """Hold ``amount`` on the next hop's side of a packet whose outcome is not known yet,
        without a credit check (it went out already); :meth:`release` it once resolved."""
        self._outgoing[target] += amount
        return Hold(None, target, amount)

    async def commit(self, hold: Hold, packet: InFlight, fulfillment: bytes) -> bool:
        """Apply a fulfilled packet's balance changes durably, then release it; whether the
        source is charged (False: the journal had the packet resolved otherwise already, by
        the resolver of another instance sharing the store, so the source must not get the
        Fulfill; a replayed Prepare finds its own resolution, True).

        With a journal, both sides and the packet's resolution are one transaction; without,
        the next hop's side first (the Fulfill is a fact), then the source's. An exception
        means the source's side was not applied (the caller must not pass the Fulfill back);
        the next hop's debit is then the caller's to retry (:func:`debit_of`). The
        reservations are released either way.
        """
        try:
            if hold.amount == 0:
                return True
            changes = changes_of(packet)
            if self._journal is not None:
                failpoints.fail(failpoints.CONNECTOR_RECORD_FULFILL)
                resolution = await self._journal.resolve_packet(
                    packet, Resolution.FULFILLED, fulfillment, changes
                )
                return resolution == Resolution.FULFILLED
            for change in changes:
                await self._clearing.apply_balance_change(
                    change.account_id, change.delta, change.idempotency_key
                )
            return True
        finally:
            self.release(hold)

    @staticmethod
    def _drop(table: defaultdict[str, int], account_id: str, amount: int) -> None:
        left = table[account_id] - amount
        if left:
            table[account_id] = left
        else:
            del table[account_id]
