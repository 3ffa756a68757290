"""Restart delays: exponential growth, the cap, and the jitter bounds."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdk.backoff import backoff_delay

PARAMS = {"initial": 0.5, "multiplier": 2.0, "cap": 30.0, "jitter": 0.2}


def test_grows_exponentially_without_jitter() -> None:
    delays = [backoff_delay(n, **{**PARAMS, "jitter": 0.0}) for n in range(1, 8)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0]


def test_midpoint_random_means_no_jitter() -> None:
    assert backoff_delay(3, **PARAMS, random=lambda: 0.5) == pytest.approx(2.0)


def test_jitter_extremes() -> None:
    assert backoff_delay(3, **PARAMS, random=lambda: 0.0) == pytest.approx(2.0 * 0.8)
    assert backoff_delay(3, **PARAMS, random=lambda: 0.999999) == pytest.approx(2.4, rel=1e-5)


def test_cap_holds_even_with_upward_jitter() -> None:
    assert backoff_delay(50, **PARAMS, random=lambda: 0.999999) == 30.0
    assert backoff_delay(50, **PARAMS, random=lambda: 0.0) == pytest.approx(24.0)


def test_huge_attempt_numbers_do_not_overflow() -> None:
    assert backoff_delay(10**6, **{**PARAMS, "jitter": 0.0}) == 30.0


def test_multiplier_one_is_constant() -> None:
    for attempt in (1, 5, 100):
        assert backoff_delay(attempt, **{**PARAMS, "multiplier": 1.0, "jitter": 0.0}) == 0.5


@given(
    attempt=st.integers(min_value=1, max_value=10_000),
    initial=st.floats(min_value=0.001, max_value=10.0),
    multiplier=st.floats(min_value=1.0, max_value=10.0),
    extra=st.floats(min_value=0.0, max_value=1000.0),
    jitter=st.floats(min_value=0.0, max_value=0.99),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_always_within_bounds(
    attempt: int, initial: float, multiplier: float, extra: float, jitter: float, seed: int
) -> None:
    cap = initial + extra
    delay = backoff_delay(
        attempt,
        initial=initial,
        multiplier=multiplier,
        cap=cap,
        jitter=jitter,
        random=random.Random(seed).random,
    )
    grows_past_cap = math.log(initial) + (attempt - 1) * math.log(multiplier) >= math.log(cap)
    base = cap if grows_past_cap else initial * multiplier ** (attempt - 1)
    assert 0 < delay <= cap
    assert delay >= base * (1 - jitter) * (1 - 1e-9)
    assert delay <= base * (1 + jitter) * (1 + 1e-9)


@pytest.mark.parametrize(
    "bad",
    [
        {"initial": 0.0},
        {"initial": -1.0},
        {"multiplier": 0.5},
        {"cap": 0.1},
        {"jitter": 1.0},
        {"jitter": -0.1},
    ],
)
def test_bad_parameters_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="bad backoff parameters"):
        backoff_delay(1, **{**PARAMS, **bad})


def test_attempt_zero_is_refused() -> None:
    with pytest.raises(ValueError, match="attempt"):
        backoff_delay(0, **PARAMS)
