"""The slice of canonical OER that Interledger uses (interledger/rfcs 0030).

Only what ILP needs: fixed-size unsigned integers, length determinants, variable-length octet
strings and variable-length unsigned integers. Decoding is strict: canonical OER has exactly one
encoding per value, so a long-form length that fits the short form, a length with leading zero
bytes, or a variable-length integer with a leading zero byte is refused. That makes every
accepted input re-encode to itself, which the tests check on random bytes.

Decoding goes through :class:`Reader`, a cursor over a memoryview (no copies until a field is
taken out); every failure is an :class:`IlpPacketError` naming the field and the byte offset.
"""

from __future__ import annotations

from typing import Final

#: Lengths 0..127 are written in one byte (the short form).
SHORT_FORM_MAX: Final = 0x7F
#: Longest length-of-length we accept: RFC 0030 lets implementations stop at eight bytes.
MAX_LENGTH_OF_LENGTH: Final = 8
UINT64_MAX: Final = 2**64 - 1


class IlpPacketError(ValueError):
    """Bytes or values that do not form a valid ILP packet.

    ``field`` names what is wrong (e.g. ``"Prepare.destination"``); ``offset`` is the byte
    offset in the input where the problem was found, or None for a value built in memory.
    """

    def __init__(self, field: str, reason: str, offset: int | None = None) -> None:
        where = field if offset is None else f"{field} at offset {offset}"
        super().__init__(f"{where}: {reason}")
        self.field = field
        self.reason = reason
        self.offset = offset


class Reader:
    """A cursor over encoded bytes; each ``read_*`` advances it or raises IlpPacketError."""

    __slots__ = ("_buf", "pos")

    def __init__(self, data: bytes | bytearray | memoryview, pos: int = 0) -> None:
        self._buf = memoryview(data).cast("B")
        self.pos = pos

    @property
    def remaining(self) -> int:
        """How many bytes are left after the cursor."""
        return len(self._buf) - self.pos

    def read(self, size: int, field: str) -> memoryview:
        """The next ``size`` bytes, as a view into the input."""
        start = self.pos
        end = start + size
        if end > len(self._buf):
            raise IlpPacketError(
                field, f"needs {size} bytes, only {len(self._buf) - start} left", start
            )
        self.pos = end
        return self._buf[start:end]

    def read_uint8(self, field: str) -> int:
        """One unsigned byte."""
        if self.pos >= len(self._buf):
            raise IlpPacketError(field, "needs 1 byte, none left", self.pos)
        value = self._buf[self.pos]
        self.pos += 1
        return value

    def read_uint(self, size: int, field: str) -> int:
        """A fixed-size big-endian unsigned integer of ``size`` bytes."""
        return int.from_bytes(self.read(size, field), "big")

    def read_length(self, field: str) -> int:
        """A length determinant: short form, or canonical long form."""
        start = self.pos
        first = self.read_uint8(field)
        if first <= SHORT_FORM_MAX:
            return first
        size = first & 0x7F
        if size == 0:
            raise IlpPacketError(
                field, "length prefix 0x80 (indefinite length) is not allowed in OER", start
            )
        if size > MAX_LENGTH_OF_LENGTH:
            raise IlpPacketError(
                field,
                f"length-of-length {size} exceeds the supported {MAX_LENGTH_OF_LENGTH} bytes",
                start,
            )
        digits = self.read(size, field)
        if digits[0] == 0:
            raise IlpPacketError(field, "long-form length has a leading zero byte", start)
        length = int.from_bytes(digits, "big")
        if length <= SHORT_FORM_MAX:
            raise IlpPacketError(
                field,
                f"length {length} uses the long form; canonical OER requires the short form "
                f"for lengths up to {SHORT_FORM_MAX}",
                start,
            )
        return length

    def read_var_octets(self, field: str, max_length: int | None = None) -> memoryview:
        """A variable-length octet string, optionally bounded by ``max_length`` bytes."""
        start = self.pos
        length = self.read_length(field)
        if max_length is not None and length > max_length:
            raise IlpPacketError(field, f"length {length} exceeds the maximum {max_length}", start)
        if length > self.remaining:
            raise IlpPacketError(
                field, f"declares {length} bytes, only {self.remaining} left", start
            )
        return self.read(length, field)

    def enter_var_octets(self, field: str) -> Reader:
        """A Reader over the content of the next variable-length octet string.

        The nested reader keeps offsets counted from the start of the whole input (so errors
        inside it point at the right byte) and ends where the octet string ends.
        """
        prefix_at = self.pos
        length = self.read_length(field)
        if length > self.remaining:
            raise IlpPacketError(
                field, f"declares {length} bytes, only {self.remaining} left", prefix_at
            )
        start = self.pos
        self.pos = start + length
        return Reader(self._buf[: self.pos], start)

    def read_var_uint(self, field: str, max_bytes: int = 8) -> int:
        """A variable-length unsigned integer of at most ``max_bytes`` bytes, no leading zeros."""
        start = self.pos
        digits = self.read_var_octets(field)
        if not digits:
            raise IlpPacketError(field, "variable-length integer has no bytes", start)
        if len(digits) > max_bytes:
            raise IlpPacketError(
                field, f"variable-length integer of {len(digits)} bytes exceeds {max_bytes}", start
            )
        if len(digits) > 1 and digits[0] == 0:
            raise IlpPacketError(field, "variable-length integer has a leading zero byte", start)
        return int.from_bytes(digits, "big")

    def expect_end(self, field: str) -> None:
        """Refuse bytes left after the last field."""
        if self.pos != len(self._buf):
            raise IlpPacketError(field, f"{self.remaining} byte(s) after the last field", self.pos)


def length_prefix(length: int) -> bytes:
    """The canonical length determinant for ``length``."""
    if length <= SHORT_FORM_MAX:
        if length < 0:
            raise ValueError(f"a length cannot be negative, got {length}")
        return bytes((length,))
    size = (length.bit_length() + 7) // 8
    if size > MAX_LENGTH_OF_LENGTH:
        raise ValueError(f"length {length} does not fit {MAX_LENGTH_OF_LENGTH} bytes")
    return bytes((0x80 | size,)) + length.to_bytes(size, "big")


def prefixed_size(length: int) -> int:
    """Bytes taken by a variable-length octet string with ``length`` bytes of content."""
    if length <= SHORT_FORM_MAX:
        return 1 + length
    return 1 + (length.bit_length() + 7) // 8 + length


def var_octets(content: bytes) -> bytes:
    """A variable-length octet string: length determinant, then the content."""
    return length_prefix(len(content)) + content


def var_uint(value: int) -> bytes:
    """A variable-length unsigned integer (minimal big-endian bytes; zero is one 0x00 byte)."""
    if value < 0:
        raise ValueError(f"an unsigned integer cannot be negative, got {value}")
    size = max(1, (value.bit_length() + 7) // 8)
    return length_prefix(size) + value.to_bytes(size, "big")
