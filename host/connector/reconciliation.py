"""Bilateral reconciliation: do this host's books and a peer's agree, to the unit?

Each side's :class:`~host.ilp.reconcile.Totals` for the account of the other are the balance
and the settlements' running totals. With opposite signs, both sides must count the same
fulfilled packets: ``ours.packets_net + theirs.packets_net == 0`` (the *clearing difference*).
A settlement one side paid and the other has not credited yet is *in transit*:
``ours.settled_out - theirs.settled_in`` (to the peer) and ``theirs.settled_out -
ours.settled_in`` (from the peer), never negative between honest books.

Packets in flight make a moment's comparison inexact: the next hop records a packet before its
Fulfill reaches us. So we take our totals before and after asking the peer; when our two
readings differ, or either side reserved packets not yet resolved, a non-zero difference is
reported as :data:`BUSY` (inexact, with the figures), never as a disagreement.
:func:`compare` is pure; :class:`Reconciler` asks the peers (host.connector.connector) now and
every ``interval`` (``[connector] reconcile_interval``; 0: only on demand), keeps the last
outcome per peer and tells an observer (host.metrics).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from host.clearing_rules import ClearingBook
from host.connector.ports import ConnectorError
from host.ilp.reconcile import NotSupported, ReconcileError, Totals

log = logging.getLogger("ilp_host.connector.reconciliation")

#: An account's book as this host keeps it (the engine's, or the connector's own ledger).
BookReader = Callable[[str], Awaitable[ClearingBook]]

#: Outcomes. AGREE: every difference is 0. SETTLING: the clearing books agree, settlements
#: are in transit. DIFFER: a difference while both sides were quiet. BUSY: a difference while
#: packets were in flight (inexact). UNSUPPORTED: the peer does not speak peer.reconcile.
#: FAILED: the peer could not be asked (unreachable, refused, malformed answer).
AGREE: Final = "agree"
SETTLING: Final = "settling"
DIFFER: Final = "differ"
BUSY: Final = "busy"
UNSUPPORTED: Final = "unsupported"
FAILED: Final = "failed"
#: Every outcome, in the order of the list above.
STATUSES: Final = (AGREE, SETTLING, DIFFER, BUSY, UNSUPPORTED, FAILED)
#: How often each peer is asked, by default.
DEFAULT_INTERVAL: Final = 60.0


@dataclass(frozen=True, slots=True)
class Outcome:
    """One reconciliation with one peer."""

    peer_id: str
    status: str
    #: Wall-clock time of the comparison.
    at: float
    ours: Totals | None = None
    theirs: Totals | None = None
    #: ours.packets_net + theirs.packets_net, the same seen from either side: > 0, the two books
    #: claim that much more than they concede (one side counts it in its own favour); < 0,
    #: they concede more than they claim.
    clearing_difference: int = 0
    #: Settlements paid and not yet credited: by us to the peer, by the peer to us.
    to_peer_in_transit: int = 0
    from_peer_in_transit: int = 0
    #: Why it could not be compared (UNSUPPORTED, FAILED), or what was inexact.
    detail: str = ""

    @property
    def in_agreement(self) -> bool:
        """Whether the clearing books agree (settlements may still be on their way)."""
        return self.status in (AGREE, SETTLING)


def compare(
    peer_id: str, before: Totals, theirs: Totals, after: Totals, at: float | None = None
) -> Outcome:
    """Compare our totals, taken ``before`` and ``after`` asking, with the peer's."""
    at = time.time() if at is None else at
    if before.asset_scale != theirs.asset_scale:
        return Outcome(
            peer_id,
            DIFFER,
            at,
            after,
            theirs,
            detail=f"the accounts count at different scales: ours {before.asset_scale}, "
            f"the peer's {theirs.asset_scale}; the books cannot be compared",
        )
    clearing = after.packets_net + theirs.packets_net
    to_peer = after.settled_out - theirs.settled_in
    from_peer = theirs.settled_out - after.settled_in
    exact = before == after and after.quiet and theirs.quiet
    if clearing == 0 and to_peer == 0 and from_peer == 0:
        status, detail = AGREE, ""
    elif not exact:
        status = BUSY
        detail = "packets were in flight or our books moved meanwhile: inexact, ask again"
    elif clearing == 0 and to_peer >= 0 and from_peer >= 0:
        status, detail = SETTLING, ""
    else:
        status = DIFFER
        detail = _describe(clearing, to_peer, from_peer)
    return Outcome(peer_id, status, at, after, theirs, clearing, to_peer, from_peer, detail)


