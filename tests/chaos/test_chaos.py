"""The bounded chaos run for CI: a few faults per proposal (tests.chaos.chaos).

The seed comes from ``ILP_CHAOS_SEED`` or is drawn at random; every failure message starts
with it (``python -m tests.chaos --seed N --cycles 10 --engines internal`` replays the schedule).

Until the in-flight journal and the outcome query (``host.ilp.outcome``) are part of the host,
a kill between the next hop's commit and our own leaves the clearing books a few packets
apart (the window the journal closes): the test then reports the exact difference as an
expected failure. Settlements must be exact either way.
"""

from __future__ import annotations

import importlib.util
import os
import random

import pytest

from tests.chaos.chaos import chaos_run, schedule, targets

pytestmark = pytest.mark.slow

CYCLES = 10
#: Whether a host resolves its packets in flight after a crash (the in-flight journal).
JOURNAL = importlib.util.find_spec("host.ilp.outcome") is not None


def test_schedule_is_a_function_of_the_seed() -> None:
    engines = ("external", "internal")
    assert schedule(7, 30, engines) == schedule(7, 30, engines)
    assert schedule(7, 30, engines) != schedule(8, 30, engines)
    hit = {fault.target for fault in schedule(7, 300, engines)}
    assert (
        hit
        == set(targets(engines))
        == {
            "ledger",
            "alice:connector",
            "alice:engine",
            "alice:adaptor",
            "bob:run",
            "bob:adaptor",
        }
    )


@pytest.mark.timeout(240)
@pytest.mark.parametrize("engine", ["internal", "external"])
def test_chaos(engine: str) -> None:
    seed = int(os.environ.get("ILP_CHAOS_SEED") or random.randrange(2**32))
    report = chaos_run(seed, CYCLES, (engine, engine))
    text = report.text()
    assert not report.verdict.problems, text
    if not report.verdict.books_agree and not JOURNAL:
        pytest.xfail(f"clearing books apart without the in-flight journal:\n{text}")
    assert report.verdict.books_agree, text
