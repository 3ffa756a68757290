"""The simulated ledger's fault knobs and the seeded dice that apply them.

Pure logic: the service asks ``FaultDice.roll()`` once per Transfer or Mint and acts on the
answer. Randomness comes from one ``random.Random`` seeded at start, so a test that replays the
same calls against a ledger started with the same seed sees the same faults.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

from host.pb.ilphost.simledger.v1 import simledger_pb2

PER_MILLE = 1000
#: Latency beyond ten minutes is a typo, not a test.
MAX_LATENCY_MS = 600_000


class FaultError(ValueError):
    """A knob out of range; the message names it."""


@dataclass(frozen=True)
class Faults:
    """The knobs, as in ilphost.simledger.v1.Faults."""

    latency_ms: int = 0
    error_per_mille: int = 0
    fail_after_commit_per_mille: int = 0
    offline: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.latency_ms <= MAX_LATENCY_MS:
            raise FaultError(f"latency_ms must be 0..{MAX_LATENCY_MS}, got {self.latency_ms}")
        for name in ("error_per_mille", "fail_after_commit_per_mille"):
            value = getattr(self, name)
            if not 0 <= value <= PER_MILLE:
                raise FaultError(f"{name} must be 0..{PER_MILLE}, got {value}")

    @classmethod
    def from_proto(cls, message: simledger_pb2.Faults) -> Faults:
        """The knobs of a SetFaults request; FaultError if one is out of range."""
        return cls(
            latency_ms=message.latency_ms,
            error_per_mille=message.error_per_mille,
            fail_after_commit_per_mille=message.fail_after_commit_per_mille,
            offline=message.offline,
        )

    def to_proto(self) -> simledger_pb2.Faults:
        """The wire form."""
        return simledger_pb2.Faults(
            latency_ms=self.latency_ms,
            error_per_mille=self.error_per_mille,
            fail_after_commit_per_mille=self.fail_after_commit_per_mille,
            offline=self.offline,
        )


class Outcome(enum.Enum):
    """What a fault roll decides for one Transfer or Mint."""

    PROCEED = "proceed"
    #: Answer UNAVAILABLE without committing.
    REFUSE = "refuse"
    #: Commit, then answer UNAVAILABLE: the reply is "lost".
    LOSE_REPLY = "lose reply"


class FaultDice:
    """Seeded dice for the per-mille knobs."""

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)

    def roll(self, faults: Faults) -> Outcome:
        """The outcome of one call under ``faults``.

        Always draws twice, whatever the knobs, so that the sequence of draws depends only on
        the seed and the number of calls: changing a knob mid-test does not shift later rolls.
        """
        refuse = self._rng.randrange(PER_MILLE) < faults.error_per_mille
        lose = self._rng.randrange(PER_MILLE) < faults.fail_after_commit_per_mille
        if refuse:
            return Outcome.REFUSE
        if lose:
            return Outcome.LOSE_REPLY
        return Outcome.PROCEED
