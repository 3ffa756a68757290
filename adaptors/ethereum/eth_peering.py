"""The settlement-account exchange between two Ethereum adaptors (proto/ilphost/ethereum/v1).
Pure: encoding, parsing, and the agreement check."""

from __future__ import annotations

from dataclasses import dataclass

from eth_chain import address_bytes, address_from_bytes
from google.protobuf.message import DecodeError

from sdk.contract import MAX_DATA_BYTES
from sdk.pb.ilphost.ethereum.v1 import peer_message_pb2 as pm


@dataclass(frozen=True)
class SettlementAccount:
    """Where one side settles."""

    chain_id: int
    address: str
    token: str | None

    def to_proto(self) -> pm.SettlementAccount:
        return pm.SettlementAccount(
            chain_id=self.chain_id,
            address=address_bytes(self.address),
            token_contract=address_bytes(self.token) if self.token else b"",
        )

    @classmethod
    def from_proto(cls, message: pm.SettlementAccount) -> SettlementAccount:
        """ValueError saying what is malformed."""
        if message.chain_id == 0:
            raise ValueError("settlement_account.chain_id is missing")
        address = address_from_bytes(message.address, "settlement_account.address")
        token = (
            address_from_bytes(message.token_contract, "settlement_account.token_contract")
            if message.token_contract
            else None
        )
        return cls(message.chain_id, address, token)

    def describe_asset(self) -> str:
        return f"token {self.token}" if self.token else "ETH (no token)"


def request(ours: SettlementAccount) -> bytes:
    return pm.PeerRequest(settlement_account=ours.to_proto()).SerializeToString()


def reply(ours: SettlementAccount) -> bytes:
    return pm.PeerReply(settlement_account=ours.to_proto()).SerializeToString()


def _parse(data: bytes, message: pm.PeerRequest | pm.PeerReply, what: str) -> SettlementAccount:
    if len(data) > MAX_DATA_BYTES:
        raise ValueError(f"{what} has {len(data)} bytes, at most {MAX_DATA_BYTES} allowed")
    try:
        message.ParseFromString(data)
    except DecodeError as exc:
        raise ValueError(f"{what} is not an ilphost.ethereum.v1 message: {exc}") from exc
    if message.WhichOneof("kind") != "settlement_account":
        raise ValueError(f"{what} is not a settlement_account exchange (unknown or unset kind)")
    return SettlementAccount.from_proto(message.settlement_account)


def parse_request(data: bytes) -> SettlementAccount:
    """The peer's settlement account from a PeerRequest; ValueError if malformed."""
    return _parse(data, pm.PeerRequest(), "the peer's request")


def parse_reply(data: bytes) -> SettlementAccount:
    """The peer's settlement account from a PeerReply; ValueError if malformed."""
    return _parse(data, pm.PeerReply(), "the peer's reply")


def disagreement(ours: SettlementAccount, theirs: SettlementAccount) -> str | None:
    """Why the two sides cannot settle with each other (naming both values), or None."""
    if ours.chain_id != theirs.chain_id:
        return (
            f"chain id mismatch: this adaptor settles on chain {ours.chain_id}, "
            f"the peer's on chain {theirs.chain_id}"
        )
    if (ours.token or "").lower() != (theirs.token or "").lower():
        return (
            f"asset mismatch: this adaptor settles in {ours.describe_asset()}, "
            f"the peer's in {theirs.describe_asset()}"
        )
    return None
