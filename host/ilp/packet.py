"""ILPv4 packets: Prepare, Fulfill and Reject, and their OER encoding (interledger/rfcs 0027).

On the wire every packet is an envelope: one type byte (12, 13, 14), then the packet's fields
as one variable-length octet string. The dataclasses validate their fields when built, so a
packet in memory always serializes; :func:`parse` accepts only the canonical encoding, so for
every ``b`` it accepts, ``serialize(parse(b)) == b``. That excludes bytes after the envelope
and after the last field: RFC 0030 would let a reader ignore them, but a connector that
re-encodes a forwarded packet would then silently drop them, so they are refused instead.

Parsing raises nothing but :class:`IlpPacketError` (a ValueError) for any input; its message
names the field and the byte offset.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Final, TypeAlias

from host.ilp import address, errors, timestamp
from host.ilp.oer import (
    SHORT_FORM_MAX,
    UINT64_MAX,
    IlpPacketError,
    Reader,
    length_prefix,
    prefixed_size,
)

#: Bytes of an execution condition and of a fulfillment.
HASH_LENGTH: Final = 32
#: Largest ``data`` of any packet (bytes).
MAX_DATA_LENGTH: Final = 32767
#: Largest Reject ``message``, in characters: the ASN.1 type is UTF8String (SIZE (0..8191)).
MAX_MESSAGE_LENGTH: Final = 8191
CODE_LENGTH: Final = 3


class PacketType(enum.IntEnum):
    """The envelope's type byte."""

    PREPARE = 12
    FULFILL = 13
    REJECT = 14


_PREPARE_TYPE: Final = bytes((PacketType.PREPARE,))
_FULFILL_TYPE: Final = bytes((PacketType.FULFILL,))
_REJECT_TYPE: Final = bytes((PacketType.REJECT,))
#: A Fulfill without data: type, content length (fulfillment and the empty data's prefix).
_EMPTY_FULFILL_HEAD: Final = bytes((PacketType.FULFILL, HASH_LENGTH + 1))
#: A Prepare's fixed-size fields: amount, expiry, execution condition.
_PREPARE_FIXED: Final = 8 + timestamp.LENGTH + HASH_LENGTH


def _check_bytes(value: object, field: str, max_length: int) -> None:
    if not isinstance(value, bytes):
        raise IlpPacketError(field, f"must be bytes, got {type(value).__name__}")
    if len(value) > max_length:
        raise IlpPacketError(field, f"has {len(value)} bytes, at most {max_length} allowed")


def _check_hash(value: object, field: str) -> None:
    if not isinstance(value, bytes) or len(value) != HASH_LENGTH:
        got = f"{len(value)} bytes" if isinstance(value, bytes) else type(value).__name__
        raise IlpPacketError(field, f"must be exactly {HASH_LENGTH} bytes, got {got}")


@dataclass(frozen=True, slots=True)
class Prepare:
    """A conditional transfer offer: ``amount`` to ``destination`` unless it expires first.

    ``expires_at`` is kept in UTC with whole milliseconds (see :mod:`host.ilp.timestamp`);
    a finer or non-UTC datetime given here is converted, rounding down.
    """

    amount: int
    expires_at: datetime
    execution_condition: bytes
    destination: str
    data: bytes = b""

    def __post_init__(self) -> None:
        amount: object = self.amount
        if not isinstance(amount, int) or isinstance(amount, bool):
            raise IlpPacketError("Prepare.amount", f"must be an int, got {type(amount).__name__}")
        if not 0 <= amount <= UINT64_MAX:
            raise IlpPacketError(
                "Prepare.amount", f"must be 0..{UINT64_MAX} (uint64), got {amount}"
            )
        if not timestamp.is_expiry(self.expires_at):
            try:
                object.__setattr__(self, "expires_at", timestamp.to_expiry(self.expires_at))
            except timestamp.TimestampError as exc:
                raise IlpPacketError("Prepare.expires_at", str(exc)) from None
        _check_hash(self.execution_condition, "Prepare.execution_condition")
        if not isinstance(self.destination, str) or not address.is_valid(self.destination):
            raise IlpPacketError("Prepare.destination", _address_problem(self.destination))
        _check_bytes(self.data, "Prepare.data", MAX_DATA_LENGTH)


