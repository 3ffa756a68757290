"""Peer link states (outcomes in any order), the local receiver and the packet source."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from connector_harness import network, prepare_to

from host.connector import LocalReceiver, PacketSource, SendProgress
from host.connector.links import LinkStates
from host.connector.local import exercise_prepare, nearest_rank
from host.ilp import Fulfill, Prepare, Reject
from sdk.connectivity import ConnectionState, Connectivity
from tests.polling import wait_until_async

C = Connectivity


def test_link_states_follow_outcomes() -> None:
    links = LinkStates(["b", "c"])
    assert [(s.name, s.kind, s.state) for s in links.states()] == [
        ("peer:b", "peer", C.IDLE),
        ("peer:c", "peer", C.IDLE),
    ]
    links.sending("b")
    assert links.state("b").state == C.CONNECTING
    links.sending("b")  # a second send in flight changes nothing
    links.succeeded("b")
    assert links.state("b").state == C.READY
    links.failed("b", "HTTP 503")
    links.failed("b", "connection refused")  # a concurrent failure: same state, newer error
    state = links.state("b")
    assert (state.state, state.last_error, state.attempts) == (
        C.TRANSIENT_FAILURE,
        "connection refused",
        1,
    )
    links.succeeded("b")  # a send that started before the failure: back by CONNECTING
    assert links.state("b").state == C.READY
    links.failed("c", "refused")  # failure before any send was seen as starting
    assert links.state("c").state == C.TRANSIENT_FAILURE
    with pytest.raises(KeyError):
        links.sending("nobody")
    links.close()
    links.close()
    assert {s.state for s in links.states()} == {C.SHUTDOWN}
    links.succeeded("b")  # late outcomes after stop are ignored
    links.failed("c", "late")
    assert {s.state for s in links.states()} == {C.SHUTDOWN}


def test_watchers_see_each_change_and_end_at_close() -> None:
    async def run() -> None:
        links = LinkStates(["b"])
        seen: list[ConnectionState] = []

        async def follow() -> None:
            async for state in links.watch():
                seen.append(state)

        task = asyncio.create_task(follow())
        await asyncio.sleep(0)
        links.sending("b")
        links.succeeded("b")
        links.succeeded("b")  # no change, no event
        links.failed("b", "x")
        links.close()
        await asyncio.wait_for(task, 30)
        assert [s.state for s in seen] == [C.CONNECTING, C.READY, C.TRANSIENT_FAILURE, C.SHUTDOWN]
        ended = [s async for s in links.watch()]  # watching a closed set ends at once
        assert ended == []

    asyncio.run(run())


def soon() -> datetime:
    return datetime.now(UTC) + timedelta(seconds=30)


def test_local_receiver_fulfills_only_the_preimage_in_the_data() -> None:
    async def run() -> None:
        receiver = LocalReceiver("test.me")
        good = exercise_prepare("test.me.x", 5, soon())
        reply = await receiver.handle(good)
        assert isinstance(reply, Fulfill)
        assert hashlib.sha256(reply.fulfillment).digest() == good.execution_condition
        longer = Prepare(5, soon(), good.execution_condition, "test.me", good.data + b"memo")
        assert isinstance(await receiver.handle(longer), Fulfill)
        for data in (b"", good.data[:31], bytes(32)):
            bad = Prepare(5, soon(), good.execution_condition, "test.me", data)
            reply = await receiver.handle(bad)
            assert isinstance(reply, Reject)
            assert (reply.code, reply.triggered_by) == ("F06", "test.me")

    asyncio.run(run())


def test_packet_source_sends_through_the_switch_with_progress() -> None:
    async def run() -> None:
        async with network([("a", "b")], limits={"b": {"a": (-1000, 50)}}) as net:
            progress: list[SendProgress] = []
            source = PacketSource(net["a"].connector)
            summary = await source.send("test.b.x", 10, 8, concurrency=3, progress=progress.append)
            assert (summary.sent, summary.fulfilled, summary.amount_fulfilled) == (8, 5, 50)
            assert summary.rejected == {"T04": 3}
            assert len(summary.latencies) == 8 and summary.rate > 0
            assert [p.sent for p in progress] == list(range(1, 9))
            assert progress[-1] == SendProgress(8, 5, {"T04": 3})
            assert net["a"].clearing.balances == {"b": -50}
            assert net["b"].clearing.balances == {"a": 50}
            nothing = await source.send("test.b", 1, 0)
            assert (nothing.sent, nothing.latency(0.5)) == (0, 0.0)
            for bad in (
                lambda: source.send("nowhere", 1, 1),
                lambda: source.send("test.b", -1, 1),
                lambda: source.send("test.b", 1, -1),
                lambda: source.send("test.b", 1, 1, concurrency=0),
            ):
                with pytest.raises(ValueError):
                    await bad()

    asyncio.run(run())


def test_nearest_rank() -> None:
    samples = [float(n) for n in range(1, 101)]
    assert nearest_rank(samples, 0.5) == 50.0
    assert nearest_rank(samples, 0.99) == 99.0
    assert nearest_rank(samples, 1.0) == 100.0
    assert nearest_rank(samples, 0.0) == 1.0
    assert nearest_rank([3.0], 0.99) == 3.0
    assert nearest_rank([], 0.5) == 0.0


def test_a_failed_link_recovers_by_probe_when_the_peer_comes_up() -> None:
    """Alice sends to Bob before Bob listens: the link fails. Once Bob is up, a probe (amount
    0, refused by Bob's receiver) makes it READY without any traffic, and moves no balance."""

    async def main() -> None:
        async with network([("alice", "bob")], not_started=["bob"]) as net:
            alice = net["alice"].connector
            reply = await alice.handle_prepare(None, prepare_to("test.bob", 5))
            assert isinstance(reply, Reject) and reply.code == "T01"
            assert alice.links.state("bob").state == C.TRANSIENT_FAILURE
            await net.start("bob")
            await wait_until_async(
                lambda: alice.links.state("bob").state == C.READY, "the probe", timeout=30
            )
            assert net["alice"].clearing.applied == [] and net["bob"].clearing.applied == []

    asyncio.run(main())
