"""host.ilp against the public test vectors (see vectors/README.md for their origins)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from host.ilp import address, timestamp
from host.ilp.oer import IlpPacketError, Reader, length_prefix
from host.ilp.packet import Fulfill, Packet, Prepare, Reject, parse, serialize

VECTORS = Path(__file__).parent / "vectors"
KINDS = {"ilp_prepare": Prepare, "ilp_fulfill": Fulfill, "ilp_reject": Reject}


def load(relative: str) -> Any:
    return json.loads((VECTORS / relative).read_text(encoding="utf-8"))


def valid_vectors() -> list[Any]:
    cases = []
    for kind in KINDS:
        for path in sorted((VECTORS / kind / "valid").glob("*.json")):
            cases.append(pytest.param(kind, load(str(path.relative_to(VECTORS))), id=path.stem))
    return cases


def iso_utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def packet_from_json(kind: str, fields: dict[str, str]) -> Packet:
    """Build the packet from the vector's json fields (independently of the parser)."""
    if kind == "ilp_prepare":
        return Prepare(
            amount=int(fields["amount"]),
            expires_at=iso_utc(fields["expiresAt"]),
            execution_condition=base64.b64decode(fields["executionCondition"]),
            destination=fields["destination"],
            data=base64.b64decode(fields["data"]),
        )
    if kind == "ilp_fulfill":
        return Fulfill(
            fulfillment=base64.b64decode(fields["fulfillment"]),
            data=base64.b64decode(fields["data"]),
        )
    return Reject(
        code=fields["code"],
        triggered_by=fields["triggeredBy"],
        message=fields["message"],
        data=base64.b64decode(fields["data"]),
    )


def test_every_vector_file_names_its_source() -> None:
    files = sorted(VECTORS.rglob("*.json"))
    assert len(files) >= 13
    for path in files:
        content = json.loads(path.read_text(encoding="utf-8"))
        sources = content.get("sources") or [content.get("source")]
        if "vectors" in content:
            sources = [vector["source"] for vector in content["vectors"]]
        for source in sources:
            assert source["repository"] and source["path"] and len(source["commit"]) == 40, path


def test_there_are_vectors_of_each_kind_and_with_long_form_lengths() -> None:
    cases = [case.values for case in valid_vectors()]
    assert {kind for kind, _ in cases} == set(KINDS)
    # 0x82: a two-byte long-form envelope length; 0x81: a one-byte one.
    second_bytes = {bytes.fromhex(vector["binary"])[1] for _, vector in cases}
    assert {0x81, 0x82} <= second_bytes


@pytest.mark.parametrize(("kind", "vector"), valid_vectors())
def test_parse_gives_the_vector_fields(kind: str, vector: dict[str, Any]) -> None:
    packet = parse(bytes.fromhex(vector["binary"]))
    assert isinstance(packet, KINDS[kind])
    assert packet == packet_from_json(kind, vector["json"])


@pytest.mark.parametrize(("kind", "vector"), valid_vectors())
def test_serialize_gives_the_vector_bytes(kind: str, vector: dict[str, Any]) -> None:
    assert serialize(packet_from_json(kind, vector["json"])).hex() == vector["binary"]


@pytest.mark.parametrize(("kind", "vector"), valid_vectors())
def test_round_trip_from_bytes(kind: str, vector: dict[str, Any]) -> None:
    binary = bytes.fromhex(vector["binary"])
    assert serialize(parse(binary)) == binary
    assert serialize(parse(memoryview(bytearray(binary)))) == binary


@pytest.mark.parametrize(
    "vector", load("invalid/packets.json")["vectors"], ids=lambda vector: vector["name"]
)
def test_invalid_packets_are_refused_at_the_right_field(vector: dict[str, Any]) -> None:
    binary = bytes.fromhex(vector["binary"])
    with pytest.raises(IlpPacketError) as caught:
        parse(binary)
    assert caught.value.field == vector["field"]
    assert caught.value.offset is not None and 0 <= caught.value.offset <= len(binary)


ADDRESSES = load("addresses.json")


@pytest.mark.parametrize("text", ADDRESSES["valid"])
def test_valid_addresses(text: str) -> None:
    assert address.is_valid(text)
    assert address.is_valid_bytes(text.encode("ascii"))
    assert address.validate(text) == text


@pytest.mark.parametrize("text", ADDRESSES["invalid"])
def test_invalid_addresses(text: str) -> None:
    assert not address.is_valid(text)
    assert not address.is_valid_bytes(text.encode("utf-8"))
    with pytest.raises(address.AddressError):
        address.validate(text)


def test_address_length_limit() -> None:
    assert address.is_valid("g." + "x" * 1021)
    assert not address.is_valid("g." + "x" * 1022)


OER = load("oer_rfc0030.json")


@pytest.mark.parametrize("case", OER["length_determinants"], ids=lambda case: case["hex"])
def test_rfc0030_length_determinants(case: dict[str, Any]) -> None:
    reader = Reader(bytes.fromhex(case["hex"]))
    assert reader.read_length("length") == case["value"]
    reader.expect_end("length")
    assert length_prefix(case["value"]).hex() == case["hex"]


@pytest.mark.parametrize("case", OER["uint64"], ids=lambda case: case["hex"])
def test_rfc0030_uint64(case: dict[str, Any]) -> None:
    assert Reader(bytes.fromhex(case["hex"])).read_uint(8, "amount") == case["value"]


@pytest.mark.parametrize("case", OER["timestamps_valid"], ids=lambda case: case["digits"])
def test_rfc0030_valid_timestamps(case: dict[str, Any]) -> None:
    moment = timestamp.decode(case["digits"].encode("ascii"))
    assert moment == iso_utc(case["iso"])
    assert timestamp.encode(moment) == case["digits"].encode("ascii")


@pytest.mark.parametrize("case", OER["timestamps_invalid"], ids=lambda case: case["digits"])
def test_rfc0030_invalid_timestamps(case: dict[str, Any]) -> None:
    with pytest.raises(timestamp.TimestampError):
        timestamp.decode(case["digits"].encode("ascii"))


@pytest.mark.parametrize("case", OER["timestamps_encoding"], ids=lambda case: case["iso"])
def test_rfc0030_timestamp_encoding(case: dict[str, Any]) -> None:
    moment = timestamp.to_expiry(datetime.fromisoformat(case["iso"]))
    assert moment.tzinfo is UTC
    assert timestamp.encode(moment) == case["digits"].encode("ascii")


@pytest.mark.parametrize("case", OER["timestamp_bytes"], ids=lambda case: case["digits"])
def test_rfc0030_timestamp_bytes(case: dict[str, Any]) -> None:
    assert bytes.fromhex(case["hex"]) == case["digits"].encode("ascii")
    timestamp.decode(bytes.fromhex(case["hex"]))


@pytest.mark.parametrize("case", OER["address_octet_strings"], ids=lambda case: len(case["hex"]))
def test_rfc0030_address_octet_strings(case: dict[str, Any]) -> None:
    reader = Reader(bytes.fromhex(case["hex"]))
    raw = reader.read_var_octets("address", address.MAX_LENGTH)
    reader.expect_end("address")
    assert bytes(raw).decode("ascii") == case["address"]
    assert address.is_valid_bytes(raw)