@dataclass(frozen=True, slots=True)
class Fulfill:
    """The answer that executes a Prepare: the preimage of its execution condition."""

    fulfillment: bytes
    data: bytes = b""

    def __post_init__(self) -> None:
        _check_hash(self.fulfillment, "Fulfill.fulfillment")
        _check_bytes(self.data, "Fulfill.data", MAX_DATA_LENGTH)

    @property
    def condition(self) -> bytes:
        """SHA-256 of the fulfillment: equals the execution condition of the Prepare it fulfills."""
        return hashlib.sha256(self.fulfillment).digest()


@dataclass(frozen=True, slots=True)
class Reject:
    """The answer that refuses a Prepare.

    ``code`` is an ILP error code (see :mod:`host.ilp.errors`); ``triggered_by`` the address of
    the node that refused, or empty when unknown (the ASN.1 type allows an empty address, and
    interledgerjs accepts one); ``message`` is human-readable UTF-8.
    """

    code: str
    triggered_by: str
    message: str = ""
    data: bytes = b""

    def __post_init__(self) -> None:
        if not isinstance(self.code, str) or not errors.is_well_formed(self.code):
            raise IlpPacketError(
                "Reject.code", f"must be F, T or R and two digits, got {self.code!r}"
            )
        if type(self.code) is not str:  # an ErrorCode member: keep the plain value
            object.__setattr__(self, "code", str(self.code))
        if not isinstance(self.triggered_by, str) or not (
            self.triggered_by == "" or address.is_valid(self.triggered_by)
        ):
            raise IlpPacketError("Reject.triggered_by", _address_problem(self.triggered_by))
        if not isinstance(self.message, str):
            raise IlpPacketError(
                "Reject.message", f"must be a str, got {type(self.message).__name__}"
            )
        if len(self.message) > MAX_MESSAGE_LENGTH:
            raise IlpPacketError(
                "Reject.message",
                f"has {len(self.message)} characters, at most {MAX_MESSAGE_LENGTH} allowed",
            )
        try:
            self.message.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise IlpPacketError(
                "Reject.message", f"cannot be encoded as UTF-8 ({exc.reason})"
            ) from None
        _check_bytes(self.data, "Reject.data", MAX_DATA_LENGTH)

    @property
    def family(self) -> errors.ErrorFamily:
        """Final, temporary or relative: what the sender should do about it."""
        return errors.family_of(self.code)


#: Any ILP packet.
Packet: TypeAlias = Prepare | Fulfill | Reject
#: What a Prepare gets back.
Reply: TypeAlias = Fulfill | Reject


def _address_problem(value: object) -> str:
    if not isinstance(value, str):
        return f"must be a str, got {type(value).__name__}"
    return f"{value[:60]!a} is not an ILP address: {address.why_invalid(value)}"


def make_reject(code: str, triggered_by: str, message: str = "", data: bytes = b"") -> Reject:
    """A Reject for an error this node found, safe to call on any error path.

    The message is cut to the 8191-character limit and characters UTF-8 cannot carry (lone
    surrogates) are replaced, so only a malformed ``code`` or ``triggered_by`` (a bug in the
    caller) raises.
    """
    text = message[:MAX_MESSAGE_LENGTH]
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return Reject(code=code, triggered_by=triggered_by, message=text, data=data)


# -- encoding ---------------------------------------------------------------------------------


