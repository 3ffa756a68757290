"""The floor of an ILP-over-HTTP connector in Python: a relay that does no connector work at all.

It takes the sender's ILP-over-HTTP ``POST``, checks its bearer token (nothing else: no parse,
no routing, no balance, no expiry), posts the body to the receiver with the receiver's token
and returns the receiver's answer as its own. Whatever a real connector on this runtime does,
it does at least this per packet, so these relays bound from above what any Python connector
can forward (bench/bench_vs_ilp_connector.py's ``floor-aiohttp`` and ``floor-asyncio``):

- ``aiohttp``: an aiohttp application (one catch-all route) and a pooled ``ClientSession``,
  the stack the host used for its links;
- ``asyncio``: bare asyncio protocols on both sides, requests and responses parsed by httptools
  (llhttp, Node.js's parser), a pool of kept-alive connections to the receiver.

    .venv/bin/python bench/ilp_relay.py {aiohttp,asyncio} --port P --token T --to URL
        --to-token T2

Bench code: no limits, no timeouts, one receiver; not for use anywhere but loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hmac
from urllib.parse import urlsplit

import httptools
from aiohttp import ClientSession, TCPConnector, web


async def relay_aiohttp(port: int, token: str, to: str, to_token: str) -> None:
    expected = f"Bearer {token}"
    headers = {"Authorization": f"Bearer {to_token}", "Content-Type": "application/octet-stream"}
    session = ClientSession(connector=TCPConnector(limit=100))

    async def handle(request: web.Request) -> web.Response:
        if not hmac.compare_digest(request.headers.get("Authorization", ""), expected):
            return web.Response(status=401)
        body = await request.read()
        async with session.post(to, data=body, headers=headers) as response:
            reply = await response.read()
        return web.Response(body=reply, content_type="application/octet-stream")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


class _Upstream(asyncio.Protocol):
    """One kept-alive connection to the receiver: one exchange at a time."""

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[bytes] | None = None
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        waiter, self.waiter = self.waiter, None
        body, self.body = b"".join(self.body), []
        self.pool.idle.append(self)
        if waiter is not None and not waiter.done():
            waiter.set_result(body)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self in self.pool.idle:
            self.pool.idle.remove(self)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("the receiver closed the connection"))


class _Pool:
    def __init__(self, url: str, token: str) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.head = (
            f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/octet-stream\r\n"
        ).encode()
        self.idle: collections.deque[_Upstream] = collections.deque()

    async def post(self, body: bytes) -> bytes:
        if self.idle:
            upstream = self.idle.pop()
        else:
            loop = asyncio.get_running_loop()
            _, upstream = await loop.create_connection(
                lambda: _Upstream(self), self.host, self.port
            )
        assert upstream.transport is not None
        upstream.waiter = asyncio.get_running_loop().create_future()
        upstream.transport.write(self.head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        return await upstream.waiter


class _Downstream(asyncio.Protocol):
    """One sender connection; answers in the order of its requests."""

    def __init__(self, pool: _Pool, expected: bytes) -> None:
        self.pool = pool
        self.expected = expected
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.authorized = False
        self.body: list[bytes] = []
        self.last: asyncio.Future[None] | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_message_begin(self) -> None:
        self.authorized = False
        self.body = []

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"authorization":
            self.authorized = hmac.compare_digest(value, self.expected)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        previous = self.last
        done = asyncio.get_running_loop().create_future()
        self.last = done
        task = asyncio.create_task(
            self.answer(self.authorized, b"".join(self.body), previous, done)
        )
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def answer(
        self,
        authorized: bool,
        body: bytes,
        previous: asyncio.Future[None] | None,
        done: asyncio.Future[None],
    ) -> None:
        if authorized:
            reply = await self.pool.post(body)
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
        else:
            reply, head = b"", b"HTTP/1.1 401 Unauthorized\r\n"
        if previous is not None:
            await previous
        if self.transport is not None:
            self.transport.write(head + b"Content-Length: %d\r\n\r\n" % len(reply) + reply)
        done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def relay_asyncio(port: int, token: str, to: str, to_token: str) -> None:
    pool = _Pool(to, to_token)
    expected = f"Bearer {token}".encode()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Downstream(pool, expected), "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("kind", choices=["aiohttp", "asyncio"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token", required=True, help="the bearer token the sender presents")
    parser.add_argument("--to", required=True, help="the receiver's ILP-over-HTTP URL")
    parser.add_argument("--to-token", required=True, help="the bearer token for the receiver")
    args = parser.parse_args()
    relay = relay_aiohttp if args.kind == "aiohttp" else relay_asyncio
    asyncio.run(relay(args.port, args.token, args.to, args.to_token))


if __name__ == "__main__":
    main()
