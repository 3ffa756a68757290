"""Nothing lost in clearing: real processes, SIGKILL, in both proposals (the in-flight journal
in the engine's store, or in the split connector's own ledger).

- Alice's connector killed after Bob's Fulfill reached it, before it recorded anything (Bob
  had applied the packet before answering): after a restart it finds the packet pending in its
  journal, asks Bob (``peer.outcome``), checks the fulfillment, records the debit; both books
  agree to the unit.
- then Alice's connector fails to record a Fulfill (its store refuses the write once): the
  packet is rejected towards its sender, the debit waits in the retry queue and lands; both
  books agree.

The verdict is harness.Pair.settled_books: Alice's and Bob's clearing balances are each other's
opposite, every process in step.
"""

from __future__ import annotations

import signal

import grpc
import pytest

from host.connector.config import DEFAULT_DATABASE
from host.demo.twohost import DEADLINE
from host.pb.ilphost.admin.v1 import admin_pb2
from sdk import failpoints
from tests.crash.harness import Pair, _query, running_pair

pytestmark = pytest.mark.slow

PACKET = 12_345


def send_one(pair: Pair) -> admin_pb2.SendPacketsResponse:
    """Alice sends one packet to Bob; the last progress report (raises if the stream breaks)."""
    request = admin_pb2.SendPacketsRequest(
        destination="test.bob.crash", amount=PACKET, count=1, concurrency=1
    )
    last = admin_pb2.SendPacketsResponse()
    for progress in pair.alice.connector.SendPackets(request, timeout=DEADLINE):
        last = progress
    return last


def alice_journal(pair: Pair) -> list[tuple[str | None, str | None]]:
    """(target, resolution) of each packet in Alice's connector's journal, read from its file."""
    alice = pair.alice
    path = (
        alice.engine_db
        if alice.engine == "internal"
        else alice.role_dir("connector") / DEFAULT_DATABASE
    )
    return _query(path, "SELECT target, resolution FROM packets ORDER BY created_at")


def connector_balance(pair: Pair, host_name: str) -> int | None:
    host = pair.alice if host_name == "alice" else pair.bob
    return host.connector_view()[0]


@pytest.mark.parametrize("engine", ["internal", "external"])
def test_a_lost_fulfill_is_recovered_from_the_next_hop_and_a_failed_record_retried(
    engine: str,
) -> None:
    # One pair for both scenarios (each start of a pair costs seconds of CI).
    killed = failpoints.CONNECTOR_AFTER_FULFILL
    with running_pair(alice_armed=(killed,), engines=(engine, engine)) as pair:
        with pytest.raises(grpc.RpcError):
            send_one(pair)
        assert pair.alice.wait_exited(pair.alice.connector_role) == -signal.SIGKILL
        assert f"failpoint {killed}" in pair.alice.log_text()
        # Bob applied the packet before he answered; Alice recorded nothing but its journal.
        assert connector_balance(pair, "bob") == PACKET
        assert alice_journal(pair) == [("bob", None)]

        failed = failpoints.CONNECTOR_RECORD_FULFILL
        pair.alice.start(armed=(failed,), roles=(pair.alice.connector_role,))
        pair.wait_ready(pair.alice, link=False)
        pair.wait_for(
            "Alice's connector to record what Bob says he fulfilled",
            lambda: True if connector_balance(pair, "alice") == -PACKET else None,
        )
        assert alice_journal(pair) == [("bob", "forwarded")]
        pair.settled_books(PACKET, settlements=0)

        # Now Alice's store refuses to record the next Fulfill (once). Her own packet source
        # is told "rejected": she could not record it...
        last = send_one(pair)
        assert (last.done, last.fulfilled, dict(last.rejected_by_code)) == (True, 0, {"T00": 1})
        assert f"failpoint {failed}" in pair.alice.log_text()
        # ...but Bob fulfilled it: the debit is owed, and lands from the retry queue.
        assert connector_balance(pair, "bob") == 2 * PACKET
        pair.wait_for(
            "Alice's retried debit to land",
            lambda: True if connector_balance(pair, "alice") == -2 * PACKET else None,
        )
        assert alice_journal(pair) == [("bob", "forwarded")] * 2
        assert pair.alice.alive(pair.alice.connector_role)
        pair.settled_books(2 * PACKET, settlements=0)