def serialize(packet: Packet) -> bytes:
    """The canonical OER encoding of a packet."""
    # One join per packet, the envelope's prefix computed from the field lengths: a connector
    # encodes a packet or two per packet it forwards.
    if isinstance(packet, Prepare):
        destination = packet.destination.encode("ascii")
        data = packet.data
        content = _PREPARE_FIXED + prefixed_size(len(destination)) + prefixed_size(len(data))
        return b"".join(
            (
                _PREPARE_TYPE,
                length_prefix(content),
                packet.amount.to_bytes(8, "big"),
                timestamp.encode(packet.expires_at),
                packet.execution_condition,
                length_prefix(len(destination)),
                destination,
                length_prefix(len(data)),
                data,
            )
        )
    if isinstance(packet, Fulfill):
        data = packet.data
        if not data:
            return _EMPTY_FULFILL_HEAD + packet.fulfillment + b"\0"
        content = HASH_LENGTH + prefixed_size(len(data))
        return b"".join(
            (
                _FULFILL_TYPE,
                length_prefix(content),
                packet.fulfillment,
                length_prefix(len(data)),
                data,
            )
        )
    if isinstance(packet, Reject):
        triggered_by = packet.triggered_by.encode("ascii")
        message = packet.message.encode("utf-8")
        fields = (
            packet.code.encode("ascii"),
            length_prefix(len(triggered_by)),
            triggered_by,
            length_prefix(len(message)),
            message,
            length_prefix(len(packet.data)),
            packet.data,
        )
        content_length = sum(len(field) for field in fields)
        return b"".join((_REJECT_TYPE, length_prefix(content_length), *fields))
    raise TypeError(f"not an ILP packet: {type(packet).__name__}")


def prepare_with_expiry(encoded: bytes, expires_at: datetime) -> bytes:
    """The encoding of a Prepare that differs from the Prepare ``encoded`` only in its expiry:
    ``serialize(replace(parse_prepare(encoded), expires_at=expires_at))`` without decoding and
    encoding the fields that stay (what a connector does to each packet it forwards).

    ``encoded`` must be a canonical Prepare (as :func:`parse_prepare` accepts it, or
    :func:`serialize` makes it) and ``expires_at`` canonical (:func:`timestamp.to_expiry`).
    """
    if not encoded or encoded[0] != PacketType.PREPARE or not timestamp.is_expiry(expires_at):
        raise ValueError("needs an encoded Prepare and a canonical expiry")
    first = encoded[1]
    # The expiry follows the type byte, the envelope's length determinant and the amount.
    start = 2 + (first & 0x7F if first > SHORT_FORM_MAX else 0) + 8
    end = start + timestamp.LENGTH
    return b"".join((encoded[:start], timestamp.encode(expires_at), encoded[end:]))


def encoded_size(packet: Packet) -> int:
    """Bytes :func:`serialize` produces for ``packet``, without encoding it."""
    if isinstance(packet, Prepare):
        content = _PREPARE_FIXED
        content += prefixed_size(len(packet.destination)) + prefixed_size(len(packet.data))
    elif isinstance(packet, Fulfill):
        content = HASH_LENGTH + prefixed_size(len(packet.data))
    else:
        content = CODE_LENGTH + prefixed_size(len(packet.triggered_by))
        content += prefixed_size(len(packet.message.encode("utf-8")))
        content += prefixed_size(len(packet.data))
    return 1 + prefixed_size(content)


# -- decoding ---------------------------------------------------------------------------------


def parse(data: bytes | bytearray | memoryview) -> Packet:
    """Decode one packet of any type; IlpPacketError if the bytes are not exactly one."""
    if not isinstance(data, bytes):
        # Views into a caller's bytearray would lock it against resizing for as long as an
        # exception's traceback keeps this module's frames; bytes cannot be resized anyway.
        data = bytes(data)
    reader = Reader(data)
    kind = reader.read_uint8("packet type")
    parser = _PARSERS.get(kind)
    if parser is None:
        raise IlpPacketError(
            "packet type",
            f"unknown type {kind} (12 Prepare, 13 Fulfill and 14 Reject are defined)",
            0,
        )
    return parser(reader)


def parse_prepare(data: bytes | bytearray | memoryview) -> Prepare:
    """Decode a packet that must be a Prepare."""
    packet = parse(data)
    if not isinstance(packet, Prepare):
        raise IlpPacketError("packet type", f"expected a Prepare, got a {_name(packet)}", 0)
    return packet


