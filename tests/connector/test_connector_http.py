"""ILP-over-HTTP on a real socket: authentication, garbage bodies, size limit, methods."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from connector_harness import Net, RecordingMessages, network, prepare_to, token

from host.connector import (
    Connector,
    InMemoryClearing,
    PeerConfig,
    RouteConfig,
    parse_connector_config,
)
from host.connector.http import MAX_BODY, IlpHttpServer
from host.ilp import Fulfill, Reject, parse_reply, serialize


def with_net(test: Callable[[Net, aiohttp.ClientSession, str], Awaitable[None]]) -> None:
    """Run ``test`` against hosts a, b, c (b peered with both) and a plain HTTP client."""

    async def run() -> None:
        async with network([("a", "b"), ("b", "c")]) as net, aiohttp.ClientSession() as http:
            await test(net, http, net["b"].connector.url)

    asyncio.run(run())


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}", "Content-Type": "application/octet-stream"}


def test_missing_or_wrong_token_is_401_and_nothing_moves() -> None:
    async def test(net: Net, http: aiohttp.ClientSession, url: str) -> None:
        body = serialize(prepare_to("test.b", 5))
        for headers in (
            {},
            bearer("token-a-to-x"),
            bearer(token("b", "a")),  # b's token for a, not a's for b
            {"Authorization": f"Basic {token('a', 'b')}"},
            {"Authorization": "Bearer"},
        ):
            async with http.post(url, data=body, headers=headers) as response:
                assert response.status == 401, headers
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert net["b"].clearing.balances == {}

    with_net(test)


def test_the_token_identifies_the_peer_account() -> None:
    async def test(net: Net, http: aiohttp.ClientSession, url: str) -> None:
        for sender, amount in (("a", 3), ("c", 4), ("a", 10)):
            body = serialize(prepare_to("test.b", amount))
            async with http.post(url, data=body, headers=bearer(token(sender, "b"))) as response:
                assert response.status == 200
                assert response.content_type == "application/octet-stream"
                assert isinstance(parse_reply(await response.read()), Fulfill)
        assert net["b"].clearing.balances == {"a": 13, "c": 4}

    with_net(test)


def test_a_body_that_is_not_a_prepare_gets_an_f01_reject() -> None:
    async def test(net: Net, http: aiohttp.ClientSession, url: str) -> None:
        prepare = serialize(prepare_to("test.b", 5))
        fulfill = serialize(Fulfill(bytes(32)))
        for garbage in (b"", b"\x0c", b"hello world", prepare[:-1], prepare + b"\x00", fulfill):
            async with http.post(url, data=garbage, headers=bearer(token("a", "b"))) as response:
                assert response.status == 200
                reply = parse_reply(await response.read())
                assert isinstance(reply, Reject), garbage
                assert (reply.code, reply.triggered_by) == ("F01", "test.b")
                assert "not a valid ILP Prepare" in reply.message
        assert net["b"].clearing.balances == {}

    with_net(test)


def test_a_body_over_64_kib_is_413() -> None:
    async def test(net: Net, http: aiohttp.ClientSession, url: str) -> None:
        headers = bearer(token("a", "b"))
        async with http.post(url, data=b"\x0c" * (MAX_BODY + 1), headers=headers) as response:
            assert response.status == 413

        async def chunks() -> object:  # no Content-Length: the limit applies while reading
            for _ in range(3):
                yield b"\x00" * MAX_BODY

        async with http.post(url, data=chunks(), headers=headers) as response:
            assert response.status == 413
        async with http.post(url, data=b"\x0c" * MAX_BODY, headers=headers) as response:
            assert response.status == 200  # exactly the limit is read (and is garbage: F01)
            reply = parse_reply(await response.read())
            assert isinstance(reply, Reject) and reply.code == "F01"

    with_net(test)


def test_only_post_is_served() -> None:
    async def test(net: Net, http: aiohttp.ClientSession, url: str) -> None:
        async with http.get(url, headers=bearer(token("a", "b"))) as response:
            assert response.status == 405
            assert response.headers["Allow"] == "POST"

    with_net(test)


def test_a_failing_handler_is_a_500_and_the_server_keeps_serving() -> None:
    async def run() -> None:
        calls = 0

        async def handler(peer_id: str, body: bytes) -> bytes:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("a bug")
            return b"ok:" + peer_id.encode()

        server = IlpHttpServer(handler, {"p": "secret-token"})
        await server.start()
        try:
            async with aiohttp.ClientSession() as http:
                for status, text in ((500, "internal error\n"), (200, "ok:p")):
                    async with http.post(
                        server.url, data=b"x", headers=bearer("secret-token")
                    ) as r:
                        assert (r.status, await r.text()) == (status, text)
        finally:
            await server.stop()
            await server.stop()  # idempotent

    asyncio.run(run())


def test_a_connector_from_config_listens_on_a_free_port() -> None:
    async def run() -> None:
        config = parse_connector_config(
            {
                "connector": {"address": "test.solo", "port": 0},
                "peer": [
                    {
                        "id": "p",
                        "url": "http://127.0.0.1:9/",
                        "address": "test.p",
                        "incoming_token": "p-to-solo-token",
                        "outgoing_token": "solo-to-p-token",
                    }
                ],
            }
        )
        assert config is not None
        clearing = InMemoryClearing()
        connector = Connector.from_config(config, clearing, RecordingMessages())
        with pytest.raises(RuntimeError, match="not started"):
            _ = connector.port
        async with connector, aiohttp.ClientSession() as http:
            assert connector.port > 0
            assert connector.url == f"http://127.0.0.1:{connector.port}/"
            body = serialize(prepare_to("test.solo.x", 2))
            async with http.post(connector.url, data=body, headers=bearer("p-to-solo-token")) as r:
                assert isinstance(parse_reply(await r.read()), Fulfill)
        assert clearing.balances == {"p": 2}

    asyncio.run(run())


def test_a_connector_refuses_an_inconsistent_setup() -> None:
    peer = PeerConfig("p", "http://127.0.0.1:9/", "test.p", "in-token-1", "out-token-1")
    ports = (InMemoryClearing(), RecordingMessages())
    with pytest.raises(ValueError, match=r"must not be a peer\.\* address"):
        Connector("peer.settle", [peer], [], *ports)
    with pytest.raises(ValueError, match="unknown peer 'q'"):
        Connector("test.me", [peer], [RouteConfig("test.q", "q")], *ports)
    with pytest.raises(ValueError, match="unique"):
        Connector("test.me", [peer, peer], [], *ports)
