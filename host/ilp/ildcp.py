"""ILDCP, the Interledger Dynamic Configuration Protocol (interledger/rfcs 0031). Pure.

A child asks its parent for its configuration with a Prepare to ``peer.config``: amount 0, the
peer-protocol condition (SHA-256 of 32 zero bytes, as for ``peer.settle``), empty data. The
parent answers with a Fulfill of 32 zero bytes whose data is, in OER: the child's ILP address
(variable-length octet string, ASCII), the asset scale (uint8), the asset code (variable-length
octet string, UTF-8). Like every ``peer.*`` packet, it never leaves the bilateral link.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

from host.ilp import address
from host.ilp.errors import ErrorCode
from host.ilp.oer import IlpPacketError, Reader, var_octets
from host.ilp.packet import Fulfill, Prepare, Reject, Reply
from host.ilp.peer_settle import SETTLE_CONDITION, SETTLE_FULFILLMENT

ILDCP_ADDRESS: Final = "peer.config"
#: The peer-protocol condition and fulfillment, shared by every ``peer.*`` protocol.
PEER_PROTOCOL_CONDITION: Final = SETTLE_CONDITION
PEER_PROTOCOL_FULFILLMENT: Final = SETTLE_FULFILLMENT
#: Longest asset code accepted (RFC 0031 gives none; codes are short, e.g. "USD", "XRP").
MAX_ASSET_CODE: Final = 255


class IldcpError(ValueError):
    """An ILDCP answer that gives no configuration; ``code`` is the peer's (or F01)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class IldcpResponse:
    """What a parent tells its child: the child's address and the account's asset."""

    client_address: str
    asset_scale: int
    asset_code: str

    def __post_init__(self) -> None:
        if not address.is_valid(self.client_address):
            raise IlpPacketError(
                "IldcpResponse.client_address", address.why_invalid(self.client_address)
            )
        if not 0 <= self.asset_scale <= 255:
            raise IlpPacketError(
                "IldcpResponse.asset_scale", f"must be 0..255, got {self.asset_scale}"
            )
        if len(self.asset_code.encode("utf-8")) > MAX_ASSET_CODE:
            raise IlpPacketError("IldcpResponse.asset_code", f"exceeds {MAX_ASSET_CODE} bytes")


def is_request(prepare: Prepare) -> bool:
    """Whether a Prepare asks for this host's configuration of its sender."""
    return prepare.destination == ILDCP_ADDRESS


def request(expires_at: datetime) -> Prepare:
    """The Prepare a child sends to learn its configuration."""
    return Prepare(0, expires_at, PEER_PROTOCOL_CONDITION, ILDCP_ADDRESS, b"")


def encode_response(response: IldcpResponse) -> bytes:
    """The OER data of an ILDCP response."""
    return (
        var_octets(response.client_address.encode("ascii"))
        + bytes((response.asset_scale,))
        + var_octets(response.asset_code.encode("utf-8"))
    )


def decode_response(data: bytes) -> IldcpResponse:
    """The configuration in the data of an ILDCP Fulfill; IlpPacketError if malformed."""
    reader = Reader(data)
    raw_address = bytes(reader.read_var_octets("IldcpResponse.client_address", 1023))
    scale = reader.read_uint8("IldcpResponse.asset_scale")
    raw_code = bytes(reader.read_var_octets("IldcpResponse.asset_code", MAX_ASSET_CODE))
    reader.expect_end("IldcpResponse")
    try:
        client_address = raw_address.decode("ascii")
        asset_code = raw_code.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise IlpPacketError("IldcpResponse", f"not text: {exc.reason}") from None
    return IldcpResponse(client_address, scale, asset_code)


def fulfill(response: IldcpResponse) -> Fulfill:
    """The parent's answer."""
    return Fulfill(PEER_PROTOCOL_FULFILLMENT, encode_response(response))


def read_reply(reply: Reply) -> IldcpResponse:
    """The configuration in a parent's reply; IldcpError for a Reject or a malformed Fulfill."""
    if isinstance(reply, Reject):
        raise IldcpError(reply.code, reply.message or "(no message)")
    if reply.fulfillment != PEER_PROTOCOL_FULFILLMENT:
        raise IldcpError(ErrorCode.F05_WRONG_CONDITION, "the fulfillment is not 32 zero bytes")
    try:
        return decode_response(reply.data)
    except IlpPacketError as exc:
        raise IldcpError(ErrorCode.F01_INVALID_PACKET, str(exc)) from None
