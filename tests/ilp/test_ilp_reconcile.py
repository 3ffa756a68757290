"""peer.reconcile's codec (host.ilp.reconcile): pure."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from host.ilp import ErrorCode, IlpPacketError, make_reject
from host.ilp.ildcp import PEER_PROTOCOL_CONDITION, PEER_PROTOCOL_FULFILLMENT
from host.ilp.packet import Fulfill, Prepare
from host.ilp.reconcile import (
    RECONCILE_ADDRESS,
    NotSupported,
    ReconcileError,
    Totals,
    decode,
    encode,
    fulfill,
    read_reply,
    read_request,
    request,
)

BIG = 10**77  # 78 digits: the contract's longest amount
SOON = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "totals",
    [
        Totals(0, 0, 0, 0),
        Totals(6, -1, 2, 3, 4, 5),
        Totals(255, BIG, BIG, BIG, BIG, BIG),
        Totals(9, -BIG, 0, BIG, 0, 1),
    ],
)
def test_totals_round_trip(totals: Totals) -> None:
    assert decode(encode(totals)) == totals
    assert read_request(request(totals, SOON)) == totals
    assert read_reply(fulfill(totals)) == totals


def test_the_encoding_is_oer() -> None:
    # version 1, scale 6, negative, |balance| 300 (2 bytes), 0, 5, 0, 1
    assert encode(Totals(6, -300, 0, 5, 0, 1)) == bytes.fromhex(
        "01 06 01 0201 2c 0100 0105 0100 0101"
    )


def test_packets_net_is_the_balance_without_settlements() -> None:
    assert Totals(2, balance=-100, settled_out=400, settled_in=50).packets_net == -450
    assert Totals(2, 0, 0, 0).quiet and not Totals(2, 0, 0, 0, in_flight_out=1).quiet


def test_bytes_after_the_known_fields_are_ignored() -> None:
    assert decode(encode(Totals(2, 7, 0, 0)) + b"\x01\x02") == Totals(2, 7, 0, 0)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (b"", "version"),
        (bytes.fromhex("02 06 00 0100 0100 0100 0100 0100"), "version"),
        (bytes.fromhex("01 06 02 0100 0100 0100 0100 0100"), "balance_sign"),
        (bytes.fromhex("01 06 01 0100 0100 0100 0100 0100"), "negative zero"),
        (bytes.fromhex("01 06 00 020001 0100 0100 0100 0100"), "leading zero"),
        (bytes.fromhex("01 06 00 0100 0100"), "settled_in"),
        (bytes([1, 6, 0, 41]) + bytes([1] * 41), "exceeds 40"),
    ],
)
def test_malformed_totals_are_refused(data: bytes, field: str) -> None:
    with pytest.raises(IlpPacketError, match=field):
        decode(data)


def test_a_malformed_request_is_f01() -> None:
    good = request(Totals(2, 0, 0, 0), SOON)
    for bad in (
        Prepare(1, SOON, PEER_PROTOCOL_CONDITION, RECONCILE_ADDRESS, good.data),
        Prepare(0, SOON, bytes(32), RECONCILE_ADDRESS, good.data),
        Prepare(0, SOON, PEER_PROTOCOL_CONDITION, RECONCILE_ADDRESS, b"\x07"),
    ):
        with pytest.raises(ReconcileError) as caught:
            read_request(bad)
        assert caught.value.code == ErrorCode.F01_INVALID_PACKET


def test_a_peer_without_the_address_is_not_supported_and_other_rejects_are_errors() -> None:
    with pytest.raises(NotSupported, match=r"peer\.reconcile"):
        read_reply(make_reject(ErrorCode.F02_UNREACHABLE, "test.b", "not forwarded"))
    with pytest.raises(NotSupported, match="unknown peer protocol"):  # ilp-connector's answer
        read_reply(make_reject(ErrorCode.F01_INVALID_PACKET, "test.js", "unknown peer protocol."))
    with pytest.raises(ReconcileError, match="T00"):
        read_reply(make_reject(ErrorCode.T00_INTERNAL_ERROR, "test.b", "books unavailable"))
    with pytest.raises(ReconcileError, match="32 zero bytes"):
        read_reply(Fulfill(bytes(range(32)), encode(Totals(2, 0, 0, 0))))
    with pytest.raises(ReconcileError, match="F01"):
        read_reply(Fulfill(PEER_PROTOCOL_FULFILLMENT, b"\x01"))
