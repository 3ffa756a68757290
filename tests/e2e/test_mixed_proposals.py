"""Interoperation of the two proposals: Alice runs proposal 1 (``ilp-host run``), Bob proposal 2
(``ilp-host connector`` + ``ilp-host engine``), peered over ILP-over-HTTP, settling on the
simulated ledger. Real processes throughout (tests/crash/harness.py).

Peers cannot tell how the other side deploys its engine: the adaptors exchange their ledger
accounts over ``peer.settle`` (through Bob's Connector API both ways), Alice's packets cross the
threshold and her engine settles automatically, Bob's engine credits each payment once and
tells his connector, and every book adds up.
"""

from __future__ import annotations

import grpc
import pytest

from host.pb.ilphost.admin.v1 import admin_pb2
from tests.crash.harness import running_pair

pytestmark = pytest.mark.slow

PACKET = 100_000
THRESHOLD = -300_000


def test_alice_in_one_process_settles_with_bob_split_in_two() -> None:
    with running_pair(alice_threshold=THRESHOLD, engines=("internal", "external")) as pair:
        # One at a time, so that Alice settles at exactly the 3rd, 6th and 9th packet.
        sent = pair.send_packets(PACKET, 10, concurrency=1)
        pair.settled_books(sent, settlements=3)
        bob_balance, bob_engine = pair.bob.connector_view()
        assert bob_balance == sent - 900_000
        assert bob_engine.external and bob_engine.connected
        alice_balance, alice_engine = pair.alice.connector_view()
        assert alice_balance == -sent + 900_000
        assert not alice_engine.external
        # Only a split host's engine has a link to a connector process.
        request = admin_pb2.GetConnectorLinkRequest()
        link = pair.bob.admin.GetConnectorLink(request, timeout=10)
        assert link.connected and link.address.endswith("connector.sock")
        with pytest.raises(grpc.RpcError) as refused:
            pair.alice.admin.GetConnectorLink(request, timeout=10)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
