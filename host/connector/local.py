"""This host as an ILP endpoint, for exercising links and settlement: a receiver and a source.

**Not a payment protocol.** The :class:`LocalReceiver` fulfills a Prepare whose data carries
the preimage of its own condition, in the clear: every connector on the path can read it and
could fulfill the packet itself. That is fine for what these tools are for: pushing packets
over peer links so that clearing balances move, thresholds are crossed and the settlement
engines settle (``ilp-host send``, the benchmarks, the end-to-end tests). Real payments use
STREAM (interledger/rfcs 0029), where only the receiver can derive the fulfillment.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from host.ilp import ErrorCode, Fulfill, Prepare, Reply, make_reject
from host.ilp import address as ilp_address
from host.ilp.oer import UINT64_MAX
from host.ilp.packet import HASH_LENGTH


class LocalReceiver:
    """Fulfills packets whose data starts with the 32-byte preimage of their condition.

    ``sha256(data[:32]) == execution_condition`` gives a Fulfill with that preimage; anything
    else is refused with F06 Unexpected Payment, triggered by this host's ``address``. This
    is a link and settlement exercise tool, not a payment protocol (see the module docstring).
    """

    def __init__(self, address: str) -> None:
        self.address = ilp_address.validate(address)

    async def handle(self, prepare: Prepare) -> Reply:
        """Fulfill or reject a Prepare addressed to this host."""
        preimage = prepare.data[:HASH_LENGTH]
        if (
            len(preimage) == HASH_LENGTH
            and hashlib.sha256(preimage).digest() == prepare.execution_condition
        ):
            return Fulfill(preimage)
        return make_reject(
            ErrorCode.F06_UNEXPECTED_PAYMENT,
            self.address,
            "this host only accepts exercise packets whose data starts with the preimage of "
            "their condition",
        )


def exercise_prepare(destination: str, amount: int, expires_at: datetime) -> Prepare:
    """A Prepare that a :class:`LocalReceiver` at ``destination`` fulfills (fresh preimage)."""
    preimage = os.urandom(HASH_LENGTH)
    return Prepare(amount, expires_at, hashlib.sha256(preimage).digest(), destination, preimage)


class PrepareHandler(Protocol):
    """What the packet source sends through: the connector's switch."""

    async def handle_prepare(self, from_peer: str | None, prepare: Prepare) -> Reply:
        """The reply to a Prepare from ``from_peer`` (None: this host)."""
        ...


@dataclass(frozen=True)
class SendProgress:
    """Counts so far: packets sent, fulfilled, and rejected by ILP error code."""

    sent: int
    fulfilled: int
    rejected: Mapping[str, int]


@dataclass(frozen=True)
class SendSummary:
    """The outcome of :meth:`PacketSource.send`."""

    sent: int
    fulfilled: int
    rejected: Mapping[str, int]
    amount_fulfilled: int
    elapsed: float
    #: Seconds from send to reply, per packet, in completion order.
    latencies: tuple[float, ...] = field(repr=False, default=())

    @property
    def rate(self) -> float:
        """Replies per second."""
        return self.sent / self.elapsed if self.elapsed > 0 else 0.0

    def latency(self, quantile: float) -> float:
        """A latency quantile in seconds, nearest rank (0.5: the median; 0.99: p99); 0 with no
        packets."""
        return nearest_rank(self.latencies, quantile)


def nearest_rank(samples: Sequence[float], quantile: float) -> float:
    """The ``quantile`` (0..1) of ``samples`` by the nearest-rank method; 0 when empty."""
    if not samples:
        return 0.0
    ordered = sorted(samples)
    rank = max(1, math.ceil(quantile * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


class PacketSource:
    """Sends exercise packets from this host (no source peer account) through the switch.

    ``lifetime`` is how long each Prepare is given; ``now`` is the clock.
    """

    def __init__(
        self,
        switch: PrepareHandler,
        *,
        lifetime: timedelta = timedelta(seconds=30),
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._switch = switch
        self._lifetime = lifetime
        self._now = now

    async def send(
        self,
        destination: str,
        amount: int,
        count: int,
        *,
        concurrency: int = 10,
        progress: Callable[[SendProgress], None] | None = None,
    ) -> SendSummary:
        """Send ``count`` packets of ``amount`` to ``destination``, ``concurrency`` at a time.

        ``progress`` is called after each reply. ValueError for a bad destination or number.
        """
        ilp_address.validate(destination, "destination")
        if isinstance(amount, bool) or not 0 <= amount <= UINT64_MAX:
            raise ValueError(f"amount must be 0..{UINT64_MAX}, got {amount}")
        if count < 0:
            raise ValueError(f"count must not be negative, got {count}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        sent = fulfilled = 0
        rejected: Counter[str] = Counter()
        latencies: list[float] = []
        remaining = count

        async def worker() -> None:
            nonlocal sent, fulfilled, remaining
            while remaining > 0:
                remaining -= 1
                prepare = exercise_prepare(destination, amount, self._now() + self._lifetime)
                started = time.perf_counter()
                reply = await self._switch.handle_prepare(None, prepare)
                latencies.append(time.perf_counter() - started)
                sent += 1
                if isinstance(reply, Fulfill):
                    fulfilled += 1
                else:
                    rejected[reply.code] += 1
                if progress is not None:
                    progress(SendProgress(sent, fulfilled, dict(rejected)))

        began = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for _ in range(min(concurrency, count)):
                group.create_task(worker())
        return SendSummary(
            sent=sent,
            fulfilled=fulfilled,
            rejected=dict(rejected),
            amount_fulfilled=fulfilled * amount,
            elapsed=time.perf_counter() - began,
            latencies=tuple(latencies),
        )
