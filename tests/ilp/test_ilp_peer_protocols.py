"""ILDCP and CCP codecs against public vectors.

CCP vectors: interledger/interledger-rs, crates/interledger-ccp/src/fixtures.rs (whole Prepare
packets, expiry 2015-06-16T00:01:00.000Z). ILDCP vectors: bytes produced by the reference
implementation, npm ilp-protocol-ildcp 2.2.3 (serializeIldcpRequest / serializeIldcpResponse).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from host.ilp import IlpPacketError, Reject, ccp, ildcp, parse_prepare, parse_reply, serialize

CONTROL = bytes.fromhex(
    "0c6c0000000000000000323031353036313630303031303030303066687aadf862bd776c8fc18b8e9f8e2008"
    "9714856ee233b3902a591d0d5f292512706565722e726f7574652e636f6e74726f6c1f0170d1a134a0df4f47"
    "964f6e19e2ab379000000020010203666f6f03626172"
)
UPDATE_SIMPLE = bytes.fromhex(
    "0c7e0000000000000000323031353036313630303031303030303066687aadf862bd776c8fc18b8e9f8e2008"
    "9714856ee233b3902a591d0d5f292511706565722e726f7574652e7570646174653221e55f8eabcd4e979ab9"
    "bf0ff00a224c000000340000003400000034000075300d6578616d706c652e616c69636501000100"
)
UPDATE_COMPLEX = bytes.fromhex(
    "0c8201520000000000000000323031353036313630303031303030303066687aadf862bd776c8fc18b8e9f8e"
    "20089714856ee233b3902a591d0d5f292511706565722e726f7574652e757064617465820104bffbf6ad0ddc"
    "4d3ba1e5b4f0537365bd000000340000002e00000032000075300d6578616d706c652e616c69636501020f65"
    "78616d706c652e707265666978310101"
    "0f6578616d706c652e707265666978317a6c7d85867c46a2fabfad"
    "1afa7a4a5e229ce574fcce63f5edeedfc03f8468ea01000f6578616d706c652e707265666978320102126578"
    "616d706c652e636f6e6e6563746f72310f6578616d706c652e707265666978322b08e53fbcc17c5f1bd54ae0"
    "d9ad7ba39a5f9a7b126ca9b5c0945609a35324cc01025000000b68656c6c6f20776f726c64e0000104a0a0a0"
    "a001020f6578616d706c652e707265666978330f6578616d706c652e70726566697834"
)
VECTOR_EXPIRY = datetime(2015, 6, 16, 0, 1, tzinfo=UTC)

ILDCP_FULFILL = bytes.fromhex(
    "0d350000000000000000000000000000000000000000000000000000000000000000140e6578616d706c652e"
    "636c69656e740d0358414d"
)
ILDCP_REQUEST = bytes.fromhex(
    "0c460000000000000000323031373132323330313231343035343966687aadf862bd776c8fc18b8e9f8e2008"
    "9714856ee233b3902a591d0d5f29250b706565722e636f6e66696700"
)


def test_route_control_vector() -> None:
    prepare = parse_prepare(CONTROL)
    assert prepare.destination == ccp.CONTROL_ADDRESS
    control = ccp.decode_control(prepare.data)
    assert control == ccp.RouteControl(
        ccp.Mode.SYNC, uuid.UUID("70d1a134-a0df-4f47-964f-6e19e2ab3790"), 32, ("foo", "bar")
    )
    assert serialize(ccp.control_prepare(control, VECTOR_EXPIRY)) == CONTROL


def test_route_update_simple_vector() -> None:
    update = ccp.decode_update(parse_prepare(UPDATE_SIMPLE).data)
    assert update == ccp.RouteUpdate(
        uuid.UUID("21e55f8e-abcd-4e97-9ab9-bf0ff00a224c"), 52, 52, 52, 30000, "example.alice"
    )
    assert serialize(ccp.update_prepare(update, VECTOR_EXPIRY)) == UPDATE_SIMPLE


def test_route_update_complex_vector() -> None:
    update = ccp.decode_update(parse_prepare(UPDATE_COMPLEX).data)
    assert (update.current_epoch, update.from_epoch, update.to_epoch) == (52, 46, 50)
    assert update.withdrawn_routes == ("example.prefix3", "example.prefix4")
    first, second = update.new_routes
    assert first.prefix == "example.prefix1" and first.path == ("example.prefix1",)
    assert first.auth.hex().startswith("7a6c7d85")
    assert second.path == ("example.connector1", "example.prefix2")
    assert second.props == (
        ccp.RouteProp(0, b"hello world", is_optional=False, is_transitive=True, is_utf8=True),
        ccp.RouteProp(
            1, bytes.fromhex("a0a0a0a0"), is_optional=True, is_transitive=True, is_partial=True
        ),
    )
    assert serialize(ccp.update_prepare(update, VECTOR_EXPIRY)) == UPDATE_COMPLEX


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (bytes.fromhex("02") + bytes(16) + bytes(4) + b"\x01\x00", "RouteControl.mode"),
        (bytes.fromhex("01") + bytes(10), "RouteControl.last_known_routing_table_id"),
        (bytes.fromhex("01") + bytes(20) + b"\x01\x00\x00", "RouteControl"),
    ],
)
def test_malformed_route_control_is_refused(data: bytes, field: str) -> None:
    with pytest.raises(IlpPacketError) as caught:
        ccp.decode_control(data)
    assert caught.value.field == field


def test_truncated_update_is_refused() -> None:
    data = parse_prepare(UPDATE_COMPLEX).data
    for cut in (10, 40, len(data) - 1):
        with pytest.raises(IlpPacketError):
            ccp.decode_update(data[:cut])


def test_ildcp_vectors() -> None:
    prepare = parse_prepare(ILDCP_REQUEST)
    assert ildcp.is_request(prepare)
    assert serialize(ildcp.request(prepare.expires_at)) == ILDCP_REQUEST
    response = ildcp.IldcpResponse("example.client", 13, "XAM")
    assert serialize(ildcp.fulfill(response)) == ILDCP_FULFILL
    assert ildcp.read_reply(parse_reply(ILDCP_FULFILL)) == response


def test_ildcp_reject_and_garbage() -> None:
    with pytest.raises(ildcp.IldcpError) as caught:
        ildcp.read_reply(Reject("F02", "peer.config", "not a child"))
    assert caught.value.code == "F02"
    with pytest.raises(ildcp.IldcpError) as caught:
        ildcp.read_reply(
            ildcp.fulfill(ildcp.IldcpResponse("test.a", 2, "USD")).__class__(bytes(32), b"\x05test")
        )
    assert caught.value.code == "F01"
