"""The Prepare expiry format YYYYMMDDHHmmSSfff (UTC)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from host.ilp import timestamp


@given(
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999999))
)
def test_round_trip(moment: datetime) -> None:
    expiry = timestamp.to_expiry(moment.replace(tzinfo=UTC))
    digits = timestamp.encode(expiry)
    assert len(digits) == timestamp.LENGTH and digits.isdigit()
    assert timestamp.decode(digits) == expiry
    assert expiry <= moment.replace(tzinfo=UTC) < expiry + timedelta(milliseconds=1)


@pytest.mark.parametrize(
    ("digits", "words"),
    [
        (b"00000101000000000", "year"),
        (b"20240230000000000", "day"),
        (b"20230229000000000", "day"),
        (b"20231301000000000", "month"),
        (b"20231200000000000", "day"),
        (b"20231231240000000", "hour"),
        (b"20231231236000000", "minute"),
        (b"20231231235960000", "second"),
        (b"2023123123595900", "needs 17 digits"),
        (b"+2023123123595900", "ASCII digits"),
        (b"2023123123595900 ", "ASCII digits"),
        (b"2023-12-31T235959", "ASCII digits"),
    ],
)
def test_invalid(digits: bytes, words: str) -> None:
    with pytest.raises(timestamp.TimestampError, match=words):
        timestamp.decode(digits)


def test_leap_day_and_small_years() -> None:
    assert timestamp.decode(b"20240229235959999") == datetime(
        2024, 2, 29, 23, 59, 59, 999000, tzinfo=UTC
    )
    early = datetime(7, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert timestamp.encode(early) == b"00070102030405000"  # %Y would not pad the year


def test_to_expiry() -> None:
    with pytest.raises(timestamp.TimestampError, match="timezone-aware"):
        timestamp.to_expiry(datetime(2030, 1, 1))
    west = timezone(timedelta(hours=-8))
    converted = timestamp.to_expiry(datetime(2029, 12, 31, 16, 0, 0, 1999, tzinfo=west))
    assert converted == datetime(2030, 1, 1, 0, 0, 0, 1000, tzinfo=UTC)
    assert converted.tzinfo is UTC and timestamp.is_expiry(converted)
    assert not timestamp.is_expiry(datetime(2030, 1, 1, tzinfo=west))
