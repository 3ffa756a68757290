"""Relations, ILDCP, route broadcast and per-packet HTTP errors between real connectors.

Every host is a real Connector with its ILP-over-HTTP server on loopback; the packets between
them are the CCP and ILDCP messages ilp-connector exchanges (its own side is tested in
tests/interop).
"""

from __future__ import annotations

import asyncio
import socket

import aiohttp
from aiohttp import web

from host.connector import Connector, InMemoryClearing, PeerConfig
from host.connector.routing import Route
from host.ilp import Fulfill, Prepare, Reject, parse_reply, serialize
from host.ilp.peer_settle import SETTLE_CONDITION
from sdk.connectivity import Connectivity
from tests.connector.connector_harness import (
    RecordingMessages,
    network,
    prepare_to,
    token,
)
from tests.polling import wait_until_async


def _learned(connector: Connector) -> dict[str, str | None]:
    return {r.prefix: r.peer_id for r in connector.routing.routes() if r.source == "learned"}


def test_a_child_learns_its_address_from_its_parent() -> None:
    async def run() -> None:
        relations = {("a", "b"): "child", ("b", "a"): "parent"}
        async with network([("a", "b")], relations=relations) as net:
            child = net["b"].connector
            assert (child.address, child.address_source) == ("test.a.b", "ildcp:a")
            # The parent is the child's default route; the child is under the parent's address.
            assert child.routing.resolve("test.anything") == Route("", "a")
            reply = await child.handle_prepare(None, prepare_to("test.a", 5))
            assert isinstance(reply, Fulfill)
            reply = await net["a"].connector.handle_prepare(None, prepare_to("test.a.b", 7))
            assert isinstance(reply, Fulfill)
            assert net["a"].clearing.balances == {"b": 5 - 7}
            assert net["b"].clearing.balances == {"a": 7 - 5}

    asyncio.run(run())


def test_routes_are_learned_without_static_routes_and_withdrawn() -> None:
    async def run() -> None:
        # a - b - c - e in a line, and d, a child of c: a learns c, d and e through b.
        links = [("a", "b"), ("b", "c"), ("c", "d"), ("c", "e")]
        relations = {("c", "d"): "child", ("d", "c"): "parent"}
        async with network(
            links, relations=relations, exchange_routes=True, route_interval=0.5
        ) as net:
            a, c = net["a"].connector, net["c"].connector
            await wait_until_async(
                lambda: "test.c" in _learned(a) and "test.a" in _learned(c), "routes"
            )
            await wait_until_async(lambda: "test.e" in _learned(a), "a route two hops away")
            assert a.routing.resolve("test.e.x") == Route("test.e", "b")
            assert a.routing.resolve("test.c.d") == Route("test.c", "b")
            assert [r.path for r in a.routing.routes() if r.prefix == "test.c"] == [("test.b",)]
            reply = await a.handle_prepare(None, prepare_to("test.c.d", 3))
            assert isinstance(reply, Fulfill)
            reply = await net["d"].connector.handle_prepare(None, prepare_to("test.a", 2))
            assert isinstance(reply, Fulfill)
            status = {p.peer_id: p for p in net["b"].connector.routes.status()}
            assert status["a"].send_mode == "SYNC" and status["c"].learned >= 1
            # c goes away: what b learned from c expires (hold-down) and b withdraws it at a.
            # (b's own route to its peer c stays: that one is configured.)
            await net["c"].connector.stop()
            await wait_until_async(lambda: "test.e" not in _learned(a), "withdrawal", timeout=20)
            reply = await a.handle_prepare(None, prepare_to("test.e", 3))
            assert isinstance(reply, Reject) and reply.code == "F02"

    asyncio.run(run())


def test_static_routes_win_over_learned_ones() -> None:
    async def run() -> None:
        links = [("a", "b"), ("a", "c"), ("b", "x"), ("c", "x")]
        async with network(
            links, routes={"a": [("test.x", "c")]}, exchange_routes=True, route_interval=0.5
        ) as net:
            a = net["a"].connector
            await wait_until_async(
                lambda: a.routing.learned("b") and a.routing.learned("c"), "routes"
            )
            assert a.routing.resolve("test.x.y") == Route("test.x", "c")
            assert a.routing.resolve("test.x.y").source == "configured"

    asyncio.run(run())


def test_http_errors_reject_one_packet_and_leave_the_link() -> None:
    """A peer whose HTTP server refuses big bodies (as ilp-plugin-http does: 413) and
    answers some requests with 4xx or 5xx."""
    statuses: list[int] = []

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        if len(body) > 32767:
            return web.Response(status=413, text="request entity too large")
        if statuses:
            return web.Response(status=statuses.pop(0), text="refused here")
        return web.Response(body=serialize(Reject("F99", "test.p", "no")))

    async def run() -> None:
        app = web.Application(client_max_size=1 << 20)
        app.router.add_post("/", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        peer = PeerConfig("p", f"http://127.0.0.1:{port}/", "test.p", "in-token-p", "out-token-p")
        connector = Connector(
            "test.me", [peer], [], InMemoryClearing({"p": (-100, 100)}), RecordingMessages()
        )
        try:
            async with connector:
                big = prepare_to("test.p.x", 1)
                big = Prepare(1, big.expires_at, big.execution_condition, "test.p.x", bytes(32767))
                reply = await connector.handle_prepare(None, big)
                assert isinstance(reply, Reject) and reply.code == "F08", reply
                assert "413" in reply.message
                state = connector.links.state("p")
                assert state.state == Connectivity.READY, state
                statuses.extend([400, 502, 502])
                for code in ("T01", "T01", "T01"):
                    reply = await connector.handle_prepare(None, prepare_to("test.p.x", 1))
                    assert isinstance(reply, Reject) and reply.code == code
                    assert "refused here" in reply.message
                assert connector.links.state("p").state == Connectivity.READY
                statuses.extend([500, 500, 500])
                for _ in range(3):
                    await connector.handle_prepare(None, prepare_to("test.p.x", 1))
                state = connector.links.state("p")
                assert state.state == Connectivity.TRANSIENT_FAILURE
                assert "5 server errors in a row" in state.last_error  # 502, 502, 500 x3
        finally:
            await runner.cleanup()

    asyncio.run(run())


def test_bare_tokens_only_where_the_peer_asks() -> None:
    async def run() -> None:
        async with network([("a", "b")]) as net:
            b = net["b"].connector
            prepare = Prepare(0, prepare_to("test.b", 0).expires_at, SETTLE_CONDITION, "test.b")
            async with aiohttp.ClientSession() as http:
                headers = {"Authorization": token("a", "b")}
                async with http.post(b.url, data=serialize(prepare), headers=headers) as r:
                    assert r.status == 401
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        peer = PeerConfig(
            "a",
            "http://127.0.0.1:9/",
            "test.a",
            "legacy-token",
            "out-token",
            accept_bare_token=True,
        )
        connector = Connector(
            "test.b", [peer], [], InMemoryClearing(), RecordingMessages(), sock=sock
        )
        async with connector, aiohttp.ClientSession() as http:
            for header in ("legacy-token", "Bearer legacy-token"):
                async with http.post(
                    connector.url, data=serialize(prepare), headers={"Authorization": header}
                ) as r:
                    assert r.status == 200
                    assert isinstance(parse_reply(await r.read()), Reject)

    asyncio.run(run())
