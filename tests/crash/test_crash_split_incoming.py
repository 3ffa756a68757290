"""A split host's engine that returns after packets flowed through its connector, with real
processes and SIGKILL: Bob runs ``ilp-host connector`` + ``ilp-host engine`` and settles
automatically; Alice runs ``ilp-host run``.

Alice's packets wait in Bob's connector's log while his engine is down; Alice pays for them on
the ledger. The settlement reaches Bob's engine from its adaptor, which may well be before the
log does (here: his connector is down too when the engine returns). Credited first, it left the
engine owing Alice what she paid, past its threshold, and it paid her back: money exact, but a
needless round trip. The engine now credits it only once it has applied the log.
"""

from __future__ import annotations

import pytest

from tests.crash.harness import INCOMING, running_pair

pytestmark = pytest.mark.slow

SPLIT_BOB = ("internal", "external")
PACKET = 100_000  # micro-dollars
BOB_THRESHOLD = -300_000  # Bob settles (back to 0) once he owes Alice this much
WAITS = "waits until the engine has applied the balance changes its connector logged"


def test_a_settlement_is_credited_after_the_packets_it_paid_for_and_not_paid_back() -> None:
    with running_pair(engines=SPLIT_BOB, bob_threshold=BOB_THRESHOLD) as pair:
        bob = pair.bob
        bob.kill("engine")
        sent = pair.send_packets(PACKET, 5)  # Alice owes Bob 500 000, in his connector's log
        pair.settle(sent, "pay-for-the-packets")
        pair.wait_for(
            "Alice's payment on the ledger",
            lambda: True if pair.transfers_from("alice-ledger") else None,
        )
        bob.kill("connector")

        bob.start(roles=("engine",))
        pair.wait_ready(bob, link=False)

        def seen() -> bool | None:
            credited = any(s.direction == INCOMING for s in bob.settlements())
            return True if credited or WAITS in bob.log_text() else None

        pair.wait_for("Bob's engine to credit the settlement or hold it", seen)
        assert bob.settlements() == [], "credited before the packets it paid for"

        bob.start(roles=("connector",))
        pair.settled_books(sent, settlements=1)
        assert [s.direction for s in bob.settlements()] == [INCOMING]
        assert pair.transfers_from("bob-ledger") == [], "Bob paid Alice back"
        assert int(bob.account().clearing_balance.value) == 0
