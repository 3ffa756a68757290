"""Reconciliation (host.connector.reconciliation): the pure comparison, and real connectors
asking each other peer.reconcile over ILP-over-HTTP on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from connector_harness import network, prepare_to

from host.assembly import assemble_connector
from host.clearing_rules import ClearingBook
from host.config import for_role, load_config
from host.connector import InMemoryClearing
from host.connector.reconciliation import (
    AGREE,
    BUSY,
    DIFFER,
    FAILED,
    SETTLING,
    UNSUPPORTED,
    BookReader,
    Outcome,
    Reconciler,
    compare,
)
from host.ilp import ErrorCode, Fulfill, Prepare, Reject
from host.ilp.ildcp import PEER_PROTOCOL_CONDITION
from host.ilp.reconcile import RECONCILE_ADDRESS, Totals
from tests.polling import wait_until_async

# -- the comparison (pure) -------------------------------------------------------------------------

# Alice forwarded 1000 to Bob and paid him 600; Bob credited 600.
ALICE = Totals(2, balance=-400, settled_out=600, settled_in=0)
BOB = Totals(2, balance=400, settled_out=0, settled_in=600)


def test_mirrored_books_agree() -> None:
    outcome = compare("bob", ALICE, BOB, ALICE, at=1.0)
    assert (outcome.status, outcome.clearing_difference, outcome.detail) == (AGREE, 0, "")
    assert (outcome.to_peer_in_transit, outcome.from_peer_in_transit) == (0, 0)
    assert outcome.in_agreement and (outcome.ours, outcome.theirs) == (ALICE, BOB)


def test_a_settlement_not_yet_credited_is_in_transit_not_a_difference() -> None:
    bob = Totals(2, balance=1000, settled_out=0, settled_in=0)  # the payment has not arrived
    outcome = compare("bob", ALICE, bob, ALICE)
    assert (outcome.status, outcome.clearing_difference, outcome.to_peer_in_transit) == (
        SETTLING,
        0,
        600,
    )
    assert outcome.in_agreement


def test_a_leftover_agrees_from_the_engine_and_is_in_transit_from_a_split_connector() -> None:
    """docs/peering.md: alice owed bob 1.2345 (scale 4) and settled it on a ledger in cents:
    1.23 paid and credited by bob, 0.0045 kept as the leftover. The engine's book takes the
    leftover off its balance; a split host's connector only saw the whole debit, a settlement
    paid: the same clearing difference, and the leftover exactly in transit."""
    bob = Totals(4, balance=45, settled_out=0, settled_in=12300)
    engine = Totals(4, balance=-45, settled_out=12300, settled_in=0)
    outcome = compare("bob", engine, bob, engine)
    assert (outcome.status, outcome.clearing_difference, outcome.to_peer_in_transit) == (
        AGREE,
        0,
        0,
    )
    connector = Totals(4, balance=0, settled_out=12345, settled_in=0)
    outcome = compare("bob", connector, bob, connector)
    assert (outcome.status, outcome.clearing_difference, outcome.to_peer_in_transit) == (
        SETTLING,
        0,
        45,
    )


def test_a_packet_only_the_peer_recorded_is_an_exact_difference() -> None:
    bob = Totals(2, balance=450, settled_out=0, settled_in=600)  # one more packet of 50
    outcome = compare("bob", ALICE, bob, ALICE)
    assert (outcome.status, outcome.clearing_difference) == (DIFFER, 50)
    assert "50 more in its own favour" in outcome.detail and not outcome.in_agreement
    # The same seen from Bob's side.
    assert compare("alice", bob, ALICE, bob).clearing_difference == 50
    # Alice recorded a packet Bob did not.
    alice = Totals(2, balance=-450, settled_out=600, settled_in=0)
    outcome = compare("bob", alice, BOB, alice)
    assert (outcome.status, outcome.clearing_difference) == (DIFFER, -50)
    assert "50 more in the other's favour" in outcome.detail


def test_a_credit_beyond_what_was_paid_differs() -> None:
    bob = Totals(2, balance=300, settled_out=0, settled_in=700)
    alice = Totals(2, balance=-300, settled_out=700, settled_in=0)
    outcome = compare("bob", ALICE, Totals(2, 200, 0, 800), ALICE)
    assert outcome.status == DIFFER and "credited 200 more of our settlements" in outcome.detail
    assert compare("bob", alice, bob, alice).status == AGREE


def test_packets_in_flight_make_a_difference_inexact() -> None:
    moving = Totals(2, balance=-400, settled_out=600, settled_in=0, in_flight_out=50)
    bob = Totals(2, balance=450, settled_out=0, settled_in=600)
    assert compare("bob", moving, bob, moving).status == BUSY
    # Our books moved while we asked: inexact too, even with nothing in flight now.
    assert compare("bob", Totals(2, -350, 600, 0), bob, ALICE).status == BUSY
    # Agreement is agreement, in flight or not.
    assert compare("bob", moving, BOB, moving).status == AGREE


def test_accounts_at_different_scales_cannot_be_compared() -> None:
    outcome = compare("bob", ALICE, Totals(3, 4000, 0, 6000), ALICE)
    assert outcome.status == DIFFER and "different scales" in outcome.detail


# -- real connectors -----------------------------------------------------------------------------


def books_of(clearing: InMemoryClearing, settled: dict[str, tuple[int, int]]) -> BookReader:
    """An account's book from an in-memory clearing port and the settlements given."""

    async def read(account_id: str) -> ClearingBook:
        out, into = settled.get(account_id, (0, 0))
        return ClearingBook(2, clearing.balance(account_id), out, into)

    return read


