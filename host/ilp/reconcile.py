"""``peer.reconcile``: two hosts of this project compare their clearing books. Pure.

Each side sends the other its running totals for their bilateral account (:class:`Totals`):
the asker as the data of a Prepare to ``peer.reconcile`` (amount 0, the peer-protocol
condition, as for ``peer.config`` and ``peer.settle``), the answerer as the data of a Fulfill
of 32 zero bytes. Like every ``peer.*`` packet it never leaves the bilateral link. A peer that
does not speak it refuses the address: the JavaScript ``ilp-connector`` with F01 ("unknown peer
protocol"), a host without a book reader with F02; :func:`read_reply` reports either as
:class:`NotSupported` (a host that speaks it never refuses a well-formed request with them).

Encoding (OER, as the packets): version (uint8, 1), asset scale (uint8), the sign of the
balance (uint8: 0 for >= 0, 1 for < 0) and its magnitude, then settled out, settled in, in
flight in, in flight out, each a variable-length unsigned integer of at most
:data:`MAX_AMOUNT_BYTES` bytes. Fields may be appended later under the same version: a reader
takes the fields it knows and ignores any bytes after them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

from host.ilp.errors import ErrorCode
from host.ilp.ildcp import PEER_PROTOCOL_CONDITION, PEER_PROTOCOL_FULFILLMENT
from host.ilp.oer import IlpPacketError, Reader, var_uint
from host.ilp.packet import Fulfill, Prepare, Reject, Reply

RECONCILE_ADDRESS: Final = "peer.reconcile"
VERSION: Final = 1
#: Amounts of up to 78 decimal digits (the contract's longest) fit 33 bytes; a margin on top.
MAX_AMOUNT_BYTES: Final = 40


@dataclass(frozen=True, slots=True)
class Totals:
    """One side's book of the account with the other side, at the account's scale.

    Sign convention of the host: ``balance`` is what the peer owes the side that reports it.
    ``settled_out`` is everything the balance was raised by for settlements this side paid the
    peer (queued, on their way or done, and any leftover below one ledger unit);
    ``settled_in`` everything it was lowered by for the peer's settlements credited here.
    ``in_flight_in`` and ``in_flight_out`` are the amounts of packets reserved but not yet
    fulfilled or rejected (from the peer, to the peer) when the totals were taken.
    """

    asset_scale: int
    balance: int
    settled_out: int
    settled_in: int
    in_flight_in: int = 0
    in_flight_out: int = 0

    @property
    def packets_net(self) -> int:
        """Fulfilled packets from the peer minus those to the peer: the balance without the
        settlements (what the two sides must agree on, with opposite signs)."""
        return self.balance - self.settled_out + self.settled_in

    @property
    def quiet(self) -> bool:
        """No packet in flight when the totals were taken."""
        return self.in_flight_in == 0 and self.in_flight_out == 0


class NotSupported(Exception):
    """The peer does not speak ``peer.reconcile`` (a connector of another project)."""


class ReconcileError(ValueError):
    """A ``peer.reconcile`` request or answer that is malformed, or refused by the peer."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def encode(totals: Totals) -> bytes:
    """The OER data carrying ``totals``."""
    if not 0 <= totals.asset_scale <= 255:
        raise ValueError(f"asset scale must be 0..255, got {totals.asset_scale}")
    return (
        bytes((VERSION, totals.asset_scale, 1 if totals.balance < 0 else 0))
        + var_uint(abs(totals.balance))
        + var_uint(totals.settled_out)
        + var_uint(totals.settled_in)
        + var_uint(totals.in_flight_in)
        + var_uint(totals.in_flight_out)
    )


def decode(data: bytes) -> Totals:
    """The totals in ``data``; IlpPacketError if malformed or of an unknown version."""
    reader = Reader(data)
    version = reader.read_uint8("Totals.version")
    if version != VERSION:
        raise IlpPacketError("Totals.version", f"version {version} is not known (1 is)")
    scale = reader.read_uint8("Totals.asset_scale")
    sign = reader.read_uint8("Totals.balance_sign")
    if sign not in (0, 1):
        raise IlpPacketError("Totals.balance_sign", f"must be 0 or 1, got {sign}")
    magnitude = reader.read_var_uint("Totals.balance", MAX_AMOUNT_BYTES)
    if sign == 1 and magnitude == 0:
        raise IlpPacketError("Totals.balance", "a negative zero")
    amounts = [
        reader.read_var_uint(f"Totals.{field}", MAX_AMOUNT_BYTES)
        for field in ("settled_out", "settled_in", "in_flight_in", "in_flight_out")
    ]
    return Totals(scale, -magnitude if sign else magnitude, *amounts)


def is_request(prepare: Prepare) -> bool:
    """Whether a Prepare is addressed to ``peer.reconcile``."""
    return prepare.destination == RECONCILE_ADDRESS


def request(totals: Totals, expires_at: datetime) -> Prepare:
    """The Prepare asking the peer for its totals, carrying ours."""
    return Prepare(0, expires_at, PEER_PROTOCOL_CONDITION, RECONCILE_ADDRESS, encode(totals))


def read_request(prepare: Prepare) -> Totals:
    """The asker's totals; ReconcileError (F01) if the request is malformed."""
    if prepare.amount != 0:
        raise ReconcileError(ErrorCode.F01_INVALID_PACKET, "peer.reconcile carries no amount")
    if prepare.execution_condition != PEER_PROTOCOL_CONDITION:
        raise ReconcileError(
            ErrorCode.F01_INVALID_PACKET, "the condition must be the peer protocol condition"
        )
    try:
        return decode(prepare.data)
    except IlpPacketError as exc:
        raise ReconcileError(ErrorCode.F01_INVALID_PACKET, str(exc)) from None


def fulfill(totals: Totals) -> Fulfill:
    """The answer: our totals."""
    return Fulfill(PEER_PROTOCOL_FULFILLMENT, encode(totals))


def read_reply(reply: Reply) -> Totals:
    """The peer's totals. NotSupported for F01 or F02 (a peer that has no such protocol);
    ReconcileError for any other Reject or a malformed Fulfill."""
    if isinstance(reply, Reject):
        if reply.code in (ErrorCode.F01_INVALID_PACKET, ErrorCode.F02_UNREACHABLE):
            raise NotSupported(f"the peer does not speak {RECONCILE_ADDRESS} ({reply.message})")
        raise ReconcileError(reply.code, reply.message or "(no message)")
    if reply.fulfillment != PEER_PROTOCOL_FULFILLMENT:
        raise ReconcileError(ErrorCode.F05_WRONG_CONDITION, "the fulfillment is not 32 zero bytes")
    try:
        return decode(reply.data)
    except IlpPacketError as exc:
        raise ReconcileError(ErrorCode.F01_INVALID_PACKET, str(exc)) from None
