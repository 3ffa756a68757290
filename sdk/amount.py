"""Amounts on the wire: base-10 integer strings with an explicit scale.

Validation at the boundary (so a bad number never reaches the engine or a ledger) and exact
scale conversion. Pure functions; errors are AmountError (a ValueError) whose message names the
field: an ``sdk.errors.InvalidRequest``, so it becomes an INVALID_ARGUMENT status.
"""

from __future__ import annotations

import re
from typing import Final, Protocol

from sdk import contract
from sdk.errors import InvalidRequest

#: 78 digits hold every 256-bit unsigned integer (the contract's rule).
MAX_DIGITS: Final = contract.MAX_AMOUNT_DIGITS
MAX_SCALE: Final = contract.MAX_SCALE
_UNSIGNED = re.compile(r"0|[1-9][0-9]*")
_SIGNED = re.compile(r"0|-?[1-9][0-9]*")


class AmountError(InvalidRequest):
    """A malformed amount; the message says which field and why."""


class AmountMessage(Protocol):
    """Both ilphost.types.v1.Amount and SignedAmount have this shape."""

    value: str
    scale: int


def _check_scale(scale: int, field: str) -> None:
    if not 0 <= scale <= MAX_SCALE:
        raise AmountError(f"{field}.scale must be 0..{MAX_SCALE}, got {scale}")


def parse_unsigned(value: str, scale: int, field: str = "amount") -> int:
    """The integer of a non-negative Amount, or AmountError."""
    _check_scale(scale, field)
    if not value:
        raise AmountError(f"{field}.value is empty")
    if value.startswith("-"):
        raise AmountError(f"{field}.value must not be negative, got {value[:20]!r}")
    if len(value) > MAX_DIGITS:
        raise AmountError(f"{field}.value has {len(value)} digits, at most {MAX_DIGITS} allowed")
    if not value.isascii() or not _UNSIGNED.fullmatch(value):
        raise AmountError(
            f"{field}.value must be a base-10 integer without sign or leading zeros, "
            f"got {value[:20]!r}"
        )
    return int(value)


def parse_signed(value: str, scale: int, field: str = "amount") -> int:
    """The integer of a SignedAmount, or AmountError."""
    _check_scale(scale, field)
    digits = value[1:] if value.startswith("-") else value
    if not digits:
        raise AmountError(f"{field}.value is empty")
    if len(digits) > MAX_DIGITS:
        raise AmountError(f"{field}.value has {len(digits)} digits, at most {MAX_DIGITS} allowed")
    if not value.isascii() or not _SIGNED.fullmatch(value):
        raise AmountError(
            f"{field}.value must be a base-10 integer without leading zeros, got {value[:20]!r}"
        )
    return int(value)


def unsigned_of(message: AmountMessage, field: str = "amount") -> int:
    """parse_unsigned applied to a message."""
    return parse_unsigned(message.value, message.scale, field)


def signed_of(message: AmountMessage, field: str = "amount") -> int:
    """parse_signed applied to a message."""
    return parse_signed(message.value, message.scale, field)


#: The least magnitude with more than MAX_DIGITS digits.
_BEYOND: Final[int] = 10**MAX_DIGITS


def fits(value: int) -> bool:
    """Whether an integer can be written as an amount (at most MAX_DIGITS digits)."""
    # A comparison, not len(str(...)): the engine asks several times per ILP packet.
    return -_BEYOND < value < _BEYOND


def rescale(value: int, from_scale: int, to_scale: int) -> tuple[int, int]:
    """Convert ``value`` between scales, rounding toward zero.

    Returns (converted, leftover) where leftover is what did not convert, still at
    ``from_scale``: converting back ``converted`` and adding ``leftover`` gives ``value``.
    """
    if to_scale >= from_scale:
        return value * 10 ** (to_scale - from_scale), 0
    factor = 10 ** (from_scale - to_scale)
    sign = -1 if value < 0 else 1
    converted = sign * (abs(value) // factor)
    return converted, value - converted * factor
