"""Prepare/Fulfill/Reject: field rules, size limits at their boundaries, parse errors."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from host.ilp import ErrorCode, ErrorFamily, make_reject
from host.ilp.oer import IlpPacketError, length_prefix
from host.ilp.packet import (
    MAX_DATA_LENGTH,
    MAX_MESSAGE_LENGTH,
    Fulfill,
    Packet,
    Prepare,
    Reject,
    encoded_size,
    parse,
    parse_prepare,
    parse_reply,
    prepare_with_expiry,
    serialize,
)

EXPIRY = datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
CONDITION = hashlib.sha256(b"\x01" * 32).digest()


def prepare(**changes: Any) -> Prepare:
    fields: dict[str, Any] = {
        "amount": 1000,
        "expires_at": EXPIRY,
        "execution_condition": CONDITION,
        "destination": "test.bob.inbox",
        "data": b"hello",
    }
    fields.update(changes)
    return Prepare(**fields)


def envelope(kind: int, content: bytes) -> bytes:
    return bytes((kind,)) + length_prefix(len(content)) + content


def prepare_content(
    amount: bytes = (5).to_bytes(8, "big"),
    expiry: bytes = b"20300102030405678",
    condition: bytes = CONDITION,
    destination: bytes = b"test.bob",
    data: bytes = b"",
) -> bytes:
    return (
        amount
        + expiry
        + condition
        + length_prefix(len(destination))
        + destination
        + length_prefix(len(data))
        + data
    )


def reject_content(
    code: bytes = b"F02",
    triggered_by: bytes = b"test.connector",
    message: bytes = b"",
    data: bytes = b"",
) -> bytes:
    return b"".join(
        length_prefix(len(part)) + part if index else part
        for index, part in enumerate((code, triggered_by, message, data))
    )


# -- construction -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"amount": -1}, "Prepare.amount", "uint64"),
        ({"amount": 2**64}, "Prepare.amount", "uint64"),
        ({"amount": True}, "Prepare.amount", "must be an int"),
        ({"amount": "5"}, "Prepare.amount", "must be an int"),
        ({"expires_at": datetime(2030, 1, 1)}, "Prepare.expires_at", "timezone-aware"),
        ({"execution_condition": b"\x00" * 31}, "Prepare.execution_condition", "exactly 32"),
        ({"execution_condition": "0" * 32}, "Prepare.execution_condition", "exactly 32"),
        ({"destination": "test"}, "Prepare.destination", "at least one segment"),
        ({"destination": "nope.bob"}, "Prepare.destination", "allocation scheme"),
        ({"destination": ""}, "Prepare.destination", "empty"),
        ({"destination": b"test.bob"}, "Prepare.destination", "must be a str"),
        ({"destination": "g." + "x" * 1022}, "Prepare.destination", "1024 characters"),
        ({"data": bytes(MAX_DATA_LENGTH + 1)}, "Prepare.data", "at most 32767"),
        ({"data": bytearray(3)}, "Prepare.data", "must be bytes"),
    ],
)
def test_prepare_refuses_invalid_fields(changes: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(IlpPacketError, match=words) as caught:
        prepare(**changes)
    assert caught.value.field == field
    assert caught.value.offset is None


def test_prepare_limits_are_inclusive() -> None:
    biggest = prepare(amount=2**64 - 1, destination="g." + "x" * 1021, data=bytes(MAX_DATA_LENGTH))
    encoded = serialize(biggest)
    assert len(encoded) == encoded_size(biggest)
    assert parse(encoded) == biggest
    assert prepare(amount=0).amount == 0


def test_expiry_is_kept_in_utc_and_rounded_down_to_the_millisecond() -> None:
    later_zone = timezone(timedelta(hours=2))
    packet = prepare(expires_at=datetime(2030, 1, 2, 5, 4, 5, 678999, tzinfo=later_zone))
    assert packet.expires_at == EXPIRY
    assert packet.expires_at.tzinfo is UTC
    assert parse(serialize(packet)) == packet


def test_expiry_outside_the_utc_calendar_is_refused() -> None:
    eastern = timezone(timedelta(hours=5))
    with pytest.raises(IlpPacketError, match=r"0001\.\.9999"):
        prepare(expires_at=datetime(1, 1, 1, tzinfo=eastern))


def test_replace_revalidates() -> None:
    with pytest.raises(IlpPacketError, match="uint64"):
        dataclasses.replace(prepare(), amount=-5)
    assert dataclasses.replace(prepare(), amount=7).amount == 7


def test_fulfill_fields() -> None:
    fulfillment = b"\x01" * 32
    fulfill = Fulfill(fulfillment, b"receipt")
    assert fulfill.condition == CONDITION == prepare().execution_condition
    with pytest.raises(IlpPacketError, match="exactly 32") as caught:
        Fulfill(b"\x01" * 33)
    assert caught.value.field == "Fulfill.fulfillment"
    with pytest.raises(IlpPacketError, match="at most 32767"):
        Fulfill(fulfillment, bytes(MAX_DATA_LENGTH + 1))


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"code": "F2"}, "Reject.code", "two digits"),
        ({"code": "X00"}, "Reject.code", "two digits"),
        ({"code": "f02"}, "Reject.code", "two digits"),
        ({"triggered_by": "test."}, "Reject.triggered_by", "not an ILP address"),
        ({"message": "x" * (MAX_MESSAGE_LENGTH + 1)}, "Reject.message", "at most 8191"),
        ({"message": "bad \udc80 surrogate"}, "Reject.message", "UTF-8"),
        ({"message": b"bytes"}, "Reject.message", "must be a str"),
        ({"data": bytes(MAX_DATA_LENGTH + 1)}, "Reject.data", "at most 32767"),
    ],
)
def test_reject_refuses_invalid_fields(changes: dict[str, Any], field: str, words: str) -> None:
    fields: dict[str, Any] = {"code": "F02", "triggered_by": "test.connector"}
    fields.update(changes)
    with pytest.raises(IlpPacketError, match=words) as caught:
        Reject(**fields)
    assert caught.value.field == field


def test_reject_allows_an_empty_triggered_by_and_unnamed_codes() -> None:
    reject = Reject("T42", "", "try later")
    assert reject.family is ErrorFamily.TEMPORARY
    assert parse(serialize(reject)) == reject


def test_reject_message_limit_counts_characters_not_bytes() -> None:
    longest = Reject("F99", "test.app", "é" * MAX_MESSAGE_LENGTH)  # 16382 UTF-8 bytes
    assert parse(serialize(longest)) == longest
    wide = Reject("F99", "test.app", "\U0001f4b8" * MAX_MESSAGE_LENGTH)  # 4 bytes each
    assert parse(serialize(wide)) == wide


def test_make_reject_never_fails_on_the_message() -> None:
    reject = make_reject(
        ErrorCode.T04_INSUFFICIENT_LIQUIDITY, "g.me", "\udc80" + "x" * 20000, b"\x01"
    )
    assert reject.code == "T04" and reject.triggered_by == "g.me" and reject.data == b"\x01"
    assert type(reject.code) is str  # the ErrorCode member is stored as its plain value
    assert len(reject.message) == MAX_MESSAGE_LENGTH
    assert reject.message.startswith("?x")
    assert parse(serialize(reject)) == reject
    with pytest.raises(IlpPacketError, match=r"Reject\.code"):
        make_reject("bad", "g.me", "oops")


def test_serialize_refuses_other_objects() -> None:
    with pytest.raises(TypeError, match="not an ILP packet"):
        serialize("a packet")  # type: ignore[arg-type]


# -- parsing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "packet",
    [
        prepare(),
        prepare(data=b""),
        prepare(data=b"\x07" * MAX_DATA_LENGTH),
        Fulfill(b"\x00" * 32),
        Fulfill(b"\x00" * 32, b"\x03" * 200),
        Reject("R00", "test.connector", "timed out", b"\x00\x01"),
    ],
    ids=type,
)
def test_round_trip_and_encoded_size(packet: Packet) -> None:
    encoded = serialize(packet)
    assert len(encoded) == encoded_size(packet)
    assert parse(encoded) == packet


@pytest.mark.parametrize("data_length", [0, 5, 60, 70, 200, 300, 70_000 // 3, MAX_DATA_LENGTH])
def test_prepare_with_expiry_is_the_packet_with_that_expiry_encoded(data_length: int) -> None:
    """Whatever the envelope's length determinant (short form, long form of 1 or 2 bytes)."""
    original = prepare(
        data=bytes(range(256)) * (data_length // 256) + b"\x09" * (data_length % 256)
    )
    earlier = EXPIRY - timedelta(seconds=1, milliseconds=1)
    expected = serialize(dataclasses.replace(original, expires_at=earlier))
    assert prepare_with_expiry(serialize(original), earlier) == expected
    assert parse_prepare(expected).expires_at == earlier


def test_prepare_with_expiry_refuses_what_it_cannot_splice() -> None:
    with pytest.raises(ValueError):
        prepare_with_expiry(serialize(Fulfill(b"\x00" * 32)), EXPIRY)
    with pytest.raises(ValueError):
        prepare_with_expiry(serialize(prepare()), EXPIRY + timedelta(microseconds=1))


def test_typed_parsers() -> None:
    prepared = serialize(prepare())
    fulfilled = serialize(Fulfill(b"\x01" * 32))
    assert parse_prepare(prepared) == prepare()
    assert parse_reply(fulfilled) == Fulfill(b"\x01" * 32)
    with pytest.raises(IlpPacketError, match="expected a Prepare, got a Fulfill"):
        parse_prepare(fulfilled)
    with pytest.raises(IlpPacketError, match="expected a Fulfill or a Reject, got a Prepare"):
        parse_reply(prepared)


@pytest.mark.parametrize(
    ("binary", "field", "offset", "words"),
    [
        (
            envelope(12, prepare_content(amount=b"\x00" * 5)),
            "Prepare.expires_at",
            10,
            "not 17 ASCII digits",
        ),
        (envelope(12, prepare_content()[:20]), "Prepare.expires_at", 10, "needs 17 bytes"),
        (envelope(12, prepare_content()[:5]), "Prepare.amount", 2, "needs 8 bytes, only 5"),
        (
            envelope(12, prepare_content(expiry=b"20301302030405678")),
            "Prepare.expires_at",
            10,
            "month",
        ),
        (
            envelope(12, prepare_content(expiry=b"20300102240000000")),
            "Prepare.expires_at",
            10,
            "hour",
        ),
        (
            envelope(12, prepare_content(expiry=b"2030-1-2T3:4:5.67")),
            "Prepare.expires_at",
            10,
            "ASCII digits",
        ),
        (
            # b"\xb2" is "²" in latin-1, a digit to str.isdigit: only ASCII digits count.
            envelope(12, prepare_content(expiry=b"2030010203040567\xb2")),
            "Prepare.expires_at",
            10,
            "ASCII digits",
        ),
        (
            envelope(12, prepare_content(destination=b"test.b\xffb")),
            "Prepare.destination",
            59,
            r"'test.b\\xffb' is not an ILP address: character '\\xff' at index 6",
        ),
        (
            envelope(12, prepare_content(destination=b"g." + b"x" * 1022)),
            "Prepare.destination",
            61,
            "exceeds the maximum 1023",
        ),
        (
            envelope(12, prepare_content(data=bytes(MAX_DATA_LENGTH + 1))),
            "Prepare.data",
            70,
            "exceeds the maximum 32767",
        ),
        (envelope(12, prepare_content() + b"\x00"), "Prepare", 69, "after the last field"),
        (envelope(13, b"\x01" * 32), "Fulfill.data", 34, "none left"),
        (envelope(14, b"F0"), "Reject.code", 2, "needs 3 bytes, only 2"),
        (envelope(14, reject_content(code=b"F0")), "Reject.code", 2, r"'F0\\x0e' is not F"),
        (envelope(14, reject_content(code=b"X01")), "Reject.code", 2, "two digits"),
        (
            envelope(14, reject_content(triggered_by=b"test")),
            "Reject.triggered_by",
            5,
            "segment",
        ),
        (
            envelope(14, reject_content(message=b"caf\xc3")),
            "Reject.message",
            20,
            "not valid UTF-8",
        ),
        (
            envelope(14, reject_content(message=b"\xed\xa0\x80")),  # an encoded surrogate
            "Reject.message",
            20,
            "not valid UTF-8",
        ),
        (
            envelope(14, reject_content(message=b"x" * (MAX_MESSAGE_LENGTH + 1))),
            "Reject.message",
            22,
            "8192 characters",
        ),
        (envelope(14, reject_content()[:-1]), "Reject.data", 21, "none left"),
        (envelope(12, b"")[:1] + b"\x82\x00\x05", "Prepare envelope length", 1, "leading zero"),
        (b"\x0c\x81\x05" + prepare_content()[:5], "Prepare envelope length", 1, "short form"),
        (b"\x0c\x80", "Prepare envelope length", 1, "indefinite"),
        (b"\x0e\x10", "Reject envelope length", 1, "declares 16 bytes, only 0 left"),
        (envelope(13, b"\x01" * 32 + b"\x00") + b"\x00", "Fulfill", 35, "after the end"),
        (b"\x00", "packet type", 0, "unknown type 0"),
        (b"\x0b" + bytes(40), "packet type", 0, "unknown type 11"),
    ],
)
def test_parse_errors_name_field_and_offset(
    binary: bytes, field: str, offset: int, words: str
) -> None:
    with pytest.raises(IlpPacketError, match=words) as caught:
        parse(binary)
    assert (caught.value.field, caught.value.offset) == (field, offset), str(caught.value)
    assert str(caught.value).startswith(f"{field} at offset {offset}: ")


def test_parse_accepts_the_largest_fields() -> None:
    content = prepare_content(destination=b"g." + b"x" * 1021, data=bytes(MAX_DATA_LENGTH))
    packet = parse(envelope(12, content))
    assert isinstance(packet, Prepare) and len(packet.data) == MAX_DATA_LENGTH
    reject = parse(envelope(14, reject_content(triggered_by=b"", message=b"m" * 8191)))
    assert isinstance(reject, Reject) and reject.triggered_by == ""


def test_parse_does_not_keep_the_input_buffer() -> None:
    buffer = bytearray(serialize(prepare()))
    packet = parse(buffer)
    buffer[-1] ^= 0xFF
    buffer.extend(b"more")  # would fail if a view into the buffer were still alive
    assert packet == prepare()


def test_public_names() -> None:
    import host.ilp

    assert set(host.ilp.__all__) == {
        "ErrorCode",
        "ErrorFamily",
        "Fulfill",
        "IlpPacketError",
        "Packet",
        "PacketType",
        "Prepare",
        "Reject",
        "Reply",
        "make_reject",
        "parse",
        "parse_prepare",
        "parse_reply",
        "serialize",
    }
    assert all(hasattr(host.ilp, name) for name in host.ilp.__all__)
    assert issubclass(host.ilp.IlpPacketError, ValueError)


def test_a_refused_bytearray_can_be_reused_while_handling_the_error() -> None:
    buffer = bytearray(b"\x0c\x05abc")
    with pytest.raises(IlpPacketError) as caught:
        parse(buffer)
    buffer.extend(b"more")  # BufferError if the traceback kept a view into the buffer
    assert caught.value.field == "Prepare envelope length"
