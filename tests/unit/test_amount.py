"""Amount validation at the boundary and exact scale conversion."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdk.amount import (
    MAX_DIGITS,
    AmountError,
    fits,
    parse_signed,
    parse_unsigned,
    rescale,
)


@pytest.mark.parametrize("value", ["0", "1", "100", "9" * MAX_DIGITS, str(2**256 - 1)])
def test_valid_unsigned(value: str) -> None:
    assert parse_unsigned(value, 2) == int(value)


@pytest.mark.parametrize(
    ("value", "scale", "words"),
    [
        ("", 2, "empty"),
        ("-1", 2, "negative"),
        ("1.5", 2, "base-10 integer"),
        ("01", 2, "leading zeros"),
        ("1e3", 2, "base-10 integer"),
        (" 1", 2, "base-10 integer"),
        ("١٢", 2, "base-10 integer"),  # non-ASCII digits
        ("9" * (MAX_DIGITS + 1), 2, "digits"),
        ("1", 256, "scale"),
        ("1", -1, "scale"),
    ],
)
def test_invalid_unsigned(value: str, scale: int, words: str) -> None:
    with pytest.raises(AmountError, match=words):
        parse_unsigned(value, scale, "amount")


@pytest.mark.parametrize("value", ["0", "-1", "5", "-" + "9" * MAX_DIGITS])
def test_valid_signed(value: str) -> None:
    assert parse_signed(value, 0) == int(value)


@pytest.mark.parametrize("value", ["-0", "--1", "-", "+1", "-01", "1-"])
def test_invalid_signed(value: str) -> None:
    with pytest.raises(AmountError):
        parse_signed(value, 0, "delta")


def test_error_names_the_field() -> None:
    with pytest.raises(AmountError, match=r"^settle\.amount\.value"):
        parse_unsigned("x", 0, "settle.amount")


def test_fits() -> None:
    assert fits(10**MAX_DIGITS - 1)
    assert not fits(10**MAX_DIGITS)
    assert fits(-(10**MAX_DIGITS - 1))


@given(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.integers(min_value=0, max_value=18),
    st.integers(min_value=0, max_value=18),
)
def test_rescale_loses_nothing(value: int, from_scale: int, to_scale: int) -> None:
    converted, leftover = rescale(value, from_scale, to_scale)
    back, rest = rescale(converted, to_scale, from_scale)
    assert rest == 0
    assert back + leftover == value
    # Rounds toward zero: the leftover has the sign of the value and is less than one unit.
    if to_scale < from_scale:
        assert abs(leftover) < 10 ** (from_scale - to_scale)
        assert leftover == 0 or (leftover > 0) == (value > 0)
    else:
        assert leftover == 0
