"""The fault knobs and their seeded dice (pure logic)."""

from __future__ import annotations

import pytest

from host.pb.ilphost.simledger.v1 import simledger_pb2
from host.simledger.faults import FaultDice, FaultError, Faults, Outcome


def test_knobs_round_trip_through_the_wire_form() -> None:
    faults = Faults(latency_ms=5, error_per_mille=10, fail_after_commit_per_mille=20, offline=True)
    assert Faults.from_proto(faults.to_proto()) == faults


@pytest.mark.parametrize(
    "knobs",
    [
        {"error_per_mille": 1001},
        {"fail_after_commit_per_mille": 5000},
        {"latency_ms": 600_001},
    ],
)
def test_out_of_range_knobs_are_refused_with_their_name(knobs: dict[str, int]) -> None:
    with pytest.raises(FaultError, match=next(iter(knobs))):
        Faults.from_proto(simledger_pb2.Faults(**knobs))


def test_no_faults_always_proceed_and_all_faults_always_fire() -> None:
    dice = FaultDice(seed=1)
    assert {dice.roll(Faults()) for _ in range(200)} == {Outcome.PROCEED}
    assert {dice.roll(Faults(error_per_mille=1000)) for _ in range(200)} == {Outcome.REFUSE}
    lose = Faults(fail_after_commit_per_mille=1000)
    assert {dice.roll(lose) for _ in range(200)} == {Outcome.LOSE_REPLY}
    # Refusing wins: a refused call never commits, so its reply cannot be lost.
    both = Faults(error_per_mille=1000, fail_after_commit_per_mille=1000)
    assert dice.roll(both) is Outcome.REFUSE


def test_same_seed_same_rolls_and_knob_changes_do_not_shift_later_rolls() -> None:
    half = Faults(error_per_mille=500, fail_after_commit_per_mille=500)
    a, b = FaultDice(seed=42), FaultDice(seed=42)
    rolls_a = [a.roll(half) for _ in range(100)]
    rolls_b = [b.roll(half) for _ in range(100)]
    assert rolls_a == rolls_b
    assert set(rolls_a) == {Outcome.PROCEED, Outcome.REFUSE, Outcome.LOSE_REPLY}
    # Interleaving calls under other knobs consumes the same draws.
    c, d = FaultDice(seed=42), FaultDice(seed=42)
    c.roll(Faults())
    d.roll(Faults(error_per_mille=1000))
    assert [c.roll(half) for _ in range(50)] == [d.roll(half) for _ in range(50)]
