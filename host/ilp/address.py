"""ILP addresses (interledger/rfcs 0015).

An address is an allocation scheme followed by one or more segments, joined by periods:
``g.acme.bob``, ``peer.settle``, ``test.alice.~ipr.42``. Segments use ``A-Z a-z 0-9 _ ~ -``;
the whole address is at most 1023 characters. Addresses are case-sensitive.

:func:`is_valid` is the fast check for the packet path; :func:`validate` says what is wrong.
"""

from __future__ import annotations

import re
from typing import Final

MAX_LENGTH: Final = 1023

#: The allocation schemes of RFC 0015, in the RFC's order.
SCHEMES: Final = ("g", "private", "example", "peer", "self", "test", "test1", "test2", "test3",
                  "local")  # fmt: skip

#: The scheme whose packets are never forwarded: they are for the direct peer only.
PEER_SCHEME: Final = "peer"

_SEGMENT_CHARS: Final = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_~-"
)
# fullmatch, never `$`: `$` would also accept a trailing newline.
_GRAMMAR: Final = r"(?:g|private|example|peer|self|test[1-3]?|local)(?:\.[A-Za-z0-9_~-]+)+"
_ADDRESS: Final = re.compile(_GRAMMAR)
_ADDRESS_BYTES: Final = re.compile(_GRAMMAR.encode("ascii"))


class AddressError(ValueError):
    """A string that is not an ILP address; the message says why."""


def is_valid(address: str) -> bool:
    """Whether ``address`` is an ILP address."""
    return len(address) <= MAX_LENGTH and _ADDRESS.fullmatch(address) is not None


def is_valid_bytes(address: bytes | memoryview) -> bool:
    """:func:`is_valid` for the ASCII bytes of an address on the wire."""
    return len(address) <= MAX_LENGTH and _ADDRESS_BYTES.fullmatch(address) is not None


def validate(address: str, field: str = "address") -> str:
    """Return ``address`` if it is an ILP address; otherwise AddressError saying why."""
    if is_valid(address):
        return address
    raise AddressError(f"{field} {_shorten(address)} is not an ILP address: {why_invalid(address)}")


def why_invalid(address: str) -> str:
    """The first rule of RFC 0015 that ``address`` breaks (for an invalid address)."""
    if not address:
        return "it is empty"
    if len(address) > MAX_LENGTH:
        return f"it has {len(address)} characters, at most {MAX_LENGTH} are allowed"
    for index, char in enumerate(address):
        if char != "." and char not in _SEGMENT_CHARS:
            return f"character {char!a} at index {index} is not one of A-Z a-z 0-9 _ ~ - ."
    scheme, _, rest = address.partition(".")
    if scheme not in SCHEMES:
        return f"it starts with {scheme!r}, not an allocation scheme ({', '.join(SCHEMES)})"
    if not rest:
        return "it needs at least one segment after the allocation scheme"
    return "segments must not be empty (no leading, trailing or doubled periods)"


def scheme_of(address: str) -> str:
    """The allocation scheme (first segment) of a valid address."""
    return address.partition(".")[0]


def is_peer_address(address: str) -> bool:
    """Whether the address is in the ``peer.`` scheme: such packets are never forwarded."""
    return address.startswith("peer.")


def _shorten(text: str, limit: int = 60) -> str:
    return ascii(text) if len(text) <= limit else ascii(text[:limit]) + f"... ({len(text)} chars)"
