"""peer.outcome messages (host.ilp.outcome): encoding, decoding, and the checks of both ends."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from host.ilp import Fulfill, IlpPacketError, Prepare, Reject, outcome, parse_prepare, serialize
from host.ilp.outcome import Outcome, OutcomeError, Status

FULFILLMENT = bytes(range(32))
CONDITION = hashlib.sha256(FULFILLMENT).digest()
WHEN = datetime(2026, 12, 2, tzinfo=UTC)


def test_a_query_carries_the_packet_id_and_survives_the_wire() -> None:
    packet_id = outcome.wire_packet_id(b"some prepare")
    query = parse_prepare(serialize(outcome.query(packet_id, WHEN)))
    assert outcome.is_query(query) and query.amount == 0
    assert outcome.read_query(query) == packet_id
    with pytest.raises(ValueError, match="32 bytes"):
        outcome.query(b"short", WHEN)


@pytest.mark.parametrize(
    ("prepare", "problem"),
    [
        (Prepare(0, WHEN, bytes(32), outcome.OUTCOME_ADDRESS, bytes(32)), "condition"),
        (Prepare(1, WHEN, outcome.SETTLE_CONDITION, outcome.OUTCOME_ADDRESS, bytes(32)), "amount"),
        (Prepare(0, WHEN, outcome.SETTLE_CONDITION, outcome.OUTCOME_ADDRESS, b"x"), "32-byte"),
    ],
)
def test_a_malformed_query_is_f01(prepare: Prepare, problem: str) -> None:
    with pytest.raises(OutcomeError, match=problem) as caught:
        outcome.read_query(prepare)
    assert caught.value.code == "F01"


@pytest.mark.parametrize(
    "answer",
    [
        Outcome(Status.FULFILLED, FULFILLMENT),
        Outcome(Status.REJECTED),
        Outcome(Status.PENDING),
        Outcome(Status.UNKNOWN),
    ],
)
def test_every_answer_round_trips(answer: Outcome) -> None:
    assert outcome.read_reply(outcome.answer(answer), CONDITION) == answer


def test_the_encoding_is_the_documented_one() -> None:
    assert outcome.encode_answer(Outcome(Status.REJECTED)) == bytes([3, 0])
    assert outcome.encode_answer(Outcome(Status.FULFILLED, FULFILLMENT)) == (
        bytes([2, 32]) + FULFILLMENT
    )
    with pytest.raises(ValueError, match="only with it"):
        outcome.encode_answer(Outcome(Status.REJECTED, FULFILLMENT))
    with pytest.raises(ValueError, match="not an answer"):
        outcome.encode_answer(Outcome(Status.UNSUPPORTED))


def test_a_fulfillment_that_is_not_the_preimage_is_refused() -> None:
    wrong = outcome.answer(Outcome(Status.FULFILLED, bytes(32)))
    with pytest.raises(OutcomeError, match="does not hash") as caught:
        outcome.read_reply(wrong, CONDITION)
    assert caught.value.code == "F05"


@pytest.mark.parametrize(
    "data",
    [b"", bytes([9, 0]), bytes([2, 0]), bytes([3, 1, 0]), bytes([3, 0, 0])],
)
def test_a_malformed_answer_is_refused(data: bytes) -> None:
    with pytest.raises(IlpPacketError):
        outcome.decode_answer(data)
    with pytest.raises(OutcomeError):
        outcome.read_reply(Fulfill(outcome.SETTLE_FULFILLMENT, data), CONDITION)


def test_a_reject_means_the_peer_does_not_speak_the_query() -> None:
    reply = Reject("F02", "test.peer", "unknown peer.* address")
    assert outcome.read_reply(reply, CONDITION).status == Status.UNSUPPORTED


def test_docs_show_the_encoding_and_the_grace_of_the_code() -> None:
    from pathlib import Path

    from host.connector.inflight import GRACE

    doc = (Path(__file__).resolve().parents[2] / "docs" / "peering.md").read_text()
    rejected = outcome.encode_answer(Outcome(Status.REJECTED)).hex(" ")
    fulfilled = outcome.encode_answer(Outcome(Status.FULFILLED, FULFILLMENT))[:2].hex(" ")
    assert f'`{rejected}` is "rejected"; `{fulfilled}` followed by 32 bytes' in doc
    assert f"expired plus {GRACE:g} s" in doc
    assert f"`{outcome.OUTCOME_ADDRESS}`" in doc
