"""ILP-over-HTTP's HTTP/1.1 on real sockets, both sides: pipelined requests answered in order
(a bounded number at once), ``Expect: 100-continue``, HTTP/1.0; the client's kept-alive
connections (reused, replaced when the peer closed them, never reused after an exchange that
did not finish), its failures (refused, not HTTP, too large, too late) and TLS to an ``https``
peer."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from host.connector.http import (
    MAX_BODY,
    IlpHttpClient,
    IlpHttpServer,
    LinkFailure,
    LinkTimeout,
)
from host.connector.http_guard import Limits
from host.connector.http_serving import MAX_PIPELINED
from host.ilp import Fulfill, Reject, serialize
from sdk.mtls import SERVER_NAME, generate_certificate
from tests.polling import wait_until_async

TOKEN = "peer-secret-token"
PATIENCE = 20.0
FULFILL = serialize(Fulfill(bytes(32)))
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def request(body: bytes, extra: str = "", version: str = "1.1") -> bytes:
    return (
        f"POST / HTTP/{version}\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


@asynccontextmanager
async def ilp_server(
    handler: Callable[[str, bytes], Awaitable[bytes]], limits: Limits | None = None
) -> AsyncIterator[IlpHttpServer]:
    server = IlpHttpServer(handler, {"p": TOKEN}, limits=limits)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@asynccontextmanager
async def raw_server(
    handle: Handler, tls: ssl.SSLContext | None = None
) -> AsyncIterator[tuple[int, list[int]]]:
    """A plain socket server; yields its port and a list that counts its connections."""
    accepted: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        try:
            await handle(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=tls)
    async with server:
        yield server.sockets[0].getsockname()[1], accepted


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One request's body (Content-Length framing), b"" at the end of the stream."""
    head = await reader.readuntil(b"\r\n\r\n") if not reader.at_eof() else b""
    if not head:
        return b""
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return await reader.readexactly(length)


def ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body


@asynccontextmanager
async def client(tls: ssl.SSLContext | None = None) -> AsyncIterator[IlpHttpClient]:
    http = IlpHttpClient(tls=tls)
    await http.start()
    try:
        yield http
    finally:
        await http.close()


def test_pipelined_requests_are_answered_in_their_order_sixteen_at_a_time() -> None:
    running = 0
    most = 0

    async def slow_first(peer_id: str, body: bytes) -> bytes:
        nonlocal running, most
        running += 1
        most = max(most, running)
        try:
            await asyncio.sleep(0.3 if body == b"0" else 0.01)  # the first is done last
        finally:
            running -= 1
        return b"<%s>" % body

    async def main() -> None:
        async with ilp_server(slow_first) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"".join(request(b"%d" % n) for n in range(40)))
            answers = b""
            async with asyncio.timeout(PATIENCE):
                while answers.count(b"HTTP/1.1 200") < 40 or not answers.endswith(b"<39>"):
                    answers += await reader.read(65536)
            positions = [answers.index(b"<%d>" % n) for n in range(40)]
            assert positions == sorted(positions)
            writer.close()

    asyncio.run(main())
    assert most == MAX_PIPELINED


def test_expect_continue_and_http_1_0() -> None:
    async def echo(peer_id: str, body: bytes) -> bytes:
        return body

    async def main() -> None:
        async with ilp_server(echo) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(
                request(b"", "Expect: 100-continue\r\n").replace(b"Length: 0", b"Length: 3")
            )
            async with asyncio.timeout(PATIENCE):
                assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
                writer.write(b"abc")
                assert (await reader.readline()).startswith(b"HTTP/1.1 200")
                assert (await reader.readuntil(b"\r\n\r\n")).count(b"Content-Length: 3") == 1
                assert await reader.readexactly(3) == b"abc"
            writer.close()
            # HTTP/1.0 without keep-alive: the answer, then the server closes.
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(request(b"xyz", version="1.0"))
            async with asyncio.timeout(PATIENCE):
                answer = await reader.read()
            assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"xyz")
            assert b"Connection: close" in answer
            writer.close()

    asyncio.run(main())


