"""Connection lifecycle: the one transition table, since/last error/attempts bookkeeping."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sdk.connectivity import TRANSITIONS, ConnectionState, Connectivity, IllegalTransition
from sdk.pb.ilphost.types.v1 import types_pb2

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("source", "target"),
    [(s, t) for s, targets in TRANSITIONS.items() for t in targets],
)
def test_legal_transitions(source: Connectivity, target: Connectivity) -> None:
    moved = ConnectionState("ledger", "settlement-system", source).to(target, now=lambda: T1)
    assert moved.state is target
    assert moved.since == T1


@pytest.mark.parametrize(
    ("source", "target"),
    [(s, t) for s in Connectivity for t in Connectivity if t is not s and t not in TRANSITIONS[s]],
)
def test_illegal_transitions_raise(source: Connectivity, target: Connectivity) -> None:
    with pytest.raises(IllegalTransition, match=f"{source.name} -> {target.name}"):
        ConnectionState("ledger", "settlement-system", source).to(target)


def test_failures_count_attempts_and_ready_resets() -> None:
    c = ConnectionState("ledger", "settlement-system")
    c = c.to(Connectivity.CONNECTING).to(Connectivity.TRANSIENT_FAILURE, "refused")
    c = c.to(Connectivity.CONNECTING).to(Connectivity.TRANSIENT_FAILURE, "timeout")
    assert (c.attempts, c.last_error) == (2, "timeout")
    c = c.to(Connectivity.CONNECTING)
    assert c.last_error == "timeout"  # kept while retrying, for the operator
    c = c.to(Connectivity.READY)
    assert (c.attempts, c.last_error) == (0, "")


def test_same_state_keeps_since() -> None:
    c = ConnectionState("x", "peer").to(Connectivity.CONNECTING, now=lambda: T0)
    again = c.to(Connectivity.CONNECTING, "still trying", now=lambda: T1)
    assert again.since == T0
    assert again.last_error == "still trying"


def test_shutdown_is_final() -> None:
    c = ConnectionState("x", "peer").to(Connectivity.SHUTDOWN)
    with pytest.raises(IllegalTransition):
        c.to(Connectivity.CONNECTING)


def test_wire_form() -> None:
    c = ConnectionState("ledger", "settlement-system").to(Connectivity.CONNECTING, now=lambda: T0)
    message = c.to_proto()
    assert message.state == types_pb2.CONNECTIVITY_STATE_CONNECTING
    assert message.since.ToDatetime(tzinfo=UTC) == T0
    assert (message.name, message.kind, message.attempts) == ("ledger", "settlement-system", 0)