def test_connectors_reconcile_over_their_link() -> None:
    async def main() -> None:
        settled: dict[str, dict[str, tuple[int, int]]] = {"a": {}, "b": {}}
        clearings: dict[str, InMemoryClearing] = {}

        def book(name: str) -> BookReader:
            async def read(account_id: str) -> ClearingBook:
                return await books_of(clearings[name], settled[name])(account_id)

            return read

        async with network([("a", "b"), ("a", "c")], books={"a": book("a"), "b": book("b")}) as net:
            clearings.update({name: host.clearing for name, host in net.hosts.items()})
            for _ in range(3):
                reply = await net["a"].connector.handle_prepare(None, prepare_to("test.b", 100))
                assert isinstance(reply, Fulfill)
            seen: list[Outcome] = []

            class Observer:
                def reconciled(self, outcome: Outcome) -> None:
                    seen.append(outcome)

            reconciler = Reconciler(net["a"].connector, ["b", "c"], observer=Observer())
            outcome = await reconciler.reconcile("b")
            assert (outcome.status, outcome.clearing_difference) == (AGREE, 0)
            assert outcome.ours == Totals(2, -300, 0, 0)
            assert outcome.theirs == Totals(2, 300, 0, 0)
            # Alice paid 200 that Bob has not credited yet: settling.
            await net["a"].clearing.apply_balance_change("b", 200, "engine/debit/s1")
            settled["a"]["b"] = (200, 0)
            assert (await reconciler.reconcile("b")).status == SETTLING
            await net["b"].clearing.apply_balance_change("a", -200, "engine/credit/x1")
            settled["b"]["a"] = (0, 200)
            assert (await reconciler.reconcile("b")).status == AGREE
            # Bob records a packet Alice never did (the crash window of the journal's issue).
            await net["b"].clearing.apply_balance_change("a", 100, "ilp-in-lost")
            outcome = await reconciler.reconcile("b")
            assert (outcome.status, outcome.clearing_difference) == (DIFFER, 100)
            # c keeps no books: it answers F02 like a connector of another project.
            assert (await reconciler.reconcile("c")).status == UNSUPPORTED
            assert [o.status for o in seen] == [AGREE, SETTLING, AGREE, DIFFER, UNSUPPORTED]
            assert reconciler.last["b"].status == DIFFER
            # Nothing was changed by asking.
            assert net["a"].clearing.balance("b") == -100 and net["b"].clearing.balance("a") == 200

    asyncio.run(main())


def test_an_unreachable_peer_and_a_malformed_request_are_outcomes_not_crashes() -> None:
    async def main() -> None:
        clearings: dict[str, InMemoryClearing] = {}

        async def read(account_id: str) -> ClearingBook:
            return await books_of(clearings["b"], {})(account_id)

        async with network([("a", "b")], books={"a": read, "b": read}, not_started=["b"]) as net:
            clearings["b"] = net["b"].clearing
            outcome = await Reconciler(net["a"].connector, ["b"]).reconcile("b")
            assert outcome.status == FAILED and "peer b" in outcome.detail
            await net.start("b")
            expires = datetime.now(UTC) + timedelta(seconds=30)
            bad = Prepare(0, expires, PEER_PROTOCOL_CONDITION, RECONCILE_ADDRESS, b"\x09")
            reply = await net["b"].connector.handle_prepare("a", bad)
            assert isinstance(reply, Reject) and reply.code == ErrorCode.F01_INVALID_PACKET
            # Not from a peer (this host's own packet): never answered.
            reply = await net["b"].connector.handle_prepare(None, bad)
            assert isinstance(reply, Reject) and reply.code == ErrorCode.F02_UNREACHABLE

    asyncio.run(main())


