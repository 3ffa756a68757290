"""The in-flight journal between real connectors: a packet this host lost track of is resolved
by asking its next hop (``peer.outcome``), an expired one the next hop never saw is released, a
peer without the query is counted, and a debit that could not be recorded is retried."""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import replace

from connector_harness import network, prepare_to

from host.admin.connector_admin import ConnectorAdminService
from host.clearing_records import BalanceChange, InFlight, Resolution
from host.connector import Connector
from host.connector.inflight import decide
from host.ilp import Fulfill, Reject
from host.ilp.outcome import Status
from tests.polling import wait_until_async


def admin_of(connector: Connector) -> ConnectorAdminService:
    async def no_balance(peer_id: str) -> None:
        return None

    peers = {
        peer_id: (f"test.{peer_id}", "") for peer_id in ("x", "b") if peer_id in connector._peers
    }
    return ConnectorAdminService(connector, peers, no_balance)


def test_decide_waits_for_the_expiry_plus_grace_before_believing_unknown() -> None:
    expires = 100.0
    assert decide(Status.FULFILLED, 50.0, expires, 5.0) == Resolution.FORWARDED
    assert decide(Status.REJECTED, 50.0, expires, 5.0) == Resolution.REJECTED
    for status in (Status.UNKNOWN, Status.UNSUPPORTED):
        assert decide(status, 104.9, expires, 5.0) is None
        assert decide(status, 105.0, expires, 5.0) == Resolution.REJECTED
    # Still in flight over there: never final, whatever the time.
    assert decide(Status.PENDING, 1e9, expires, 5.0) is None


def only(journal: dict[str, tuple[InFlight, Resolution | None, bytes]]) -> InFlight:
    (packet, _, _), *others = journal.values()
    assert not others
    return packet


def test_the_receiver_answers_with_its_fulfillment_and_the_sender_checks_it() -> None:
    async def run() -> None:
        async with network([("a", "b")]) as net:
            a, b = net["a"], net["b"]
            prepare = prepare_to("test.b", 5)
            assert isinstance(await a.connector.handle_prepare(None, prepare), Fulfill)
            sent = only(a.clearing.journal)
            assert a.clearing.journal[sent.key][1] == Resolution.FULFILLED
            received = only(b.clearing.journal)
            # Both ends name the packet alike: the hash of its bytes on their link.
            assert received.source_id == sent.target_id and received.source == "a"

            answer = await a.connector._ask_outcome("b", sent)
            assert answer.status == Status.FULFILLED
            assert hashlib.sha256(answer.fulfillment).digest() == prepare.execution_condition
            stranger = replace(sent, target_id=bytes(32))
            assert (await a.connector._ask_outcome("b", stranger)).status == Status.UNKNOWN

    asyncio.run(run())


def test_a_packet_whose_fulfill_was_lost_is_recorded_from_the_next_hops_answer() -> None:
    async def run() -> None:
        async with network([("a", "b")]) as net:
            a, b = net["a"], net["b"]
            assert isinstance(
                await a.connector.handle_prepare(None, prepare_to("test.b", 5)), Fulfill
            )
            assert b.clearing.balances == {"a": 5}
            # What a crash right after b's Fulfill arrived leaves: the journal's pending record.
            packet = only(a.clearing.journal)
            a.clearing.journal[packet.key] = (packet, None, b"")
            a.clearing.balances.clear()
            a.clearing.keys.clear()

            assert await a.connector.inflight.load() == 1
            assert a.connector.balances.reserved("b") == (0, 5)
            await wait_until_async(
                lambda: not a.connector.inflight.waiting(), "the packet to be resolved"
            )
            assert a.clearing.balances == {"b": -5}, "the two books agree again"
            assert a.clearing.journal[packet.key][1] == Resolution.FORWARDED
            assert a.connector.balances.reserved("b") == (0, 0)

    asyncio.run(run())


def expired_packet(target: str, amount: int) -> InFlight:
    """A journaled packet that expired a minute ago, which its next hop never saw."""
    return InFlight(
        "ab" * 32,
        None,
        b"",
        target,
        hashlib.sha256(b"never sent").digest(),
        amount,
        time.time() - 60,
        hashlib.sha256(b"x").digest(),
    )


def test_an_expired_packet_the_next_hop_never_saw_is_released() -> None:
    async def run() -> None:
        async with network([("a", "b")]) as net:
            a = net["a"]
            packet = expired_packet("b", 9)
            await a.clearing.journal_packet(packet)
            assert await a.connector.inflight.load() == 1
            await wait_until_async(
                lambda: not a.connector.inflight.waiting(), "the packet to be released"
            )
            assert a.clearing.journal[packet.key][1] == Resolution.REJECTED
            assert a.clearing.balances == {} and a.connector.balances.reserved("b") == (0, 0)
            assert a.connector.inflight.unsupported == {}

    asyncio.run(run())


def test_a_peer_without_the_query_is_counted_and_the_packet_released_as_before() -> None:
    async def run() -> None:
        async with network([("a", "b")], without_journal=["b"]) as net:
            a = net["a"]
            packet = expired_packet("b", 9)
            await a.clearing.journal_packet(packet)
            await a.connector.inflight.load()
            await wait_until_async(
                lambda: not a.connector.inflight.waiting(), "the packet to be released"
            )
            assert a.clearing.journal[packet.key][1] == Resolution.REJECTED
            assert a.connector.inflight.unsupported == {"b": 1}

    asyncio.run(run())


def test_a_debit_that_cannot_be_recorded_is_retried_until_applied_and_the_source_refused() -> None:
    async def run() -> None:
        async with network([("x", "a"), ("a", "b")], routes={"x": [("test.b", "a")]}) as net:
            x, a, b = net["x"], net["a"], net["b"]
            failures = 3
            resolve = a.clearing.resolve_packet

            async def failing(
                packet: InFlight,
                resolution: Resolution,
                fulfillment: bytes,
                changes: list[BalanceChange],
            ) -> None:
                nonlocal failures
                if failures:
                    failures -= 1
                    raise ConnectionError("store down")
                await resolve(packet, resolution, fulfillment, changes)

            a.clearing.resolve_packet = failing  # type: ignore[method-assign]
            reply = await x.connector.handle_prepare(None, prepare_to("test.b", 7))
            assert isinstance(reply, Reject) and reply.code == "T00"
            assert b.clearing.balances == {"a": 7}, "b fulfilled: a owes it"
            (waiting,) = a.connector.inflight.waiting()
            assert waiting.fulfillment and waiting.packet.target == "b"
            # The operator sees it under the peer, until it lands.
            listing = await admin_of(a.connector).list_peers()
            (queued,) = next(p for p in listing.peers if p.id == "b").unresolved_packets
            assert (queued.key, queued.amount.value, queued.fulfilled) == (
                waiting.packet.key,
                "7",
                True,
            )
            await wait_until_async(
                lambda: not a.connector.inflight.waiting(), "the debit to be applied"
            )
            assert a.clearing.balances == {"b": -7}, "the debit landed, with its key"
            packet = only(a.clearing.journal)
            assert a.clearing.journal[packet.key][1] == Resolution.FORWARDED
            # x got a Reject: a does not charge it, and says so if x asks.
            assert x.clearing.balances == {}
            assert (await a.clearing.packet_outcome("x", packet.source_id)).status == (
                Status.REJECTED
            )

    asyncio.run(run())
