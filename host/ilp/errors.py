"""ILP error codes (interledger/rfcs 0027, "Error Codes").

A code is a letter for its family and two digits: ``F`` final (do not retry unchanged), ``T``
temporary (retry later), ``R`` relative (retry with more margin of amount or time). RFC 0027
names some codes; the rest of each family's range (e.g. ``F42``) is well formed but unnamed.
:class:`ErrorCode` holds the named ones; a Reject's ``code`` is a plain ``str`` so that an
unnamed code from a peer still parses, and compares equal to the enum member when named.
"""

from __future__ import annotations

import enum
import re
from typing import Final


class ErrorFamily(enum.Enum):
    """What the sender should do about a Reject, from the first letter of its code."""

    FINAL = "F"
    TEMPORARY = "T"
    RELATIVE = "R"


class ErrorCode(enum.StrEnum):
    """The error codes RFC 0027 names."""

    F00_BAD_REQUEST = "F00"
    F01_INVALID_PACKET = "F01"
    F02_UNREACHABLE = "F02"
    F03_INVALID_AMOUNT = "F03"
    F04_INSUFFICIENT_DESTINATION_AMOUNT = "F04"
    F05_WRONG_CONDITION = "F05"
    F06_UNEXPECTED_PAYMENT = "F06"
    F07_CANNOT_RECEIVE = "F07"
    F08_AMOUNT_TOO_LARGE = "F08"
    F99_APPLICATION_ERROR = "F99"

    T00_INTERNAL_ERROR = "T00"
    T01_PEER_UNREACHABLE = "T01"
    T02_PEER_BUSY = "T02"
    T03_CONNECTOR_BUSY = "T03"
    T04_INSUFFICIENT_LIQUIDITY = "T04"
    T05_RATE_LIMITED = "T05"
    T99_APPLICATION_ERROR = "T99"

    R00_TRANSFER_TIMED_OUT = "R00"
    R01_INSUFFICIENT_SOURCE_AMOUNT = "R01"
    R02_INSUFFICIENT_TIMEOUT = "R02"
    R99_APPLICATION_ERROR = "R99"

    @property
    def rfc_name(self) -> str:
        """The RFC's name for the code, e.g. "Insufficient Liquidity"."""
        return self.name[4:].replace("_", " ").title()

    @property
    def family(self) -> ErrorFamily:
        """Final, temporary or relative."""
        return ErrorFamily(self.value[0])


_CODE: Final = re.compile(r"[FTR][0-9][0-9]")
_CODE_BYTES: Final = re.compile(rb"[FTR][0-9][0-9]")


def is_well_formed(code: str) -> bool:
    """Whether ``code`` is a letter F, T or R followed by two digits."""
    return _CODE.fullmatch(code) is not None


def is_well_formed_bytes(code: bytes | memoryview) -> bool:
    """:func:`is_well_formed` for the three bytes of a code on the wire."""
    return _CODE_BYTES.fullmatch(code) is not None


def family_of(code: str) -> ErrorFamily:
    """The family of a well-formed code; ValueError otherwise."""
    if not is_well_formed(code):
        raise ValueError(f"an ILP error code is F, T or R and two digits, got {code!r}")
    return ErrorFamily(code[0])


def title_of(code: str) -> str:
    """A readable name: the RFC's for a named code, else e.g. "Unnamed temporary error T42"."""
    try:
        return ErrorCode(code).rfc_name
    except ValueError:
        return f"Unnamed {family_of(code).name.lower()} error {code}"
