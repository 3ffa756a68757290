"""Failure domains of a host split in two processes (proposal 2), with real processes and SIGKILL.

Alice runs ``ilp-host connector`` and ``ilp-host engine`` from one config file; Bob runs
``ilp-host run``. What each test proves:

- the engine down: the connector keeps clearing packets within its credit limits, the balance
  changes wait durably in its log, and settlement happens when the engine returns, once;
- the engine killed right after it debited a settlement (before it told the connector or paid):
  after a restart it pays once, and the connector ends up with the engine's balance;
- the connector down: the engine still pays on the ledger (an operator's settlement), retries
  telling the connector, and both agree once the connector returns; nothing counts twice.

The verdict is the same as for the other crash tests (harness.Pair.settled_books): one ledger
transfer per settlement, both sides' books add up, and the connector's balance equals the
engine's.
"""

from __future__ import annotations

import signal

import pytest

from host.pb.ilphost.admin.v1 import admin_pb2
from sdk import failpoints
from tests.crash.harness import Pair, running_pair

pytestmark = pytest.mark.slow

SPLIT_ALICE = ("external", "internal")
PACKET = 100_000  # micro-dollars
THRESHOLD = -300_000  # Alice settles (back to 0) once she owes Bob this much


def engine_rows(pair: Pair) -> list[tuple[str, str]]:
    return [(direction, state) for _, direction, state in pair.alice.engine_rows()]


def test_engine_down_connector_clears_and_settlement_resumes_when_it_returns() -> None:
    with running_pair(alice_threshold=THRESHOLD, engines=SPLIT_ALICE) as pair:
        pair.alice.kill("engine")
        # Past the threshold, within the credit limit (-2 000 000): cleared without the engine.
        sent = pair.send_packets(PACKET, 5)
        pair.wait_for(
            "the connector to see its engine gone",
            lambda: True if not pair.alice.connector_view()[1].connected else None,
        )
        balance, engine = pair.alice.connector_view()
        assert balance == -sent
        assert engine.external and engine.unacknowledged >= 5
        assert engine_rows(pair) == [], "nothing can settle while the engine is down"

        pair.alice.start(roles=("engine",))
        pair.wait_ready(pair.alice, link=False)
        # The engine replays the changes in their order: the third crosses the threshold and
        # settles 300 000, as it would have live; the last two leave -200 000.
        pair.settled_books(sent, settlements=1)
        balance, engine = pair.alice.connector_view()
        assert balance == -sent + 300_000 and engine.connected
        pair.wait_for(
            "the engine to acknowledge every change",
            lambda: True if pair.alice.connector_view()[1].unacknowledged == 0 else None,
        )


def test_engine_killed_after_its_debit_pays_once_and_the_connector_agrees() -> None:
    point = failpoints.ENGINE_AFTER_DEBIT
    with running_pair(alice_armed=(point,), alice_threshold=THRESHOLD, engines=SPLIT_ALICE) as pair:
        # The third packet takes Alice to the threshold: her engine debits 300 000 and dies
        # before it pays or pushes the debit. The connector does not notice: every packet
        # is fulfilled.
        sent = pair.send_packets(PACKET, 5, concurrency=1)
        assert pair.alice.wait_exited("engine") == -signal.SIGKILL
        assert f"failpoint {point}" in pair.alice.log_text()
        assert engine_rows(pair) == [("outgoing", "pending")]
        assert pair.transfers_from("alice-ledger") == []
        balance, _ = pair.alice.connector_view()
        assert balance == -sent, "the debit must not reach the connector before it is pushed"

        pair.alice.start(roles=("engine",))
        pair.wait_ready(pair.alice, link=False)
        pair.settled_books(sent, settlements=1)
        balance, _ = pair.alice.connector_view()
        assert balance == -sent + 300_000


def test_connector_down_the_engine_pays_and_retries_until_the_connector_returns() -> None:
    with running_pair(engines=SPLIT_ALICE) as pair:
        sent = pair.send_packets(10_000, 10)
        pair.wait_for("Alice's connector and engine in step", lambda: pair.alice.in_step() or None)
        pair.alice.kill("connector")

        # The ledger does not need the connector: the settlement is paid, and Bob credits it.
        settlement = pair.settle(50_000, "split-settle-1")
        pair.wait_for(
            "the ledger transfer",
            lambda: True if pair.transfers_from("alice-ledger") else None,
        )
        pair.wait_for(
            "the engine to notice the connector is gone",
            lambda: True if "lost the connector" in pair.alice.log_text() else None,
        )
        # What the engine's operator sees meanwhile: the debit waits to be pushed.
        link = pair.alice.admin.GetConnectorLink(admin_pb2.GetConnectorLinkRequest(), timeout=10)
        assert not link.connected and link.effects_waiting == 1, link

        pair.alice.start(roles=("connector",))
        pair.settled_books(sent, settlements=1)
        link = pair.alice.admin.GetConnectorLink(admin_pb2.GetConnectorLinkRequest(), timeout=10)
        assert link.connected and link.effects_waiting == 0 and link.effects_pushed >= 1, link
        assert [t[0] for t in pair.transfers_from("alice-ledger")] == [
            f"alice-ledger:{settlement.id}"
        ]
        balance, _ = pair.alice.connector_view()
        assert balance == -sent + 50_000
        pair.wait_for(
            "the engine to follow the restarted connector",
            lambda: True if pair.alice.connector_view()[1].connected else None,
        )