def parse_reply(data: bytes | bytearray | memoryview) -> Reply:
    """Decode a packet that must be a Fulfill or a Reject."""
    packet = parse(data)
    if isinstance(packet, Prepare):
        raise IlpPacketError("packet type", "expected a Fulfill or a Reject, got a Prepare", 0)
    return packet


def _name(packet: Packet) -> str:
    return type(packet).__name__


def _content(reader: Reader, name: str) -> Reader:
    """The envelope's content; the envelope must end the input."""
    content = reader.enter_var_octets(f"{name} envelope length")
    if reader.remaining:
        raise IlpPacketError(
            name, f"{reader.remaining} byte(s) after the end of the packet", reader.pos
        )
    return content


def _parse_prepare(reader: Reader) -> Prepare:
    body = _content(reader, "Prepare")
    amount = body.read_uint(8, "Prepare.amount")
    start = body.pos
    digits = body.read(timestamp.LENGTH, "Prepare.expires_at")
    try:
        expires_at = timestamp.decode(digits)
    except timestamp.TimestampError as exc:
        raise IlpPacketError("Prepare.expires_at", str(exc), start) from None
    condition = bytes(body.read(HASH_LENGTH, "Prepare.execution_condition"))
    start = body.pos
    destination = body.read_var_octets("Prepare.destination", address.MAX_LENGTH)
    if not address.is_valid_bytes(destination):
        raise IlpPacketError("Prepare.destination", _bytes_address_problem(destination), start)
    data = bytes(body.read_var_octets("Prepare.data", MAX_DATA_LENGTH))
    body.expect_end("Prepare")
    return Prepare(amount, expires_at, condition, str(destination, "ascii"), data)


def _parse_fulfill(reader: Reader) -> Fulfill:
    body = _content(reader, "Fulfill")
    fulfillment = bytes(body.read(HASH_LENGTH, "Fulfill.fulfillment"))
    data = bytes(body.read_var_octets("Fulfill.data", MAX_DATA_LENGTH))
    body.expect_end("Fulfill")
    return Fulfill(fulfillment, data)


def _parse_reject(reader: Reader) -> Reject:
    body = _content(reader, "Reject")
    start = body.pos
    code = body.read(CODE_LENGTH, "Reject.code")
    if not errors.is_well_formed_bytes(code):
        raise IlpPacketError(
            "Reject.code", f"{str(code, 'latin-1')!a} is not F, T or R and two digits", start
        )
    start = body.pos
    triggered_by = body.read_var_octets("Reject.triggered_by", address.MAX_LENGTH)
    if triggered_by and not address.is_valid_bytes(triggered_by):
        raise IlpPacketError("Reject.triggered_by", _bytes_address_problem(triggered_by), start)
    start = body.pos
    # Up to 4 UTF-8 bytes per character; the character count is checked once decoded.
    raw_message = body.read_var_octets("Reject.message", 4 * MAX_MESSAGE_LENGTH)
    try:
        message = str(raw_message, "utf-8")
    except UnicodeDecodeError as exc:
        raise IlpPacketError(
            "Reject.message", f"is not valid UTF-8 ({exc.reason} at byte {exc.start})", start
        ) from None
    if len(message) > MAX_MESSAGE_LENGTH:
        raise IlpPacketError(
            "Reject.message",
            f"has {len(message)} characters, at most {MAX_MESSAGE_LENGTH} allowed",
            start,
        )
    data = bytes(body.read_var_octets("Reject.data", MAX_DATA_LENGTH))
    body.expect_end("Reject")
    return Reject(str(code, "ascii"), str(triggered_by, "ascii"), message, data)


def _bytes_address_problem(raw: memoryview) -> str:
    # latin-1 maps each byte to one character, so indexes in the reason are byte indexes.
    return _address_problem(str(raw, "latin-1"))


_PARSERS: Final[dict[int, Callable[[Reader], Packet]]] = {
    PacketType.PREPARE: _parse_prepare,
    PacketType.FULFILL: _parse_fulfill,
    PacketType.REJECT: _parse_reject,
}
