"""Retry delays: exponential backoff with a cap and jitter. Pure; the random source is injected.

One definition for the host (adaptor restarts) and the adaptors built on the SDK (reconnects,
retried exchanges).

Jitter spreads the restarts of several adaptors (or several hosts) that failed together, so
that they do not hammer a shared ledger in lockstep.
"""

from __future__ import annotations

import math
import random as _random
from collections.abc import Callable
from dataclasses import dataclass


def backoff_delay(
    attempt: int,
    *,
    initial: float,
    multiplier: float,
    cap: float,
    jitter: float,
    random: Callable[[], float] = _random.random,
) -> float:
    """The delay before restart number ``attempt`` (1 for the first restart).

    The base delay is ``initial * multiplier ** (attempt - 1)``, at most ``cap``; jitter scales
    it by a factor drawn uniformly from ``[1 - jitter, 1 + jitter]`` (``random()`` in [0, 1)),
    and the result never exceeds ``cap``.
    """
    if attempt < 1:
        raise ValueError(f"attempt must be at least 1, got {attempt}")
    _check(initial, multiplier, cap, jitter)
    try:
        base = min(cap, initial * multiplier ** (attempt - 1))
    except OverflowError:  # a long outage: the exponent no longer fits a float
        base = cap
    if math.isnan(base):
        base = cap
    factor = 1.0 + jitter * (2.0 * random() - 1.0)
    return min(cap, base * factor)


def _check(initial: float, multiplier: float, cap: float, jitter: float) -> None:
    if not (initial > 0 and multiplier >= 1 and cap >= initial and 0 <= jitter < 1):
        raise ValueError(
            f"bad backoff parameters: initial={initial} multiplier={multiplier} cap={cap} "
            f"jitter={jitter} (need initial > 0, multiplier >= 1, cap >= initial, 0 <= jitter < 1)"
        )


@dataclass(frozen=True, slots=True)
class Backoff:
    """The parameters of :func:`backoff_delay` kept together, for a loop that retries.

    Checked when made, so that a bad value fails at start-up rather than at the first retry.
    ``attempt`` counts the failures in a row (1 after the first); a loop resets it on progress.
    """

    initial: float = 0.2
    multiplier: float = 2.0
    cap: float = 60.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        _check(self.initial, self.multiplier, self.cap, self.jitter)

    def delay(self, attempt: int, random: Callable[[], float] = _random.random) -> float:
        """The wait after failure number ``attempt`` (see :func:`backoff_delay`)."""
        return backoff_delay(
            attempt,
            initial=self.initial,
            multiplier=self.multiplier,
            cap=self.cap,
            jitter=self.jitter,
            random=random,
        )
