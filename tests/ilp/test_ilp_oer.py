"""The OER primitives: canonical length determinants, octet strings, unsigned integers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from host.ilp.oer import (
    IlpPacketError,
    Reader,
    length_prefix,
    prefixed_size,
    var_octets,
    var_uint,
)


@pytest.mark.parametrize(
    ("length", "encoded"),
    [
        (0, "00"),
        (1, "01"),
        (127, "7f"),
        (128, "8180"),
        (255, "81ff"),
        (256, "820100"),
        (32767, "827fff"),
        (65536, "83010000"),
        (2**64 - 1, "88ffffffffffffffff"),
    ],
)
def test_length_prefix_is_canonical(length: int, encoded: str) -> None:
    assert length_prefix(length).hex() == encoded
    assert Reader(bytes.fromhex(encoded)).read_length("x") == length


@pytest.mark.parametrize(
    ("encoded", "words"),
    [
        ("", "none left"),
        ("80", "indefinite"),
        ("817f", "short form"),  # 127 fits the short form
        ("8100", "leading zero"),
        ("820080", "leading zero"),  # 128 written with two bytes
        ("82007f", "leading zero"),
        ("89010000000000000000", "exceeds the supported 8"),
        ("ff", "exceeds the supported 8"),
        ("82ff", "needs 2 bytes, only 1 left"),
        ("81", "needs 1 bytes, only 0 left"),
    ],
)
def test_non_canonical_or_truncated_lengths_are_refused(encoded: str, words: str) -> None:
    with pytest.raises(IlpPacketError, match=words) as caught:
        Reader(bytes.fromhex(encoded)).read_length("Thing.length")
    assert caught.value.field == "Thing.length"
    assert str(caught.value).startswith("Thing.length at offset ")


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_length_prefix_round_trip(length: int) -> None:
    encoded = length_prefix(length)
    reader = Reader(encoded)
    assert reader.read_length("x") == length
    reader.expect_end("x")
    assert prefixed_size(length) == len(encoded) + length


def test_length_prefix_refuses_impossible_lengths() -> None:
    with pytest.raises(ValueError, match="negative"):
        length_prefix(-1)
    with pytest.raises(ValueError, match="does not fit"):
        length_prefix(2**64)


@given(st.binary(max_size=600))
def test_var_octets_round_trip(content: bytes) -> None:
    encoded = var_octets(content)
    reader = Reader(encoded)
    assert bytes(reader.read_var_octets("x")) == content
    assert reader.remaining == 0


def test_var_octets_bounds() -> None:
    reader = Reader(var_octets(b"abcd"))
    with pytest.raises(IlpPacketError, match="length 4 exceeds the maximum 3"):
        reader.read_var_octets("x", max_length=3)
    with pytest.raises(IlpPacketError, match="declares 5 bytes, only 4 left") as caught:
        Reader(b"\x05abcd").read_var_octets("x")
    assert caught.value.offset == 0


def test_offsets_are_absolute() -> None:
    reader = Reader(b"\x00\x00\x00" + b"\x05ab")
    reader.read(3, "padding")
    with pytest.raises(IlpPacketError) as caught:
        reader.read_var_octets("x")
    assert caught.value.offset == 3


def test_nested_reader_keeps_absolute_offsets_and_its_end() -> None:
    outer = Reader(b"\x0c\x03abc!")
    outer.read_uint8("type")
    inner = outer.enter_var_octets("envelope")
    assert outer.pos == 5 and outer.remaining == 1
    assert bytes(inner.read(2, "two")) == b"ab"
    with pytest.raises(IlpPacketError, match="1 byte\\(s\\) after the last field") as caught:
        inner.expect_end("Thing")
    assert caught.value.offset == 4
    with pytest.raises(IlpPacketError, match="needs 2 bytes, only 1 left"):
        inner.read(2, "past the end")


@pytest.mark.parametrize(
    ("value", "encoded"),
    [(0, "0100"), (1, "0101"), (255, "01ff"), (256, "020100"), (2**64 - 1, "08ffffffffffffffff")],
)
def test_var_uint(value: int, encoded: str) -> None:
    assert var_uint(value).hex() == encoded
    assert Reader(bytes.fromhex(encoded)).read_var_uint("x") == value


@pytest.mark.parametrize(
    ("encoded", "words"),
    [
        ("00", "no bytes"),
        ("020001", "leading zero"),
        ("09010000000000000000", "exceeds 8"),
        ("0201", "declares 2 bytes"),
    ],
)
def test_invalid_var_uint(encoded: str, words: str) -> None:
    with pytest.raises(IlpPacketError, match=words):
        Reader(bytes.fromhex(encoded)).read_var_uint("x")


def test_var_uint_refuses_negative() -> None:
    with pytest.raises(ValueError, match="negative"):
        var_uint(-1)


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_var_uint_round_trip(value: int) -> None:
    reader = Reader(var_uint(value))
    assert reader.read_var_uint("x") == value
    reader.expect_end("x")


def test_reader_accepts_bytes_like_inputs() -> None:
    for data in (b"\x01\x02", bytearray(b"\x01\x02"), memoryview(b"\x01\x02")):
        assert Reader(data).read_uint(2, "x") == 0x0102