def _describe(clearing: int, to_peer: int, from_peer: int) -> str:
    parts = []
    if clearing > 0:
        parts.append(
            f"the books differ by {clearing}: one side counts {clearing} more in its own favour "
            "than the other concedes (e.g. packets the receiver recorded as fulfilled and the "
            "sender did not)"
        )
    elif clearing < 0:
        parts.append(
            f"the books differ by {-clearing}: one side counts {-clearing} more in the other's "
            "favour than the other claims (e.g. packets the sender recorded as fulfilled and "
            "the receiver did not)"
        )
    if to_peer < 0:
        parts.append(f"the peer credited {-to_peer} more of our settlements than we paid")
    if from_peer < 0:
        parts.append(f"we credited {-from_peer} more of the peer's settlements than it paid")
    return "; ".join(parts)


class ReconcilingConnector(Protocol):
    """What the reconciler needs of the connector (host.connector.connector.Connector)."""

    async def ask_reconcile(self, peer_id: str) -> tuple[Totals, Totals, Totals]:
        """Our totals before, the peer's, ours after. NotSupported, ReconcileError,
        ConnectorError."""
        ...


class ReconciliationObserver(Protocol):
    """Told of every outcome (host.metrics exports them)."""

    def reconciled(self, outcome: Outcome) -> None:
        """``outcome`` is the latest with its peer."""
        ...


class _NoObserver:
    def reconciled(self, outcome: Outcome) -> None:
        pass


@dataclass
class Reconciler:
    """Reconciles with ``peers`` on demand and, unless ``interval`` is 0, every ``interval``
    seconds (:meth:`run`)."""

    connector: ReconcilingConnector
    peers: Sequence[str]
    interval: float = DEFAULT_INTERVAL
    observer: ReconciliationObserver = field(default_factory=_NoObserver)
    #: The latest outcome per peer.
    last: dict[str, Outcome] = field(default_factory=dict)

    async def reconcile(self, peer_id: str) -> Outcome:
        """Compare our books with ``peer_id``'s now; the outcome (also kept in :attr:`last`)."""
        try:
            before, theirs, after = await self.connector.ask_reconcile(peer_id)
        except NotSupported as exc:
            outcome = Outcome(peer_id, UNSUPPORTED, time.time(), detail=str(exc))
        except (ReconcileError, ConnectorError) as exc:
            outcome = Outcome(peer_id, FAILED, time.time(), detail=str(exc))
        else:
            outcome = compare(peer_id, before, theirs, after)
        previous = self.last.get(peer_id)
        self.last[peer_id] = outcome
        if outcome.status == DIFFER and (previous is None or previous.status != DIFFER):
            log.warning("books of peer %s differ: %s", peer_id, outcome.detail)
        self.observer.reconciled(outcome)
        return outcome

    @property
    def periodic(self) -> bool:
        """Whether :meth:`run` has anything to do (an interval of 0: only on demand)."""
        return self.interval > 0

    async def run(self) -> None:
        """Reconcile with every peer every interval, until cancelled. The first round comes
        an interval after the start: the peers are often still starting with us. Run it only
        when :attr:`periodic`."""
        if not self.periodic:
            raise ValueError("reconciliation is on demand only (interval 0): nothing to run")
        while True:
            await asyncio.sleep(self.interval)
            for peer_id in self.peers:
                try:
                    await self.reconcile(peer_id)
                except Exception:  # a bug must not end the host: it says so and goes on
                    log.exception("reconciliation with peer %s failed", peer_id)
