"""The ILP Prepare's expiry: 17 ASCII digits ``YYYYMMDDHHmmSSfff`` in UTC (rfcs 0030).

In memory an expiry is a timezone-aware :class:`datetime` in UTC with whole milliseconds.
:func:`to_expiry` brings any aware datetime there by rounding *down* to the millisecond: the
RFC only says "rounded", and an expiry must never move later than the caller asked for.

Decoding refuses anything that is not a real UTC instant: a 60th second (RFC 0030 requires
leap seconds to be smeared), hour 24 (midnight is 000000 of the next day), day 31 of a
30-day month, year 0000.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

LENGTH: Final = 17


class TimestampError(ValueError):
    """Bytes or a datetime that are not an ILP expiry; the message says why."""


def to_expiry(moment: datetime) -> datetime:
    """``moment`` in UTC, truncated to whole milliseconds; naive datetimes are refused."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise TimestampError(f"an expiry must be timezone-aware (UTC), got naive {moment}")
    if moment.tzinfo is not UTC:
        try:
            moment = moment.astimezone(UTC)
        except OverflowError:
            raise TimestampError(f"{moment} is outside the years 0001..9999 in UTC") from None
    micros = moment.microsecond
    if micros % 1000:
        moment = moment.replace(microsecond=micros - micros % 1000)
    return moment


def is_expiry(moment: datetime) -> bool:
    """Whether ``moment`` is already in the canonical form :func:`to_expiry` produces."""
    return moment.tzinfo is UTC and moment.microsecond % 1000 == 0


def encode(moment: datetime) -> bytes:
    """The 17 ASCII digits of a canonical expiry (see :func:`to_expiry`)."""
    return (
        f"{moment.year:04d}{moment.month:02d}{moment.day:02d}{moment.hour:02d}"
        f"{moment.minute:02d}{moment.second:02d}{moment.microsecond // 1000:03d}"
    ).encode("ascii")


def decode(digits: bytes | memoryview) -> datetime:
    """The UTC instant of 17 ASCII digits; TimestampError if they are not a valid time."""
    raw = bytes(digits)
    if len(raw) != LENGTH:
        raise TimestampError(f"needs {LENGTH} digits, got {len(raw)} bytes")
    # bytes.isdigit is ASCII-only, unlike str.isdigit.
    if not raw.isdigit():
        raise TimestampError(f"{_show(raw)} is not {LENGTH} ASCII digits YYYYMMDDHHmmSSfff")
    try:
        return datetime(
            int(raw[0:4]),
            int(raw[4:6]),
            int(raw[6:8]),
            int(raw[8:10]),
            int(raw[10:12]),
            int(raw[12:14]),
            int(raw[14:17]) * 1000,
            tzinfo=UTC,
        )
    except ValueError as exc:
        raise TimestampError(f"{_show(raw)} is not a valid UTC time ({exc})") from None


def _show(raw: bytes) -> str:
    return repr(raw.decode("ascii", "backslashreplace"))