def test_the_client_keeps_its_connection_and_replaces_one_the_peer_closed() -> None:
    async def main() -> None:
        closed = asyncio.Event()

        async def three_then_close(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            for _ in range(3):
                await read_request(reader)
                writer.write(ok(FULFILL))
                await writer.drain()
            if len(accepted) == 1:  # the first connection: closed as a peer closes an idle one
                writer.close()
                await writer.wait_closed()
                closed.set()
            else:
                await reader.read()

        async with raw_server(three_then_close) as (port, accepted), client() as http:
            url = f"http://127.0.0.1:{port}/"
            for _ in range(3):
                assert isinstance(await http.send(url, TOKEN, b"x", PATIENCE), Fulfill)
            assert len(accepted) == 1  # one connection carried all three
            await wait_until_async(closed.is_set, "the peer to close the connection")
            assert isinstance(await http.send(url, TOKEN, b"x", PATIENCE), Fulfill)
            assert len(accepted) == 2

    asyncio.run(main())


def test_a_late_answer_never_reaches_the_next_exchange() -> None:
    async def main() -> None:
        release = asyncio.Event()

        async def late_then_prompt(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            while body := await read_request(reader):
                if body == b"one":
                    await release.wait()  # after the client gave up
                writer.write(ok(serialize(Reject("F99", "", f"answer to {body.decode()}", b""))))
                await writer.drain()

        async with raw_server(late_then_prompt) as (port, accepted), client() as http:
            url = f"http://127.0.0.1:{port}/"
            with pytest.raises(LinkTimeout):
                await http.send(url, TOKEN, b"one", 0.2)
            release.set()
            reply = await http.send(url, TOKEN, b"two", PATIENCE)
            assert isinstance(reply, Reject) and reply.message == "answer to two"
            assert len(accepted) == 2  # a new connection: the late answer went nowhere

    asyncio.run(main())


def test_what_the_client_cannot_use_is_a_link_failure() -> None:
    async def main() -> None:
        async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
            await writer.drain()

        async def huge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(ok(b"\x0d" * (MAX_BODY + 1)))
            await writer.drain()

        async def huge_chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for _ in range(3):
                writer.write(b"%x\r\n" % MAX_BODY + b"\x0d" * MAX_BODY + b"\r\n")
            await writer.drain()

        async with client() as http:
            for handle, message in (
                (garbage, "not an HTTP response"),
                (huge, "exceeds"),
                (huge_chunked, "exceeds"),
            ):
                async with raw_server(handle) as (port, _):
                    with pytest.raises(LinkFailure, match=message) as failure:
                        await http.send(f"http://127.0.0.1:{port}/", TOKEN, b"x", PATIENCE)
                    assert failure.value.maybe_delivered
            async with raw_server(garbage) as (port, _):
                pass  # closed: nothing listens on the port any more
            with pytest.raises(LinkFailure, match="cannot reach") as refused:
                await http.send(f"http://127.0.0.1:{port}/", TOKEN, b"x", PATIENCE)
            assert not refused.value.maybe_delivered

    asyncio.run(main())


def test_an_https_peer_is_reached_over_tls_and_its_certificate_checked(tmp_path: Path) -> None:
    certificate = generate_certificate()
    (tmp_path / "cert.pem").write_bytes(certificate.cert_pem)
    (tmp_path / "key.pem").write_bytes(certificate.key_pem)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    trusting = ssl.create_default_context(cadata=certificate.cert_pem.decode())

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader):
            writer.write(ok(FULFILL))
            await writer.drain()

    async def main() -> None:
        async with raw_server(answer, server_tls) as (port, accepted):
            url = f"https://{SERVER_NAME}:{port}/"
            async with client(trusting) as http:
                for _ in range(3):
                    assert isinstance(await http.send(url, TOKEN, b"x", PATIENCE), Fulfill)
                assert len(accepted) == 1
            async with client() as http:  # the system's roots do not know this certificate
                with pytest.raises(LinkFailure, match="CERTIFICATE_VERIFY_FAILED") as failure:
                    await http.send(url, TOKEN, b"x", PATIENCE)
                assert not failure.value.maybe_delivered

    asyncio.run(main())
