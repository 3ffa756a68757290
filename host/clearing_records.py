"""The clearing records that the engine's store and the connector's clearing file both keep.

A balance change applied under an idempotency key, and the in-flight journal's packet and how
it ended (host.connector.inflight). The connector defines how they are used (its ports,
host.connector.ports, re-export them); the engine's store keeps them in proposal 1, so they
live here, where neither side imports the other to name them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from host.ilp.outcome import Status

__all__ = ["STATUS_OF_RESOLUTION", "BalanceChange", "InFlight", "Resolution"]


@dataclass(frozen=True, slots=True)
class InFlight:
    """A packet in flight through this host, as the journal records it.

    ``key`` identifies the packet here (the hex of host.connector.middleware.packet_id: the
    basis of its balance keys). ``source_id``/``target_id`` are its ids on the incoming and
    outgoing links (host.ilp.outcome.wire_packet_id; empty without that side): the source asks
    about ``source_id``, this host asks the target about ``target_id``. ``expires_at`` (seconds
    since the epoch) is the expiry of the Prepare on the outgoing link (incoming, if none).
    """

    key: str
    source: str | None
    source_id: bytes
    target: str | None
    target_id: bytes
    amount: int
    expires_at: float
    condition: bytes


class Resolution(enum.Enum):
    """How a journaled packet ended, and so what its source is told when it asks."""

    #: Both sides applied; the source got the Fulfill.
    FULFILLED = "fulfilled"
    #: Only the next hop's side applied (it fulfilled); the source got a Reject, or nothing.
    FORWARDED = "forwarded"
    #: Nothing applied.
    REJECTED = "rejected"


#: What the source of a packet is told, by resolution (a pending record: PENDING).
STATUS_OF_RESOLUTION: dict[Resolution, Status] = {
    Resolution.FULFILLED: Status.FULFILLED,
    Resolution.FORWARDED: Status.REJECTED,
    Resolution.REJECTED: Status.REJECTED,
}


@dataclass(frozen=True, slots=True)
class BalanceChange:
    """One idempotent clearing-balance change (see ClearingPort.apply_balance_change)."""

    account_id: str
    delta: int
    idempotency_key: str
