"""The ILP-over-HTTP server's bounds, probed with raw sockets as an attacker would: slow
headers, idle connections, slow bodies, too many unauthenticated connections, malformed
requests and disconnects mid-body (one rate-limited WARNING, never an ERROR or a traceback)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import pytest

from host.connector.http import IlpHttpServer
from host.connector.http_guard import ClientErrorLog, Limits, excerpt
from tests.polling import wait_until_async

TOKEN = "peer-secret-token"
#: Generous: each wait ends as soon as the server acts; this only bounds a broken server.
PATIENCE = 20.0


async def echo(peer_id: str, body: bytes) -> bytes:
    return body


def serve(
    scenario: Callable[[IlpHttpServer], Awaitable[None]], limits: Limits | None = None
) -> None:
    async def main() -> None:
        server = IlpHttpServer(echo, {"p": TOKEN}, limits=limits)
        await server.start()
        try:
            await scenario(server)
        finally:
            await server.stop()

    asyncio.run(main())


async def closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection."""
    async with asyncio.timeout(PATIENCE):
        return await reader.read()


def request(body_length: int, token: str = TOKEN) -> bytes:
    return (
        f"POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Length: {body_length}\r\n\r\n"
    ).encode()


def test_slow_headers_and_idle_connections_are_closed() -> None:
    async def scenario(server: IlpHttpServer) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"POST / HTTP/1.1\r\n")  # and never the rest
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", server.port)
        assert await closed_by_server(reader) == b""
        assert await closed_by_server(idle_reader) == b""
        for w in (writer, idle_writer):
            w.close()
        assert server.guard.open == 0

    serve(scenario, Limits(header_timeout=0.5, idle_timeout=0.5))


def test_a_keep_alive_connection_idles_only_so_long() -> None:
    async def scenario(server: IlpHttpServer) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(request(3) + b"abc")
        answer = await closed_by_server(reader)
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"abc")
        writer.close()

    serve(scenario, Limits(idle_timeout=0.5))


def test_slow_headers_are_closed_by_their_own_timeout_on_a_kept_alive_connection_too() -> None:
    """The header timeout bounds the headers of the first request and of a later one, with an
    idle timeout that would never close the connection in the test's time."""

    async def scenario(server: IlpHttpServer) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"POST / HTTP/1.1\r\nHost: x\r\n")  # and never the rest
        kept_reader, kept_writer = await asyncio.open_connection("127.0.0.1", server.port)
        kept_writer.write(request(3) + b"abc")
        async with asyncio.timeout(PATIENCE):
            head = await kept_reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
            assert await kept_reader.readexactly(3) == b"abc"
        kept_writer.write(b"POST / HTTP/1.1\r\n")  # the next request's headers never end
        assert await closed_by_server(reader) == b""
        assert await closed_by_server(kept_reader) == b""
        for w in (writer, kept_writer):
            w.close()
        assert server.guard.open == 0

    serve(scenario, Limits(header_timeout=0.5, idle_timeout=10 * PATIENCE))


def test_a_request_that_arrived_whole_is_not_cut_by_the_header_or_body_timeout() -> None:
    """Its handler may take longer than both timeouts: they bound what the client sends."""

    async def slow_echo(peer_id: str, body: bytes) -> bytes:
        await asyncio.sleep(1.0)
        return body

    async def main() -> None:
        limits = Limits(header_timeout=0.2, body_timeout=0.2, idle_timeout=10 * PATIENCE)
        server = IlpHttpServer(slow_echo, {"p": TOKEN}, limits=limits)
        await server.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            for _ in range(2):  # the first request of the connection, and a kept-alive one
                writer.write(request(3) + b"abc")
                async with asyncio.timeout(PATIENCE):
                    head = await reader.readuntil(b"\r\n\r\n")
                    assert head.startswith(b"HTTP/1.1 200"), head
                    assert await reader.readexactly(3) == b"abc"
            writer.close()
        finally:
            await server.stop()

    asyncio.run(main())


def test_a_slow_body_gets_408() -> None:
    async def scenario(server: IlpHttpServer) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(request(100) + b"x")  # 1 of 100 bytes, then nothing
        answer = await closed_by_server(reader)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        writer.close()

    serve(scenario, Limits(body_timeout=0.5))


def test_unauthenticated_connections_are_capped_and_peers_still_get_in() -> None:
    async def scenario(server: IlpHttpServer) -> None:
        held = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(5)]
        await wait_until_async(
            lambda: server.guard.unauthenticated == 5, "the server to see all five", interval=0.01
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        assert await closed_by_server(reader) == b""  # the sixth: closed at once
        writer.close()
        # A peer that authenticated on one of the held connections no longer counts...
        peer_reader, peer_writer = held[0]
        peer_writer.write(request(2) + b"ok")
        async with asyncio.timeout(PATIENCE):
            status = await peer_reader.readline()
        assert status.startswith(b"HTTP/1.1 200")
        assert server.guard.unauthenticated == 4
        # ...so a new connection is admitted again.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(request(2) + b"hi")
        async with asyncio.timeout(PATIENCE):
            assert (await reader.readline()).startswith(b"HTTP/1.1 200")
        for _, w in [*held, (reader, writer)]:
            w.close()

    serve(scenario, Limits(max_unauthenticated=5))


def test_malformed_requests_and_broken_bodies_are_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    flood = b"\x16\x03\x01" + b"A" * 3000 + b" / HTTP/1.1\r\n\r\n"

    async def scenario(server: IlpHttpServer) -> None:
        for bad in (flood, b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n") * 10:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(bad)
            await closed_by_server(reader)
            writer.close()
        # A peer that disconnects in the middle of its body.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(request(1000) + b"partial")
        await writer.drain()
        writer.close()
        await asyncio.sleep(0.2)

    serve(scenario, Limits(log_interval=3600))
    records = [r for r in caplog.records if r.name.startswith("ilp_host")]
    assert not [r for r in records if r.levelno >= logging.ERROR], records
    assert not [r for r in records if r.exc_info], "no tracebacks for client mistakes"
    warnings = [r for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert len(warnings[0].getMessage()) < 400  # the client's 3 KB are not echoed
    assert not [r for r in caplog.records if r.name.startswith("aiohttp") and r.exc_info]


def test_the_client_error_log_counts_what_it_left_out() -> None:
    now = [0.0]
    log = ClientErrorLog(logging.getLogger("ilp_host.test"), interval=10, clock=lambda: now[0])
    lines: list[str] = []
    log.addHandler(_Collect(lines))
    for _ in range(5):
        log.client_error("bad request")
    now[0] = 11
    log.client_error("bad request")
    assert lines == ["bad request", "bad request (4 more client errors not shown)"]
    assert excerpt("x" * 1000).endswith("...(cut)") and len(excerpt("x" * 1000)) < 200


class _Collect(logging.Handler):
    def __init__(self, lines: list[str]) -> None:
        super().__init__()
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
