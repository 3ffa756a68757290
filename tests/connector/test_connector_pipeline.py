"""The packet pipeline on real sockets: multi-hop, peer.* never forwarded, peer.settle round
trips, unreachable peers and their link state, wrong fulfillments."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from connector_harness import (
    LIFETIME,
    RecordingMessages,
    network,
    prepare_to,
    refuse,
    token,
)

from host.binding import EngineClearing
from host.connector import PeerRefused, PeerUnreachable, UnknownPeer
from host.connector.config import PeerConfig
from host.connector.connector import Connector
from host.engine import Engine
from host.ilp import Fulfill, Prepare, Reject, Reply, parse_reply, serialize
from host.ilp.peer_settle import SETTLE_CONDITION, settle_prepare
from host.store.sqlite import SqliteStore
from sdk.connectivity import ConnectionState, Connectivity
from tests.polling import wait_until_async


def later() -> datetime:
    return datetime.now(UTC) + LIFETIME


def test_a_to_b_to_c_fulfills_and_every_hop_books_it() -> None:
    async def run() -> None:
        async with network(
            [("a", "b"), ("b", "c")], routes={"a": [("test.c", "b")], "c": [("test.a", "b")]}
        ) as net:
            for amount in (10, 25):
                reply = await net["a"].connector.handle_prepare(
                    None, prepare_to("test.c.x", amount)
                )
                assert isinstance(reply, Fulfill)
            reply = await net["c"].connector.handle_prepare(None, prepare_to("test.a", 5))
            assert isinstance(reply, Fulfill)
            # a clearing balance is what the peer owes us
            assert net["a"].clearing.balances == {"b": -35 + 5}
            assert net["b"].clearing.balances == {"a": 35 - 5, "c": -35 + 5}
            assert net["c"].clearing.balances == {"b": 35 - 5}
            for name in "abc":
                states = net[name].connector.link_states()
                assert all(s.state == Connectivity.READY for s in states), (name, states)
                balances = net[name].connector.balances
                assert all(balances.reserved(peer) == (0, 0) for peer in "abc")

    asyncio.run(run())


def test_rejects_from_downstream_come_back_unchanged_and_move_nothing() -> None:
    async def run() -> None:
        async with network([("a", "b"), ("b", "c")], routes={"a": [("test.c", "b")]}) as net:
            wrong = Prepare(9, later(), hashlib.sha256(b"x").digest(), "test.c.x", b"no preimage")
            reply = await net["a"].connector.handle_prepare(None, wrong)
            assert isinstance(reply, Reject)
            assert (reply.code, reply.triggered_by) == ("F06", "test.c")
            no_route = await net["a"].connector.handle_prepare(None, prepare_to("g.nowhere", 9))
            assert isinstance(no_route, Reject)
            assert (no_route.code, no_route.triggered_by) == ("F02", "test.a")
            beyond = await net["a"].connector.handle_prepare(None, prepare_to("test.d", 9))
            assert isinstance(beyond, Reject) and beyond.code == "F02"
            for name in "abc":
                assert net[name].clearing.balances == {}

    asyncio.run(run())


def test_a_route_back_to_the_sender_is_refused() -> None:
    async def run() -> None:
        # b routes test.z to a; a routes test.z to b: a packet from a to test.z must stop at b.
        async with network(
            [("a", "b")], routes={"a": [("test.z", "b")], "b": [("test.z", "a")]}
        ) as net:
            reply = await net["a"].connector.handle_prepare(None, prepare_to("test.z", 1))
            assert isinstance(reply, Reject)
            assert (reply.code, reply.triggered_by) == ("F02", "test.b")
            assert "leads back" in reply.message

    asyncio.run(run())


class WrongFulfiller:
    async def handle(self, prepare: Prepare) -> Reply:
        return Fulfill(bytes(32))


def test_a_wrong_fulfillment_is_f05_and_moves_nothing() -> None:
    async def run() -> None:
        async def wrong_fulfill(request: web.Request) -> web.Response:
            return web.Response(body=serialize(Fulfill(bytes(32))))

        app = web.Application()
        app.router.add_post("/", wrong_fulfill)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        fake_c = f"http://127.0.0.1:{runner.addresses[0][1]}/"
        try:
            async with network(
                [("a", "b"), ("a", "c")],
                local_handlers={"b": WrongFulfiller()},
                url_overrides={("a", "c"): fake_c},
            ) as net:
                # b's local handler fulfills wrongly: b checks it and refuses
                reply = await net["a"].connector.handle_prepare(None, prepare_to("test.b", 4))
                assert isinstance(reply, Reject)
                assert (reply.code, reply.triggered_by) == ("F05", "test.b")
                # c answers with a wrong Fulfill: a checks it and refuses
                reply = await net["a"].connector.handle_prepare(None, prepare_to("test.c", 4))
                assert isinstance(reply, Reject)
                assert (reply.code, reply.triggered_by) == ("F05", "test.a")
                assert net["a"].clearing.balances == {}
                assert net["b"].clearing.balances == {}
                assert net["a"].connector.balances.reserved("c") == (0, 0)
                assert net["a"].connector.links.state("c").state == Connectivity.READY
        finally:
            await runner.cleanup()

    asyncio.run(run())


def test_peer_addresses_are_never_forwarded() -> None:
    async def run() -> None:
        async with network([("a", "b"), ("b", "c")], routes={"a": [("", "b")]}) as net:
            async with aiohttp.ClientSession() as http:
                # Answered by b itself: ILDCP only for children, CCP only when it is on.
                for destination, code in (
                    ("peer.config", "F00"),
                    ("peer.route.control", "F00"),  # route exchange is off here
                    ("peer.settle.x", "F02"),
                    ("peer.unknown", "F02"),
                ):
                    body = serialize(Prepare(0, later(), SETTLE_CONDITION, destination, b"hi"))
                    headers = {"Authorization": f"Bearer {token('a', 'b')}"}
                    async with http.post(net["b"].connector.url, data=body, headers=headers) as r:
                        reply = parse_reply(await r.read())
                    assert isinstance(reply, Reject)
                    assert reply.code == code, (destination, reply)
            # From this host, even peer.settle does not go through the switch.
            for destination in ("peer.settle", "peer.config"):
                prepare = Prepare(0, later(), SETTLE_CONDITION, destination, b"hi")
                reply = await net["a"].connector.handle_prepare(None, prepare)
                assert isinstance(reply, Reject) and reply.code == "F02"
            for name in "abc":
                assert net[name].messages.received == []
                states = net[name].connector.link_states()
                # nothing was sent over any link: a and c never used theirs
                if name != "b":
                    assert all(s.state == Connectivity.IDLE for s in states)

    asyncio.run(run())


def test_peer_settle_round_trip() -> None:
    async def run() -> None:
        async with network([("a", "b"), ("b", "c")]) as net:
            assert net["a"].connector.settlement_messages("b") == ""
            answer = await net["a"].connector.send_settlement_message("b", b"claim #1")
            assert answer == b"ack:claim #1"
            assert net["a"].connector.settlement_messages("b") == "ok"
            answer = await net["c"].connector.send_settlement_message("b", b"")
            assert answer == b"ack:"
            assert net["b"].messages.received == [("a", b"claim #1"), ("c", b"")]
            assert net["a"].messages.received == []
            largest = bytes(32767 - len(b"ack:"))  # so that the reply is the largest too
            assert (
                await net["b"].connector.send_settlement_message("a", largest) == b"ack:" + largest
            )
            for name in "abc":
                assert net[name].clearing.balances == {}

    asyncio.run(run())


def test_peer_settle_refusals_come_back_as_errors() -> None:
    async def run() -> None:
        def boom(account: str, data: bytes) -> bytes:
            raise RuntimeError("engine exploded")

        async with network(
            [("a", "b"), ("a", "c"), ("a", "d")],
            messages={
                "b": RecordingMessages(refuse("F42", "no channel open")),
                "c": RecordingMessages(boom),
                "d": RecordingMessages(lambda account, data: bytes(40000)),
            },
        ) as net:
            with pytest.raises(PeerRefused, match="no channel open") as refused:
                await net["a"].connector.send_settlement_message("b", b"hello")
            assert refused.value.code == "F42"
            with pytest.raises(PeerRefused) as failed:
                await net["a"].connector.send_settlement_message("c", b"hello")
            assert failed.value.code == "F99"
            assert "exploded" not in str(failed.value)  # internals stay on c
            with pytest.raises(PeerRefused, match="exceeds 32767") as too_long:
                await net["a"].connector.send_settlement_message("d", b"hello")
            assert too_long.value.code == "F99"
            with pytest.raises(UnknownPeer):
                await net["a"].connector.send_settlement_message("nobody", b"hello")
            with pytest.raises(ValueError, match="at most 32767 bytes"):
                await net["a"].connector.send_settlement_message("b", bytes(32768))

    asyncio.run(run())


def test_malformed_peer_settle_prepares_are_rejected_by_peer_settle() -> None:
    async def run() -> None:
        async with network([("a", "b")]) as net:
            async with aiohttp.ClientSession() as http:
                for amount, condition, code in (
                    (1, SETTLE_CONDITION, "F06"),
                    (0, bytes(32), "F05"),
                ):
                    body = serialize(Prepare(amount, later(), condition, "peer.settle", b"m"))
                    headers = {"Authorization": f"Bearer {token('a', 'b')}"}
                    async with http.post(net["b"].connector.url, data=body, headers=headers) as r:
                        reply = parse_reply(await r.read())
                    assert isinstance(reply, Reject)
                    assert (reply.code, reply.triggered_by) == (code, "peer.settle")
                expired = settle_prepare(b"m", datetime.now(UTC) - timedelta(seconds=1))
                headers = {"Authorization": f"Bearer {token('a', 'b')}"}
                async with http.post(
                    net["b"].connector.url, data=serialize(expired), headers=headers
                ) as r:
                    reply = parse_reply(await r.read())
                assert isinstance(reply, Reject) and reply.code == "R00"
            assert net["b"].messages.received == []
            assert net["b"].clearing.balances == {}

    asyncio.run(run())


def test_an_unreachable_peer_is_t01_and_a_failed_link_until_it_comes_up() -> None:
    async def run() -> None:
        async with network([("a", "b")], not_started=["b"]) as net:
            a = net["a"].connector
            seen: list[ConnectionState] = []

            async def follow() -> None:
                async for state in a.watch_links():
                    seen.append(state)

            watcher = asyncio.create_task(follow())
            await asyncio.sleep(0)
            assert a.links.state("b").state == Connectivity.IDLE
            reply = await a.handle_prepare(None, prepare_to("test.b", 3))
            assert isinstance(reply, Reject)
            assert (reply.code, reply.triggered_by) == ("T01", "test.a")
            link = a.links.state("b")
            assert link.state == Connectivity.TRANSIENT_FAILURE
            assert "cannot reach http://127.0.0.1:" in link.last_error
            assert link.attempts == 1
            with pytest.raises(PeerUnreachable, match="peer b: cannot reach"):
                await a.send_settlement_message("b", b"hello")
            assert a.links.state("b").attempts == 2
            assert net["a"].clearing.balances == {}
            assert a.balances.reserved("b") == (0, 0)

            await net.start("b")
            reply = await a.handle_prepare(None, prepare_to("test.b", 3))
            assert isinstance(reply, Fulfill)
            assert a.links.state("b").state == Connectivity.READY
            assert a.links.state("b").last_error == ""
            assert net["a"].clearing.balances == {"b": -3}

            expected = ["CONNECTING", "TRANSIENT_FAILURE", "CONNECTING", "TRANSIENT_FAILURE"]
            expected += ["CONNECTING", "READY"]
            await wait_until_async(lambda: len(seen) >= len(expected), "six link changes")
            assert [s.state.name for s in seen] == expected
            assert {s.name for s in seen} == {"peer:b"}

            await a.stop()
            await asyncio.wait_for(watcher, 30)  # the watch ends at stop
            assert seen[-1].state == Connectivity.SHUTDOWN

    asyncio.run(run())


def test_a_peer_that_rejects_our_token_is_a_failed_link() -> None:
    async def run() -> None:
        async with network([("a", "b")], token_overrides={("a", "b"): "not-the-token"}) as net:
            reply = await net["a"].connector.handle_prepare(None, prepare_to("test.b", 3))
            assert isinstance(reply, Reject) and reply.code == "T01"
            link = net["a"].connector.links.state("b")
            assert link.state == Connectivity.TRANSIENT_FAILURE
            assert link.last_error.startswith("HTTP 401 from ")

    asyncio.run(run())


def test_a_packet_for_an_account_not_there_yet_is_a_clear_t00(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A peer's packet for an account the engine has not created yet (its adaptor is still
    starting): a T00 Reject that says so, and no ERROR traceback (before: "internal error on a
    Prepare" with NotFound, once per packet)."""

    async def run() -> None:
        store = await SqliteStore.open(tmp_path / "engine.db")
        try:
            clearing = EngineClearing(Engine(store, {}))
            peer = PeerConfig("p", "http://127.0.0.1:9/", "test.p", "in-token-1", "out-token-1")
            connector = Connector("test.me", [peer], [], clearing, RecordingMessages())
            reply = await connector.handle_prepare("p", prepare_to("test.me.x", 5))
            assert isinstance(reply, Reject)
            assert reply.code == "T00"
            assert "account p is not ready yet" in reply.message
        finally:
            await store.close()

    caplog.set_level(logging.INFO)
    asyncio.run(run())
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
