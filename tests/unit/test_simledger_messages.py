"""The simledger adaptors' peer messages (host.simledger.peer_messages): protobuf on the wire,
strict parsing."""

from __future__ import annotations

import pytest

from host.pb.ilphost.simledger.v1 import peer_message_pb2
from host.simledger import peer_messages as simledger
from sdk.contract import MAX_DATA_BYTES


def test_the_request_is_a_peer_request_naming_our_ledger_account() -> None:
    data = simledger.ledger_account_request("ledger:alice")
    # Field 1 (ledger_account_exchange, length-delimited) holding field 1 (ledger_account):
    # what any protobuf library in any language writes for this message.
    assert data == b"\x0a\x0e\x0a\x0cledger:alice"
    decoded = peer_message_pb2.PeerRequest.FromString(data)
    assert decoded.WhichOneof("kind") == "ledger_account_exchange"
    assert decoded.ledger_account_exchange.ledger_account == "ledger:alice"
    assert simledger.parse_ledger_account_request(data) == "ledger:alice"


def test_the_reply_is_a_peer_reply_naming_the_repliers_ledger_account() -> None:
    data = simledger.ledger_account_reply("ledger:bob")
    decoded = peer_message_pb2.PeerReply.FromString(data)
    assert decoded.ledger_account_exchange.ledger_account == "ledger:bob"
    assert simledger.parse_ledger_account_reply(data, "ledger:alice") == "ledger:bob"


@pytest.mark.parametrize(
    ("data", "complaint"),
    [
        (b"", "of kind unset"),
        (b"not protobuf", "not an ilphost.simledger.v1.PeerRequest"),
        (b"\x0a\x05\x0a\x03", "not an ilphost.simledger.v1.PeerRequest"),  # truncated
        (b"\x0a\x00", "ledger_account '': must be 1 to 128"),
        (simledger.ledger_account_request("a b"), "must be 1 to 128 characters"),
        (simledger.ledger_account_request("x" * 129), "must be 1 to 128 characters"),
        (simledger.ledger_account_request("ledger:alice"), "this adaptor's own account"),
        (b"\x00" * (MAX_DATA_BYTES + 1), f"at most {MAX_DATA_BYTES}"),
    ],
)
def test_a_malformed_request_is_refused_with_a_reason(data: bytes, complaint: str) -> None:
    with pytest.raises(simledger.PeerMessageError, match=complaint):
        simledger.parse_ledger_account_request(data, "ledger:alice")


def test_an_unknown_kind_from_a_newer_peer_is_refused_not_misread() -> None:
    # A kind this release does not know arrives as an unknown field: the oneof is unset.
    newer = b"\x12\x03abc"  # field 2, length-delimited
    with pytest.raises(simledger.PeerMessageError, match="of kind unset"):
        simledger.parse_ledger_account_request(newer)


def test_the_ledger_account_grammar() -> None:
    assert simledger.is_ledger_account("bank:bob.1~x-y_z")
    for bad in ("", "a b", "a/b", "é", "x" * 129):
        assert not simledger.is_ledger_account(bad)
