"""Property tests: parse raises only IlpPacketError on any bytes, and the codec is canonical.

Three kinds of input: random bytes, random bytes inside a well-formed envelope (so the field
parsers are reached), and valid packets (the public vectors and generated ones) with random
mutations. For every input that parses, re-encoding gives back exactly the input.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from host.ilp import address
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
    serialize,
)

VECTORS = Path(__file__).parent / "vectors"
VALID_BINARIES = [
    bytes.fromhex(json.loads(path.read_text(encoding="utf-8"))["binary"])
    for path in sorted(VECTORS.glob("ilp_*/valid/*.json"))
]

FUZZ = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ROUND_TRIP = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check_parse(data: bytes) -> Packet | None:
    """Parse ``data``: either a packet that re-encodes to ``data``, or a located IlpPacketError."""
    try:
        packet = parse(data)
    except IlpPacketError as exc:
        assert exc.field and exc.reason
        assert exc.offset is not None and 0 <= exc.offset <= len(data), exc
        return None
    assert serialize(packet) == data
    return packet


# -- strategies -------------------------------------------------------------------------------

SEGMENT = st.text(
    alphabet="abcXYZ0129_~-",
    min_size=1,
    max_size=12,
)


@st.composite
def addresses(draw: st.DrawFn) -> str:
    scheme = draw(st.sampled_from(address.SCHEMES))
    segments = draw(st.lists(SEGMENT, min_size=1, max_size=5))
    text = ".".join([scheme, *segments])
    if draw(st.integers(0, 9)) == 0:  # now and then, an address near the 1023 limit
        text += "." + "x" * (address.MAX_LENGTH - len(text) - 1 - draw(st.integers(0, 3)))
    return text


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    size = draw(
        st.one_of(
            st.integers(0, 200),
            st.sampled_from([127, 128, 255, 256, MAX_DATA_LENGTH]),
            st.integers(0, MAX_DATA_LENGTH),
        )
    )
    # Big payloads from a seeded generator: Hypothesis would refuse to draw 32 KiB itself.
    return random.Random(draw(st.integers(0, 2**32))).randbytes(size)


@st.composite
def long_messages(draw: st.DrawFn) -> str:
    """Messages at or near the 8191-character limit, with 1- to 4-byte UTF-8 characters."""
    size = MAX_MESSAGE_LENGTH - draw(st.integers(0, 3))
    return "".join(random.Random(draw(st.integers(0, 2**32))).choices("aé€\U0001f4b8", k=size))


EXPIRIES = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999999)
).map(lambda moment: moment.replace(microsecond=moment.microsecond // 1000 * 1000, tzinfo=UTC))

HASHES = st.binary(min_size=32, max_size=32)

prepares = st.builds(
    Prepare,
    amount=st.one_of(st.integers(0, 2**64 - 1), st.sampled_from([0, 2**64 - 1])),
    expires_at=EXPIRIES,
    execution_condition=HASHES,
    destination=addresses(),
    data=payloads(),
)
fulfills = st.builds(Fulfill, fulfillment=HASHES, data=payloads())
rejects = st.builds(
    Reject,
    code=st.from_regex(r"[FTR][0-9]{2}", fullmatch=True),
    triggered_by=st.one_of(st.just(""), addresses()),
    message=st.one_of(st.text(max_size=300), long_messages()),
    data=payloads(),
)
packets = st.one_of(prepares, fulfills, rejects)


@st.composite
def mutated(draw: st.DrawFn, source: st.SearchStrategy[bytes]) -> bytes:
    """``source`` bytes with a few random edits: set, flip, insert, delete, truncate, extend."""
    data = bytearray(draw(source))
    for _ in range(draw(st.integers(1, 4))):
        edit = draw(st.sampled_from(["set", "flip", "insert", "delete", "truncate", "extend"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if edit == "set" and data:
            data[at] = draw(st.integers(0, 255))
        elif edit == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif edit == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif edit == "delete" and data:
            del data[at : at + draw(st.integers(1, 4))]
        elif edit == "truncate":
            del data[at:]
        else:
            data += draw(st.binary(min_size=1, max_size=4))
    return bytes(data)


@st.composite
def enveloped(draw: st.DrawFn) -> bytes:
    """A known type byte and a correct length around random content."""
    content = draw(st.binary(max_size=400))
    return bytes((draw(st.sampled_from([12, 13, 14])),)) + length_prefix(len(content)) + content


# -- properties -------------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes(data: bytes) -> None:
    check_parse(data)


@FUZZ
@given(enveloped())
def test_random_content_in_a_valid_envelope(data: bytes) -> None:
    check_parse(data)


@FUZZ
@given(mutated(st.sampled_from(VALID_BINARIES)))
def test_mutated_vectors(data: bytes) -> None:
    check_parse(data)


@ROUND_TRIP
@given(mutated(packets.map(serialize)))
def test_mutated_generated_packets(data: bytes) -> None:
    check_parse(data)


@ROUND_TRIP
@given(packets)
def test_generated_packets_round_trip(packet: Packet) -> None:
    encoded = serialize(packet)
    assert len(encoded) == encoded_size(packet)
    assert parse(encoded) == packet


def test_the_fuzzer_reaches_valid_packets() -> None:
    """Guard against a vacuous fuzz: some single-byte mutations of the vectors still parse."""
    parsed = 0
    for binary in VALID_BINARIES:
        for offset in range(len(binary) - 1, len(binary) - 40, -1):  # bytes of the data field
            changed = bytearray(binary)
            changed[offset] ^= 0x55
            parsed += check_parse(bytes(changed)) is not None
    assert parsed > 100
