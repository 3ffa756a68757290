"""sdk.backoff.Backoff: the parameters of backoff_delay, checked when made."""

from __future__ import annotations

import pytest

from sdk.backoff import Backoff, backoff_delay


def test_a_backoff_gives_the_delays_of_backoff_delay() -> None:
    shape = Backoff(initial=0.2, multiplier=2.0, cap=5.0, jitter=0.5)
    for attempt in range(1, 12):
        for draw in (0.0, 0.25, 0.5, 0.999):
            fixed = draw.__float__
            expected = backoff_delay(
                attempt, initial=0.2, multiplier=2.0, cap=5.0, jitter=0.5, random=fixed
            )
            assert shape.delay(attempt, fixed) == expected
    assert [Backoff(cap=1.0).delay(n, lambda: 0.5) for n in (1, 2, 3, 4, 5)] == [
        0.2,
        0.4,
        0.8,
        1.0,
        1.0,
    ]


@pytest.mark.parametrize(
    "bad",
    [
        {"initial": 0.0},
        {"multiplier": 0.5},
        {"initial": 2.0, "cap": 1.0},
        {"jitter": 1.0},
        {"jitter": -0.1},
    ],
)
def test_bad_parameters_fail_when_made_not_at_the_first_retry(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="bad backoff parameters"):
        Backoff(**bad)


def test_attempts_start_at_one() -> None:
    with pytest.raises(ValueError, match="attempt"):
        Backoff().delay(0)
