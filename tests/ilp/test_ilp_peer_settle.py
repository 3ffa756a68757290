"""peer.settle messages between settlement engines (RFC 0038)."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime
from typing import Any

import pytest

from host.ilp import ErrorCode, Fulfill, Reject, parse_prepare, parse_reply, serialize
from host.ilp.peer_settle import (
    SETTLE_ADDRESS,
    SETTLE_CONDITION,
    SETTLE_FULFILLMENT,
    SettleMessageError,
    is_settle_prepare,
    settle_fulfill,
    settle_message,
    settle_prepare,
    settle_reject,
    settle_reply,
)

EXPIRY = datetime(2030, 6, 1, 12, 0, 0, tzinfo=UTC)


def test_condition_is_the_hash_of_32_zero_bytes() -> None:
    assert SETTLE_FULFILLMENT == b"\x00" * 32
    assert SETTLE_CONDITION.hex() == (
        "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925"
    )
    # Not the hash of the empty string, which the RFC 0038 text prints by mistake.
    assert hashlib.sha256(b"").digest() != SETTLE_CONDITION
    assert settle_fulfill(b"").condition == SETTLE_CONDITION


def test_message_round_trip_over_the_wire() -> None:
    prepare = settle_prepare(b'{"type":"paychan-claim"}', EXPIRY)
    assert (prepare.amount, prepare.destination) == (0, SETTLE_ADDRESS)
    received = parse_prepare(serialize(prepare))
    assert is_settle_prepare(received)
    assert settle_message(received) == b'{"type":"paychan-claim"}'

    reply = parse_reply(serialize(settle_fulfill(b"ok")))
    assert isinstance(reply, Fulfill)
    assert reply.condition == prepare.execution_condition
    assert settle_reply(reply) == b"ok"


def test_interledger_rs_ccp_prepare_uses_the_same_condition() -> None:
    # interledger-rs crates/interledger-ccp/src/fixtures.rs, CONTROL_REQUEST_SERIALIZED
    ccp = parse_prepare(
        bytes.fromhex(
            "0c6c0000000000000000323031353036313630303031303030303066687aadf862bd776c8fc18b8e"
            "9f8e20089714856ee233b3902a591d0d5f292512706565722e726f7574652e636f6e74726f6c1f01"
            "70d1a134a0df4f47964f6e19e2ab379000000020010203666f6f03626172"
        )
    )
    assert ccp.execution_condition == SETTLE_CONDITION
    assert not is_settle_prepare(ccp)


@pytest.mark.parametrize(
    ("changes", "code", "words"),
    [
        ({"amount": 1}, ErrorCode.F06_UNEXPECTED_PAYMENT, "amount 0"),
        ({"execution_condition": b"\x01" * 32}, ErrorCode.F05_WRONG_CONDITION, "66687aad"),
        ({"destination": "peer.config"}, ErrorCode.F02_UNREACHABLE, "not 'peer.settle'"),
    ],
)
def test_malformed_settlement_messages(changes: dict[str, Any], code: str, words: str) -> None:
    prepare = dataclasses.replace(settle_prepare(b"m", EXPIRY), **changes)
    with pytest.raises(SettleMessageError, match=words) as caught:
        settle_message(prepare)
    assert caught.value.code == code


def test_reject_is_triggered_by_peer_settle() -> None:
    reject = settle_reject(ErrorCode.T00_INTERNAL_ERROR, "engine unavailable", b"detail")
    assert reject == Reject("T00", SETTLE_ADDRESS, "engine unavailable", b"detail")
    with pytest.raises(SettleMessageError, match="engine unavailable") as caught:
        settle_reply(parse_reply(serialize(reject)))
    assert (caught.value.code, caught.value.data) == ("T00", b"detail")


def test_wrong_fulfillment_is_refused() -> None:
    with pytest.raises(SettleMessageError, match="does not fulfill") as caught:
        settle_reply(Fulfill(b"\x01" * 32, b"ok"))
    assert caught.value.code == ErrorCode.F05_WRONG_CONDITION
