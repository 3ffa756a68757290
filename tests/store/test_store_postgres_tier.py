"""Alice as three ``ilp-host run`` instances on one PostgreSQL database (tests.store.pg_tier):
killed at random while packets flow and settlements are made, they pay every settlement exactly
once and agree with the ledger and with Bob; instances starting together on packets left in
flight resolve each once.

The seed of the kills comes from ``ILP_PG_TIER_SEED`` or is drawn at random; every failure
message starts with it (``python -m tests.store.pg_tier --seed N --kills N`` replays it).
"""

from __future__ import annotations

import contextlib
import os
import random

import grpc
import pytest

from host.demo.twohost import wait_for
from host.pb.ilphost.admin.v1 import admin_pb2
from sdk import failpoints
from tests.chaos.chaos import PACKET, reconcile
from tests.crash.harness import NO_AUTOMATIC_SETTLEMENT
from tests.postgres_server import PostgresServer
from tests.store.pg_tier import INSTANCES, running_tier, schedule, tier_run

pytestmark = pytest.mark.slow

#: Kills in the bounded run (``make soak-pg`` runs many more).
KILLS = 5
UNRESOLVED = "SELECT count(*) FROM packets WHERE resolution IS NULL"


def test_the_kills_are_a_function_of_the_seed() -> None:
    assert schedule(7, 40) == schedule(7, 40)
    assert schedule(7, 40) != schedule(8, 40)
    assert {fault.target for fault in schedule(7, 100)} == {f"alice-{n}" for n in range(INSTANCES)}


@pytest.mark.timeout(300)
def test_three_instances_killed_at_random_pay_every_settlement_exactly_once(
    postgres: PostgresServer,
) -> None:
    seed = int(os.environ.get("ILP_PG_TIER_SEED") or random.randrange(2**32))
    report = tier_run(postgres, seed, KILLS)
    text = report.text()
    assert not report.problems, text
    assert sum("killed; started" in line for line in report.log) >= KILLS // 2, text
    assert report.verdict.settlements > report.incoming >= 1, text


@pytest.mark.timeout(240)
def test_instances_starting_together_resolve_each_packet_left_in_flight_once(
    postgres: PostgresServer,
) -> None:
    no_settling = (NO_AUTOMATIC_SETTLEMENT, NO_AUTOMATIC_SETTLEMENT)
    after_fulfill = failpoints.CONNECTOR_AFTER_FULFILL
    with running_tier(postgres, no_settling, slots=[0], armed=[after_fulfill], learn=False) as tier:
        first = tier.instances[0]
        # Bob fulfils the packets; the first instance dies as the first Fulfill comes back,
        # before recording it, with the others in flight too.
        request = admin_pb2.SendPacketsRequest(
            destination="test.bob.tier", amount=PACKET, count=4, concurrency=4
        )
        with contextlib.suppress(grpc.RpcError):
            for _ in first.connector.SendPackets(request, timeout=30):
                pass
        first.wait_exited("run")
        assert f"failpoint {after_fulfill}" in first.log_text()
        left = int(tier.psql(UNRESOLVED))
        owed = int(tier.bob.account().clearing_balance.value)  # what Alice owes Bob for them
        assert left >= 1 and owed >= PACKET, (left, owed)

        # Bob is down while the two others start: neither can resolve a packet before both
        # have loaded them all, and then both ask Bob about each one.
        tier.bob.stop()
        others = tier.instances[1:]
        for instance in others:
            instance.start(wait=False)
        loaded = f"{left} packet(s) in flight at the last stop"
        wait_for(
            "both instances to load every packet in flight",
            lambda: True if all(loaded in i.log_text() for i in others) else None,
            others,
        )
        tier.bob.start()
        wait_for(
            "each packet to be resolved",
            lambda: True if tier.psql(UNRESOLVED) == "0" else None,
            tier.hosts[1:],
        )
        for instance in others:
            instance.connect()
            tier.wait_ready(instance, link=False)
        for instance in others:
            balance = instance.account().clearing_balance.value
            assert int(balance) == -owed, f"{instance.label}: {balance}, Bob: {owed}"
        outcome = reconcile(others[0])
        assert outcome.get("status") == "agree", outcome
