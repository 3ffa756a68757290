"""``peer.settle`` messages: settlement engines talking to each other over an ILP link.

RFC 0038 ("Exchanging messages") carries an engine's message to the peer's engine as the data
of a Prepare addressed to ``peer.settle`` with amount 0; the peer answers with a Fulfill whose
data is its engine's reply, or a Reject triggered by ``peer.settle``. The packet never leaves
the bilateral link (``peer.`` addresses are not forwarded).

The condition is SHA-256 of the fixed fulfillment of 32 zero bytes, ``66687aad...``. The RFC
text prints ``e3b0c442...``, the hash of the empty string, by mistake; deployed implementations
(interledger-rs, the RFC 0038 engines) use ``66687aad...``, and so does this module.

Pure functions: the connector decides the expiry and passes it in.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Final

from host.ilp.errors import ErrorCode
from host.ilp.packet import Fulfill, Prepare, Reject, Reply, make_reject

SETTLE_ADDRESS: Final = "peer.settle"
#: The fulfillment of every settlement message: 32 zero bytes.
SETTLE_FULFILLMENT: Final = bytes(32)
#: SHA-256 of :data:`SETTLE_FULFILLMENT` (``66687aad...``).
SETTLE_CONDITION: Final = hashlib.sha256(SETTLE_FULFILLMENT).digest()
#: How long a connector usually gives a settlement message (interledger-rs uses 30 s).
DEFAULT_TIMEOUT: Final = timedelta(seconds=30)


class SettleMessageError(ValueError):
    """A packet that is not a well-formed settlement message (or a refused one).

    ``code`` is the ILP error code to answer with (for a Prepare) or the one the peer
    answered with (for a Reject); ``data`` is the Reject's data (the peer engine's response,
    if it gave one).
    """

    def __init__(self, code: str, message: str, data: bytes = b"") -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.data = data


def settle_prepare(message: bytes, expires_at: datetime) -> Prepare:
    """The Prepare that carries an engine's ``message`` to the peer's engine."""
    return Prepare(
        amount=0,
        expires_at=expires_at,
        execution_condition=SETTLE_CONDITION,
        destination=SETTLE_ADDRESS,
        data=message,
    )


def is_settle_prepare(prepare: Prepare) -> bool:
    """Whether a Prepare is addressed to ``peer.settle`` (and so goes to the engine)."""
    return prepare.destination == SETTLE_ADDRESS


def settle_message(prepare: Prepare) -> bytes:
    """The engine's message inside a ``peer.settle`` Prepare; SettleMessageError if malformed.

    A settlement message moves no money: a non-zero amount is refused (F06 Unexpected Payment)
    rather than credited, and a condition other than ``66687aad...`` is refused as F05 Wrong
    Condition, since the fulfillment of 32 zero bytes could not fulfill it.
    """
    if not is_settle_prepare(prepare):
        raise SettleMessageError(
            ErrorCode.F02_UNREACHABLE,
            f"destination is {prepare.destination!r}, not {SETTLE_ADDRESS!r}",
        )
    if prepare.amount != 0:
        raise SettleMessageError(
            ErrorCode.F06_UNEXPECTED_PAYMENT,
            f"a settlement message carries amount 0, got {prepare.amount}",
        )
    if prepare.execution_condition != SETTLE_CONDITION:
        raise SettleMessageError(
            ErrorCode.F05_WRONG_CONDITION,
            "a settlement message's condition is SHA-256 of 32 zero bytes "
            f"({SETTLE_CONDITION.hex()}), got {prepare.execution_condition.hex()}",
        )
    return prepare.data


def settle_fulfill(reply: bytes) -> Fulfill:
    """The Fulfill that returns the local engine's ``reply`` to the peer."""
    return Fulfill(fulfillment=SETTLE_FULFILLMENT, data=reply)


def settle_reject(code: str, message: str, data: bytes = b"") -> Reject:
    """The Reject for a settlement message the local engine (or connector) refused."""
    return make_reject(code, SETTLE_ADDRESS, message, data)


def settle_reply(reply: Reply) -> bytes:
    """The peer engine's reply from the answer to a settlement message.

    A Reject, or a Fulfill whose fulfillment is not the 32 zero bytes, raises
    SettleMessageError with the peer's code (F05 for a wrong fulfillment).
    """
    if isinstance(reply, Reject):
        detail = f"peer refused the settlement message: {reply.message or '(no message)'}"
        raise SettleMessageError(reply.code, detail, reply.data)
    if reply.fulfillment != SETTLE_FULFILLMENT:
        raise SettleMessageError(
            ErrorCode.F05_WRONG_CONDITION,
            f"fulfillment {reply.fulfillment.hex()} does not fulfill the settlement condition",
        )
    return reply.data
