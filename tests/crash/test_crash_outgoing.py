"""Alice's outgoing settlement, crashed at each step, is paid exactly once after recovery.

Real processes throughout (tests/crash/harness.py): the simulated ledger, Alice's and Bob's
``ilp-host run`` with the simledger adaptor, peered over ILP-over-HTTP. Alice owes Bob for
packets, an operator settles part of it (admin Settle with an idempotency key), and a failpoint
(sdk.failpoints) kills Alice's host or her adaptor with SIGKILL at one exact step. After the
recovery (a restart of the host; the supervisor's restart of the adaptor), the books must add
up: one ledger transfer per settlement, COMPLETED on Alice's side, credited once by Bob,
nothing FAILED, and every clearing balance exactly what the packets and the settlement say.
"""

from __future__ import annotations

import os
import signal

import grpc
import pytest

from host.pb.ilphost.admin.v1 import admin_pb2
from host.pb.ilphost.simledger.v1 import simledger_pb2
from sdk import failpoints
from tests.crash.harness import OUTGOING, SERVING, Pair, running_pair

pytestmark = pytest.mark.slow

PACKET = 10_000  # micro-dollars
PACKETS = 10
SETTLE = 50_000  # micro-dollars: 5 cents on the ledger, no leftover
KEY = "crash-settle-1"


def crashed_row(pair: Pair) -> str:
    """The id of the one settlement Alice's dead host left on disk, still PENDING."""
    rows = pair.alice.engine_rows()
    assert [(direction, state) for _, direction, state in rows] == [("outgoing", "pending")], (
        f"what the crash left in Alice's engine database: {rows}{pair.logs()}"
    )
    return str(rows[0][0])


@pytest.mark.parametrize(
    "point", [failpoints.ENGINE_AFTER_DEBIT, failpoints.ENGINE_AFTER_SEND_MONEY]
)
def test_host_killed_mid_settlement_pays_once_after_restart(point: str) -> None:
    with running_pair(alice_armed=(point,)) as pair:
        sent = pair.send_packets(PACKET, PACKETS)
        if point == failpoints.ENGINE_AFTER_DEBIT:
            # The host dies inside the Settle call: the operator gets no answer.
            with pytest.raises(grpc.RpcError):
                pair.settle(SETTLE, KEY)
        else:
            pair.settle(SETTLE, KEY)

        assert pair.alice.wait_exited() == -signal.SIGKILL
        assert f"failpoint {point}" in pair.alice.log_text()
        settlement_id = crashed_row(pair)
        paid = [t[0] for t in pair.transfers_from("alice-ledger")]
        if point == failpoints.ENGINE_AFTER_DEBIT:
            assert paid == [], "the ledger paid before SendMoney was attempted"
        else:
            # The ledger committed; the host died before recording it.
            assert paid == [f"alice-ledger:{settlement_id}"]

        pair.alice.start()
        pair.wait_ready(pair.alice, link=False)
        # The operator, unsure, asks again with the same key: the same settlement, no new debit.
        assert pair.settle(SETTLE, KEY).id == settlement_id
        pair.settled_books(sent, settlements=1)


def adaptor_restarted(pair: Pair, old_pid: int) -> bool | None:
    adaptor = pair.alice.adaptor()
    return True if adaptor.state == SERVING and adaptor.pid not in (0, old_pid) else None


@pytest.mark.parametrize(
    "point", [failpoints.ADAPTOR_SEND_MONEY_RECEIVED, failpoints.ADAPTOR_AFTER_TRANSFER]
)
def test_adaptor_killed_mid_send_money_pays_once_after_supervisor_restart(point: str) -> None:
    with running_pair(alice_armed=(point,)) as pair:
        sent = pair.send_packets(PACKET, PACKETS)
        old_pid = pair.alice.adaptor().pid
        settlement = pair.settle(SETTLE, KEY)

        pair.wait_for(
            f"the failpoint {point} to fire",
            lambda: True if (pair.alice.once_dir / point).exists() else None,
        )
        pair.wait_for(
            "the supervisor to restart the adaptor", lambda: adaptor_restarted(pair, old_pid)
        )
        pair.settled_books(sent, settlements=1)

        assert pair.alice.alive(), "the host must survive its adaptor's crash"
        assert f"failpoint {point}" in pair.alice.log_text()
        (row,) = [s for s in pair.alice.settlements() if s.direction == OUTGOING]
        assert row.id == settlement.id


def test_adaptor_kill_9_while_the_ledger_transfer_is_in_flight() -> None:
    """kill -9 from outside, while SendMoney waits for a slow ledger Transfer."""
    with running_pair() as pair:
        assert pair.ledger is not None
        sent = pair.send_packets(PACKET, PACKETS)
        old_pid = pair.alice.adaptor().pid
        # Long enough that the kill below lands while the Transfer is pending, on any machine.
        pair.ledger.SetFaults(
            simledger_pb2.SetFaultsRequest(faults=simledger_pb2.Faults(latency_ms=10_000)),
            timeout=10,
        )
        settlement = pair.settle(SETTLE, KEY)
        # The adaptor records the key before it calls Transfer: SendMoney is under way.
        pair.wait_for(
            "the adaptor to start paying",
            lambda: True if settlement.id in pair.alice.adaptor_sent_keys() else None,
        )
        os.kill(old_pid, signal.SIGKILL)
        # Not paid yet, so the adaptor cannot have answered: the kill landed mid-SendMoney.
        assert pair.transfers_from("alice-ledger") == []
        pair.ledger.SetFaults(
            simledger_pb2.SetFaultsRequest(faults=simledger_pb2.Faults()), timeout=10
        )

        pair.wait_for(
            "the supervisor to restart the adaptor", lambda: adaptor_restarted(pair, old_pid)
        )
        pair.settled_books(sent, settlements=1)
        assert pair.alice.alive()


def test_host_killed_after_a_threshold_debit_pays_once_after_restart() -> None:
    """The packet that crosses the settle threshold debits and queues the settlement in its
    balance transaction; the host dies right after that commit, in the middle of the packet."""
    threshold = -5 * PACKET
    with running_pair(
        alice_armed=(failpoints.ENGINE_AFTER_DEBIT,), alice_threshold=threshold
    ) as pair:
        # One at a time: the fifth packet reaches the threshold exactly.
        request = admin_pb2.SendPacketsRequest(
            destination="test.bob.crash", amount=PACKET, count=10, concurrency=1
        )
        with pytest.raises(grpc.RpcError):
            for _ in pair.alice.connector.SendPackets(request, timeout=60):
                pass
        assert pair.alice.wait_exited() == -signal.SIGKILL
        assert f"failpoint {failpoints.ENGINE_AFTER_DEBIT}" in pair.alice.log_text()
        crashed_row(pair)
        assert pair.transfers_from("alice-ledger") == []
        # Bob applied each of the five packets before fulfilling it (and Alice the fifth in the
        # transaction that debited the settlement: the books below check her side).
        assert int(pair.bob.account().clearing_balance.value) == -threshold

        pair.alice.start()
        pair.wait_ready(pair.alice, link=False)
        pair.settled_books(-threshold, settlements=1)
        assert int(pair.alice.account().clearing_balance.value) == 0
