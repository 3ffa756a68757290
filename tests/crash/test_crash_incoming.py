"""Bob's incoming settlement, crashed between credit and acknowledgement, is credited once.

Bob's host runs with the failpoint ``engine.after-credit``: it dies (SIGKILL, its adaptor with
it) right after the transaction that lowered his balance for Alice's ledger payment committed,
before ReceiveMoney told the adaptor. After a restart the adaptor re-delivers the settlement
(it was never acknowledged), the engine finds it credited and only acknowledges it: the balance
moved once, the settlement is COMPLETED, and the adaptor stops re-delivering it.
"""

from __future__ import annotations

import signal

import pytest

from host.pb.ilphost.admin.v1 import admin_pb2
from sdk import failpoints
from tests.crash.harness import COMPLETED, OUTGOING, SERVING, running_pair

pytestmark = pytest.mark.slow

PACKET = 10_000
PACKETS = 10
SETTLE = 50_000


def test_incoming_settlement_killed_before_acknowledgement_is_credited_once() -> None:
    with running_pair(bob_armed=(failpoints.ENGINE_AFTER_CREDIT,)) as pair:
        sent = pair.send_packets(PACKET, PACKETS)
        settlement = pair.settle(SETTLE, "crash-incoming-1")
        transfer_id = f"alice-ledger:{settlement.id}"

        assert pair.bob.wait_exited() == -signal.SIGKILL
        assert f"failpoint {failpoints.ENGINE_AFTER_CREDIT}" in pair.bob.log_text()
        # What the crash left: credited in the engine, unacknowledged in the adaptor.
        rows = pair.bob.engine_rows()
        assert [(d, s) for _, d, s in rows] == [("incoming", "credited")], rows
        assert pair.bob.adaptor_incoming() == [(transfer_id, 0)]
        # Alice's side is done whatever happens to Bob.
        pair.wait_for(
            "Alice's settlement to complete",
            lambda: (
                True
                if [s.state for s in pair.alice.settlements() if s.direction == OUTGOING]
                == [COMPLETED]
                else None
            ),
        )

        pair.bob.start()
        pair.wait_ready(pair.bob, link=False)
        pair.settled_books(sent, settlements=1)
        pair.wait_for(
            "Bob's adaptor to record the acknowledgement",
            lambda: True if pair.bob.adaptor_incoming() == [(transfer_id, 1)] else None,
        )

        # A new adaptor process re-delivers only what is unacknowledged: nothing moves.
        old_pid = pair.bob.adaptor().pid
        pair.bob.admin.RestartAdaptor(admin_pb2.RestartAdaptorRequest(name="simledger"), timeout=30)
        pair.wait_for(
            "Bob's adaptor to serve again",
            lambda: (
                True
                if pair.bob.adaptor().state == SERVING and pair.bob.adaptor().pid != old_pid
                else None
            ),
        )
        pair.wait_ready(pair.bob, link=False)
        pair.settled_books(sent, settlements=1)
        assert pair.bob.adaptor_incoming() == [(transfer_id, 1)]
