"""``peer.outcome``: "what became of the packet I sent you?", asked of a direct peer. Pure.

A host that crashed with a forwarded Prepare in flight does not know whether the next hop
fulfilled it. It asks that peer with a Prepare to ``peer.outcome``: amount 0, the peer-protocol
condition (as ``peer.config`` and ``peer.settle``), and as data the packet id (32 bytes, see
:func:`wire_packet_id`). The peer answers from its durable record with a Fulfill of 32 zero
bytes whose data is, in OER:

- ``status`` (uint8): 0 unknown (never seen, or not recorded), 1 pending (still in flight
  there), 2 fulfilled, 3 rejected;
- ``fulfillment`` (variable-length octet string): the packet's 32-byte fulfillment when
  ``status`` is fulfilled, empty otherwise.

The asker checks the proof (SHA-256 of the fulfillment is the packet's condition) before it
believes "fulfilled". A peer that does not speak the protocol answers a Reject (ilp-connector
rejects it as an unknown peer protocol, older hosts with F02): :func:`read_reply` says
UNSUPPORTED.

**The packet id** is SHA-256 of the Prepare exactly as it crossed the link (its OER bytes).
Both ends of a link see the same bytes, so both compute the same id without agreeing on anything
else, and it differs from one link to the next (each hop re-issues the Prepare with an earlier
expiry). Two Prepares with the same id are byte-identical: the same payment replayed (which the
balance keys already treat as one packet), because two honest payments differ at least in their
execution condition, which the receiver derives from fresh randomness (STREAM).
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from host.ilp.errors import ErrorCode
from host.ilp.oer import IlpPacketError, Reader, var_octets
from host.ilp.packet import Fulfill, Prepare, Reject, Reply
from host.ilp.peer_settle import SETTLE_CONDITION, SETTLE_FULFILLMENT

OUTCOME_ADDRESS: Final = "peer.outcome"
#: Length of a packet id (SHA-256).
PACKET_ID_LENGTH: Final = 32


class Status(enum.IntEnum):
    """What the peer's record says of a packet."""

    UNKNOWN = 0
    PENDING = 1
    FULFILLED = 2
    REJECTED = 3
    #: Not on the wire: the peer answered the query with a Reject (it does not speak it).
    UNSUPPORTED = 255


_WIRE = frozenset({Status.UNKNOWN, Status.PENDING, Status.FULFILLED, Status.REJECTED})


class OutcomeError(ValueError):
    """A malformed query or answer; ``code`` is the ILP error code to answer a query with."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Outcome:
    """A peer's answer: the status, and the fulfillment when fulfilled (else empty)."""

    status: Status
    fulfillment: bytes = b""


def wire_packet_id(prepare_bytes: bytes) -> bytes:
    """The id both ends of a link give a Prepare: SHA-256 of its bytes on that link."""
    return hashlib.sha256(prepare_bytes).digest()


def query(packet_id: bytes, expires_at: datetime) -> Prepare:
    """The Prepare asking a peer what became of ``packet_id``."""
    if len(packet_id) != PACKET_ID_LENGTH:
        raise ValueError(f"a packet id is {PACKET_ID_LENGTH} bytes, got {len(packet_id)}")
    return Prepare(0, expires_at, SETTLE_CONDITION, OUTCOME_ADDRESS, packet_id)


def is_query(prepare: Prepare) -> bool:
    """Whether a Prepare asks this host for a packet's outcome."""
    return prepare.destination == OUTCOME_ADDRESS


def read_query(prepare: Prepare) -> bytes:
    """The packet id a query asks about; OutcomeError (F01) if malformed."""
    if prepare.execution_condition != SETTLE_CONDITION:
        raise OutcomeError(
            ErrorCode.F01_INVALID_PACKET, "the condition must be the peer protocol condition"
        )
    if prepare.amount != 0:
        raise OutcomeError(ErrorCode.F01_INVALID_PACKET, "an outcome query carries no amount")
    if len(prepare.data) != PACKET_ID_LENGTH:
        raise OutcomeError(
            ErrorCode.F01_INVALID_PACKET,
            f"the data must be a {PACKET_ID_LENGTH}-byte packet id, got {len(prepare.data)} bytes",
        )
    return prepare.data


def encode_answer(outcome: Outcome) -> bytes:
    """The OER data of an answer."""
    if outcome.status not in _WIRE:
        raise ValueError(f"{outcome.status.name} is not an answer")
    if (outcome.status == Status.FULFILLED) != bool(outcome.fulfillment):
        raise ValueError("a fulfillment goes with the fulfilled status, and only with it")
    return bytes((outcome.status,)) + var_octets(outcome.fulfillment)


def answer(outcome: Outcome) -> Fulfill:
    """The Fulfill that carries an answer."""
    return Fulfill(SETTLE_FULFILLMENT, encode_answer(outcome))


def decode_answer(data: bytes) -> Outcome:
    """The answer in a Fulfill's data; IlpPacketError if malformed."""
    reader = Reader(data)
    raw = reader.read_uint8("Outcome.status")
    fulfillment = bytes(reader.read_var_octets("Outcome.fulfillment", PACKET_ID_LENGTH))
    reader.expect_end("Outcome")
    if raw not in _WIRE:
        raise IlpPacketError("Outcome.status", f"unknown status {raw}")
    status = Status(raw)
    if status == Status.FULFILLED and len(fulfillment) != PACKET_ID_LENGTH:
        raise IlpPacketError("Outcome.fulfillment", "a fulfillment is 32 bytes")
    if status != Status.FULFILLED and fulfillment:
        raise IlpPacketError("Outcome.fulfillment", "only a fulfilled packet has one")
    return Outcome(status, fulfillment)


def read_reply(reply: Reply, condition: bytes) -> Outcome:
    """What a peer's reply says of a packet whose execution condition is ``condition``.

    A Reject is UNSUPPORTED (the peer does not answer the query). OutcomeError for a
    malformed answer, or a fulfillment that is not the preimage of ``condition``.
    """
    if isinstance(reply, Reject):
        return Outcome(Status.UNSUPPORTED)
    if reply.fulfillment != SETTLE_FULFILLMENT:
        raise OutcomeError(ErrorCode.F05_WRONG_CONDITION, "the fulfillment is not 32 zero bytes")
    try:
        outcome = decode_answer(reply.data)
    except IlpPacketError as exc:
        raise OutcomeError(ErrorCode.F01_INVALID_PACKET, str(exc)) from None
    if (
        outcome.status == Status.FULFILLED
        and hashlib.sha256(outcome.fulfillment).digest() != condition
    ):
        raise OutcomeError(
            ErrorCode.F05_WRONG_CONDITION, "the fulfillment does not hash to the condition"
        )
    return outcome
