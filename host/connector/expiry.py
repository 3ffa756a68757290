"""Expiry handling: may a Prepare go on, with which expiry, and how long to wait. Pure.

A Prepare's sender gives the path until ``expires_at``. Each connector keeps part of that time
for itself, so that it can still answer its own sender after the next hop gave up:

- already expired on arrival: R00 Transfer Timed Out (the time ran out; interledger-rs does
  the same);
- so close to expiry that, after keeping our margin, the next hop would get less than the
  safety margin: R02 Insufficient Timeout (the sender may retry with a later expiry);
- otherwise the forwarded Prepare expires ``margin`` earlier than ours, and never later than
  ``max_hold`` from now (a sender must not tie up our liquidity for hours);
- we wait for the next hop's reply until that forwarded expiry, then answer R00 ourselves.

Local delivery and ``peer.settle`` messages are handled here, not forwarded: only an expired
Prepare is refused, and the wait is the time left.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from host.ilp import timestamp
from host.ilp.errors import ErrorCode

DEFAULT_MARGIN = timedelta(seconds=1)
DEFAULT_SAFETY_MARGIN = timedelta(seconds=1)
DEFAULT_MAX_HOLD = timedelta(seconds=30)


@dataclass(frozen=True, slots=True)
class ExpiryPolicy:
    """How much time this connector keeps, and how little it passes on."""

    #: Subtracted from the expiry of every forwarded Prepare.
    margin: timedelta = DEFAULT_MARGIN
    #: The least time left we forward a Prepare with (after subtracting ``margin``).
    safety_margin: timedelta = DEFAULT_SAFETY_MARGIN
    #: The latest a forwarded Prepare may expire, from now.
    max_hold: timedelta = DEFAULT_MAX_HOLD

    def __post_init__(self) -> None:
        for name in ("margin", "safety_margin", "max_hold"):
            value: timedelta = getattr(self, name)
            if value < timedelta(0):
                raise ValueError(f"expiry {name} must not be negative, got {value}")
        if self.max_hold <= self.safety_margin:
            raise ValueError(
                f"expiry max_hold ({self.max_hold}) must exceed safety_margin "
                f"({self.safety_margin}), or nothing could be forwarded"
            )


@dataclass(frozen=True, slots=True)
class Forward:
    """Forward with this expiry and wait at most ``timeout`` seconds for the reply."""

    expires_at: datetime
    timeout: float


@dataclass(frozen=True, slots=True)
class Refuse:
    """Do not forward: answer with this Reject code and message."""

    code: ErrorCode
    message: str


def time_left(expires_at: datetime, now: datetime) -> float:
    """Seconds until ``expires_at`` (negative when it has passed)."""
    return (expires_at - now).total_seconds()


def check_expired(expires_at: datetime, now: datetime) -> Refuse | None:
    """R00 when the Prepare has expired (for local delivery and ``peer.settle``)."""
    if expires_at <= now:
        late = time_left(now, expires_at)
        return Refuse(
            ErrorCode.R00_TRANSFER_TIMED_OUT, f"the Prepare expired {late:.3f} s before it arrived"
        )
    return None


def forwarding(expires_at: datetime, now: datetime, policy: ExpiryPolicy) -> Forward | Refuse:
    """What to do with a Prepare expiring at ``expires_at`` that should go to the next hop."""
    expired = check_expired(expires_at, now)
    if expired is not None:
        return expired
    outgoing = min(expires_at - policy.margin, now + policy.max_hold)
    left = outgoing - now
    if left < policy.safety_margin:
        return Refuse(
            ErrorCode.R02_INSUFFICIENT_TIMEOUT,
            f"the Prepare expires in {time_left(expires_at, now):.3f} s; forwarding needs at "
            f"least {(policy.margin + policy.safety_margin).total_seconds():.3f} s",
        )
    # The wire keeps whole milliseconds, rounded down: the timeout follows the wire value.
    outgoing = timestamp.to_expiry(outgoing)
    return Forward(outgoing, time_left(outgoing, now))
