"""Resolving the packets whose outcome this host does not know: nothing lost in clearing.

A forwarded packet is journaled before it goes out (host.connector.middleware). It is
*unresolved* when no definite answer came back: the host crashed while it was out, the link
failed, the next hop did not answer in time. Its next hop may have fulfilled it and recorded it:
forgetting it would leave the two books apart by its amount. So each unresolved packet is
resolved here, by asking the next hop (``peer.outcome``, host.ilp.outcome):

- fulfilled, with a fulfillment that hashes to the condition: the next hop's side is applied
  (we owe it); the source is not charged, it got a Reject or nothing (FORWARDED);
- rejected: released;
- unknown (never seen), or a peer that does not answer the query: released once the packet
  expired plus :data:`GRACE` (a host of this project never records a Fulfill after the
  expiry of the Prepare it answers; the grace covers a commit begun just before, and clock
  skew); a peer without the query is counted (:attr:`InFlightResolver.unsupported`);
- pending there, or no answer: asked again later.

Before each question to the next hop the journal is looked at: several connector instances
may share one set of books (PostgreSQL), and a starting instance takes over every packet the
journal has unresolved, including those another live instance is still forwarding. Once that
instance resolved one, the journal says so (it answers its source the same way,
``packet_outcome``), and the packet is released here at once instead of at its expiry plus the
grace. While the next hop has not seen a packet (it is final only after the expiry plus the
grace), the journal is looked at again with growing delays, up to :data:`LOOK_CAP` apart, and
the next hop is asked again at the expiry plus the grace. Only forwarded packets can be looked
up so (by their source's id); this host's own packets (no source) wait for the next hop.

The same loop is the **retry queue** of a next hop's debit that could not be recorded after its
Fulfill (the store failed): the debit is retried with the same idempotency key, with
sdk.backoff delays, until it is applied; the journal's pending record is what makes it survive
a crash (the restarted host asks the next hop for the fulfillment again). Until resolved, the
packet's amount stays reserved on the next hop's side, so the credit checks count it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from host.clearing_records import InFlight, Resolution
from host.connector.middleware import BalanceMiddleware, Hold, debit_of
from host.connector.ports import ClearingJournal, ClearingPort
from host.ilp.outcome import Outcome, Status
from sdk.backoff import backoff_delay

log = logging.getLogger("ilp_host.connector.inflight")

#: Seconds after a packet's expiry before "unknown" from its next hop is final (see above).
GRACE = 5.0
#: Retry delays (sdk.backoff) of a query or a recording that failed.
RETRY_INITIAL = 0.2
RETRY_CAP = 30.0
#: Longest delay between two looks at the journal for a packet the next hop has not seen.
LOOK_CAP = 5.0

Ask = Callable[[str, InFlight], Awaitable[Outcome]]


def decide(
    status: Status, now: float, expires_at: float, grace: float = GRACE
) -> Resolution | None:
    """How a packet ends given its next hop's answer at ``now``; None: ask again later."""
    if status == Status.FULFILLED:
        return Resolution.FORWARDED
    if status == Status.REJECTED:
        return Resolution.REJECTED
    if status in (Status.UNKNOWN, Status.UNSUPPORTED) and now >= expires_at + grace:
        return Resolution.REJECTED
    return None


def _looked_up(packet: InFlight) -> bool:
    """Whether the journal can tell how ``packet`` ended: by its source's id (a forwarded one)."""
    return packet.source is not None and bool(packet.source_id)


@dataclass
class Unresolved:
    """A packet waiting here: its record, its fulfillment once known, the retries so far."""

    packet: InFlight
    hold: Hold
    #: Known when the next hop fulfilled: its debit waits to be recorded (the retry queue).
    fulfillment: bytes = b""
    attempts: int = 0
    next_at: float = 0.0
    last_error: str = ""
    counted_unsupported: bool = False
    #: Until when only the journal is looked at (the next hop said it has not seen it).
    ask_after: float = 0.0
    looks: int = 0