def test_the_reconciler_asks_every_peer_each_interval() -> None:
    async def main() -> None:
        async with network([("a", "b")]) as net:
            reconciler = Reconciler(net["a"].connector, ["b"], interval=0.01)
            task = asyncio.create_task(reconciler.run())
            try:
                await wait_until_async(lambda: "b" in reconciler.last, "a first reconciliation")
                first = reconciler.last["b"]
                await wait_until_async(lambda: reconciler.last["b"] is not first, "a second one")
            finally:
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            # a keeps no books in this network: the outcome says why.
            assert reconciler.last["b"].status == FAILED
            assert "keeps no books" in reconciler.last["b"].detail

    asyncio.run(main())


# -- what operators read -------------------------------------------------------------------------


def test_the_outcome_as_the_admin_api_the_cli_and_the_peers_table_show_it() -> None:
    from host.admin.connector_admin import reconciliation_to_proto
    from host.cli import _render_reconciliation
    from host.pb.ilphost.admin.v1 import admin_pb2
    from host.status import peers_rows

    bob = Totals(2, balance=450, settled_out=0, settled_in=600)
    message = reconciliation_to_proto(compare("bob", ALICE, bob, ALICE, at=1.5))
    assert (message.peer, message.status, message.clearing_difference.value) == (
        "bob",
        DIFFER,
        "50",
    )
    assert (message.ours.balance.value, message.theirs.settled_in.value) == ("-400", "600")
    assert message.at.ToNanoseconds() == 1_500_000_000
    text = _render_reconciliation(message).splitlines()
    assert text[0].startswith("peer bob: differ: the books differ by 50")
    assert text[2].split() == ["ours", "-400", "600", "0", "0/0"]
    assert text[3].split() == ["theirs", "450", "0", "600", "0/0"]
    assert text[4].startswith("clearing difference 50;")
    peer = admin_pb2.Peer(id="bob", reconciliation=message)
    assert peers_rows([peer], datetime.now(UTC))[1][-1].startswith(
        "reconciliation: the books differ by 50"
    )
    unsupported = reconciliation_to_proto(Outcome("js", UNSUPPORTED, 1.0, detail="F02"))
    assert not unsupported.HasField("ours")
    assert _render_reconciliation(unsupported) == "peer js: unsupported: F02"
    assert peers_rows([admin_pb2.Peer(id="js", reconciliation=unsupported)], datetime.now(UTC))[1][
        -1
    ] in ("", "-")


# -- the interval from the config file -----------------------------------------------------------

SPLIT_CONNECTOR = """
[host]
state_dir = "state"

[[adaptor]]
name = "simledger"
command = ["python", "adaptor.py"]

[[account]]
id = "bob"
adaptor = "simledger"
asset_code = "USD"
asset_scale = 6
settle_threshold = -100000
settle_to = 0
min_balance = -1000000
max_balance = 1000000

[connector]
address = "test.alice"
port = 0
{interval}

[[peer]]
id = "bob"
url = "http://127.0.0.1:9/"
address = "test.bob"
incoming_token = "token-from-bob"
outgoing_token = "token-to-bob-1"
"""


def test_ilp_host_connector_reconciles_at_the_configured_interval_or_on_demand() -> None:
    async def assembled(interval: str, *, rounds: bool = False) -> Reconciler:
        with tempfile.TemporaryDirectory(prefix="ilp") as directory:  # short: the API socket
            whole = load_config(SPLIT_CONNECTOR.format(interval=interval), Path(directory))
            config = for_role(whole, "connector")
            config.state_dir.mkdir(parents=True)
            async with contextlib.AsyncExitStack() as stack:
                parts = await assemble_connector(config, stack, None)
                reconciler = parts.reconciler
                if rounds:
                    # Bob does not listen: each round's outcome says so.
                    task = asyncio.create_task(reconciler.run())
                    try:
                        await wait_until_async(lambda: "bob" in reconciler.last, "a round")
                    finally:
                        task.cancel()
                        await asyncio.gather(task, return_exceptions=True)
                    assert reconciler.last["bob"].status == FAILED
                return reconciler

    assert asyncio.run(assembled("")).interval == 60.0
    # The first round comes an interval after the start: watch rounds at a short one only.
    assert asyncio.run(assembled("reconcile_interval = 0.05", rounds=True)).interval == 0.05
    on_demand = asyncio.run(assembled("reconcile_interval = 0"))
    assert not on_demand.periodic
    with pytest.raises(ValueError, match="on demand only"):
        asyncio.run(on_demand.run())