class InFlightResolver:
    """The unresolved packets of one connector and the loop that resolves them (:meth:`run`)."""

    def __init__(
        self,
        clearing: ClearingPort,
        balances: BalanceMiddleware,
        ask: Ask,
        *,
        grace: float = GRACE,
        now: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._clearing = clearing
        self._journal = clearing if isinstance(clearing, ClearingJournal) else None
        self._balances = balances
        self._ask = ask
        self._grace = grace
        self._now = now
        self._rng = rng
        self._waiting: dict[str, Unresolved] = {}
        self._wake = asyncio.Event()
        #: Per peer: how many packets it could not be asked about (it does not speak
        #: peer.outcome) and that were released as before the journal.
        self.unsupported: dict[str, int] = {}
        #: How many packets were resolved here, by resolution.
        self.resolved: dict[Resolution, int] = dict.fromkeys(Resolution, 0)

    def add(
        self, packet: InFlight, fulfillment: bytes = b"", error: str = "", *, ask_now: bool = False
    ) -> None:
        """Resolve ``packet`` here (its next hop's side stays reserved until then).

        ``fulfillment``: the next hop fulfilled it and its debit must be recorded (at once).
        Otherwise the next hop is asked once the packet expired plus the grace, when its answer
        is final (at once with ``ask_now``: after a restart, an early "fulfilled" is welcome).
        """
        if packet.target is None or packet.key in self._waiting:
            return
        hold = self._balances.keep(packet.target, packet.amount)
        now = self._now()
        due = now if fulfillment or ask_now else max(now, packet.expires_at + self._grace)
        self._waiting[packet.key] = Unresolved(
            packet, hold, fulfillment, next_at=due, last_error=error
        )
        self._wake.set()

    async def load(self) -> int:
        """Take over the packets a previous run left unresolved in the journal; how many."""
        if self._journal is None:
            return 0
        packets = await self._journal.unresolved_packets()
        for packet in packets:
            self.add(packet, ask_now=True)
        if packets:
            log.info(
                "%d packet(s) in flight at the last stop: asking their next hops", len(packets)
            )
        return len(packets)

    def waiting(self) -> list[Unresolved]:
        """The unresolved packets, oldest expiry first."""
        return sorted(self._waiting.values(), key=lambda u: u.packet.expires_at)

    async def run(self) -> None:
        """Resolve until cancelled."""
        while True:
            self._wake.clear()
            now = self._now()
            for entry in [u for u in self._waiting.values() if u.next_at <= now]:
                await self.resolve(entry)
            if not self._waiting:
                await self._wake.wait()
                continue
            pause = min(u.next_at for u in self._waiting.values()) - self._now()
            if pause > 0:
                try:
                    async with asyncio.timeout(pause):
                        await self._wake.wait()
                except TimeoutError:
                    pass

    async def resolve(self, entry: Unresolved) -> None:
        """One attempt at resolving ``entry``; on failure it is scheduled again."""
        packet = entry.packet
        assert packet.target is not None
        try:
            if not entry.fulfillment:
                if await self._resolved_in_journal(entry):
                    return
                if self._now() < entry.ask_after:
                    self._look_again(entry)
                    return
                outcome = await self._ask(packet.target, packet)
                if outcome.status == Status.UNSUPPORTED and not entry.counted_unsupported:
                    entry.counted_unsupported = True
                    self.unsupported[packet.target] = self.unsupported.get(packet.target, 0) + 1
                resolution = decide(outcome.status, self._now(), packet.expires_at, self._grace)
                if resolution is None:
                    later = packet.expires_at + self._grace
                    if outcome.status == Status.PENDING or later <= self._now():
                        self._retry(entry, f"the next hop says {outcome.status.name.lower()}")
                    else:
                        entry.ask_after = entry.next_at = later
                        self._look_again(entry)
                    return
                if resolution == Resolution.REJECTED:
                    await self._finish(entry, Resolution.REJECTED)
                    return
                entry.fulfillment = outcome.fulfillment
            await self._finish(entry, Resolution.FORWARDED)
        except Exception as exc:  # a store or link failure: try again later
            self._retry(entry, str(exc) or type(exc).__name__)

    async def _resolved_in_journal(self, entry: Unresolved) -> bool:
        """Whether the journal has ``entry``'s packet resolved already (by another instance on
        the same books); if so it is released here, nothing applied (module docstring)."""
        packet = entry.packet
        if self._journal is None or not _looked_up(packet):
            return False
        assert packet.source is not None  # looked up by it
        told = await self._journal.packet_outcome(packet.source, packet.source_id)
        if told.status not in (Status.FULFILLED, Status.REJECTED):
            return False  # pending, or not found: the next hop tells
        # Resolving a resolved packet changes nothing and returns how it ended; it lets the
        # store drop the packet from what this instance holds in flight.
        resolution = await self._journal.resolve_packet(packet, Resolution.REJECTED, b"", [])
        self._let_go(entry, resolution, "was resolved on the shared books already")
        return True

    def _look_again(self, entry: Unresolved) -> None:
        """Schedule the next look at the journal before ``entry.ask_after``, if it can tell."""
        if self._journal is None or not _looked_up(entry.packet):
            entry.next_at = entry.ask_after
            return
        entry.looks += 1
        delay = backoff_delay(
            entry.looks,
            initial=RETRY_INITIAL,
            multiplier=2.0,
            cap=LOOK_CAP,
            jitter=0.2,
            random=self._rng,
        )
        entry.next_at = min(entry.ask_after, self._now() + delay)

    async def _finish(self, entry: Unresolved, resolution: Resolution) -> None:
        packet = entry.packet
        debit = debit_of(packet) if resolution == Resolution.FORWARDED else None
        if self._journal is not None:
            await self._journal.resolve_packet(
                packet, resolution, entry.fulfillment, [debit] if debit is not None else []
            )
        elif debit is not None:
            await self._clearing.apply_balance_change(
                debit.account_id, debit.delta, debit.idempotency_key
            )
        retries = f" (after {entry.attempts} retries)" if entry.attempts else ""
        self._let_go(entry, resolution, "resolved", retries)

    def _let_go(
        self, entry: Unresolved, resolution: Resolution, how: str, detail: str = ""
    ) -> None:
        """``entry``'s packet ended (``resolution``): no longer waiting, its hold released."""
        packet = entry.packet
        del self._waiting[packet.key]
        self._balances.release(entry.hold)
        self.resolved[resolution] += 1
        log.info(
            "packet %s… to peer %s %s: %s%s",
            packet.key[:16],
            packet.target,
            how,
            resolution.value,
            detail,
        )

    def _retry(self, entry: Unresolved, error: str) -> None:
        entry.attempts += 1
        entry.last_error = error
        delay = backoff_delay(
            entry.attempts,
            initial=RETRY_INITIAL,
            multiplier=2.0,
            cap=RETRY_CAP,
            jitter=0.2,
            random=self._rng,
        )
        entry.next_at = self._now() + delay
        if entry.attempts in (1, 10) or entry.attempts % 100 == 0:
            log.warning(
                "packet %s… to peer %s is not resolved yet (attempt %d): %s; retrying in %.1f s",
                entry.packet.key[:16],
                entry.packet.target,
                entry.attempts,
                error,
                delay,
            )
