"""The client side of ILP-over-HTTP: kept-alive HTTP/1.1 connections on bare asyncio protocols.

One exchange is a ``POST`` written as one buffer and its response parsed by httptools (as the
server side, host.connector.http_serving, and for the same reason: a client framework's
request and response objects cost more per packet than the packet). Connections are pooled
per origin (scheme, host, port) and reused while the peer keeps them alive; ``https`` URLs are
TLS with the system's trusted roots and the host name checked, as any HTTPS client does.

A connection carries one exchange at a time. One that was idle for longer than
:data:`KEEP_IDLE` is closed rather than reused (a peer's server closes idle connections after a
while; reusing one just as it closes would fail a packet that was never delivered), and so is
one whose socket holds unread input when it is taken (the peer's close that the loop has not
seen yet: a poll of the socket, microseconds). A
connection whose exchange did not finish (a timeout, a cancelled task, a response that was too
large or malformed) is closed, never reused.

Errors: :class:`ConnectFailed` when no connection could be made (the request was not sent);
:class:`ResponseTooLarge`; :class:`BadResponse` (not HTTP); :class:`ConnectionError` when the
connection broke after the request was written.
"""

from __future__ import annotations

import asyncio
import collections
import select
import ssl
from collections.abc import Callable
from typing import Final
from urllib.parse import urlsplit

import httptools

#: Seconds an idle connection is kept for reuse.
KEEP_IDLE: Final = 15.0


class ConnectFailed(Exception):
    """No connection to the origin could be made: the request was not sent."""


class ResponseTooLarge(Exception):
    """The response body exceeds the limit."""


class BadResponse(Exception):
    """What came back is not an HTTP response."""


class _Target:
    """A URL as the pool uses it: its origin and the request head up to Content-Length."""

    __slots__ = ("head", "host", "origin", "port", "tls")

    def __init__(self, url: str, headers: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.tls else 80)
        self.origin = (self.tls, self.host, self.port)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        self.head = f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n{headers}".encode("latin-1")


class _Connection(asyncio.Protocol):
    """One client connection; :meth:`exchange` writes a request and awaits its response."""

    def __init__(self, max_body: int, forget: Callable[[_Connection], None]) -> None:
        self._max_body = max_body
        self._forget = forget
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._body: list[bytes] = []
        self._size = 0
        self._status = 0
        self._delimited = False  # by Content-Length or chunks (otherwise: by the close)
        self._headers_done = False
        self.reusable = False
        self.idle_since = 0.0
        self._fd = -1

    @property
    def open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def unread(self) -> bool:
        """Whether the socket holds input the loop has not read yet: between two exchanges
        that is the peer's close (or bytes nobody asked for), so it is not to be reused."""
        try:
            return bool(select.select([self._fd], [], [], 0)[0])
        except (OSError, ValueError):
            return True

    def exchange(self, request: bytes) -> asyncio.Future[tuple[int, bytes]]:
        assert self.transport is not None
        self.reusable = False
        self._body, self._size, self._status = [], 0, 0
        self._delimited = self._headers_done = False
        waiter = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        self.transport.write(request)
        return waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # -- the transport's events ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._fd = transport.get_extra_info("socket").fileno()

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:
            self.close()  # bytes nobody asked for: the connection is out of step
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(BadResponse(f"not an HTTP response: {exc}"))

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._forget(self)
        if self._waiter is not None and self._headers_done and not self._delimited:
            self._done()  # a body delimited by the close is complete now
        else:
            self._fail(ConnectionError("the connection closed before the response was complete"))

    # -- the parser's callbacks -----------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered == b"content-length":
            self._delimited = True
            if int(value) > self._max_body:
                self._fail(
                    ResponseTooLarge(f"reply of {int(value)} bytes exceeds {self._max_body}")
                )
        elif lowered == b"transfer-encoding":
            self._delimited = True

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self._max_body:
            self._fail(ResponseTooLarge(f"reply exceeds {self._max_body} bytes"))
        else:
            self._body.append(body)

    def on_message_complete(self) -> None:
        if self._status < 200:  # an informational response (100 Continue): the answer follows
            self._headers_done = self._delimited = False
            self._body, self._size = [], 0
            return
        self.reusable = self._parser.should_keep_alive()
        self._done()

    def _done(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
            waiter.set_result((self._status, body))

    def _fail(self, error: Exception) -> None:
        self.reusable = False
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        self.close()


class ConnectionPool:
    """Kept-alive connections per origin, at most ``max_connections`` exchanges at once."""

    def __init__(
        self, max_connections: int, max_body: int, tls: ssl.SSLContext | None = None
    ) -> None:
        self._max_body = max_body
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: dict[tuple[bool, str, int], collections.deque[_Connection]] = {}
        self._targets: dict[tuple[str, str], _Target] = {}
        self._all: set[_Connection] = set()
        self._tls = tls
        self.closed = False

    async def post(self, url: str, headers: str, body: bytes) -> tuple[int, bytes]:
        """POST ``body`` to ``url`` with ``headers`` (CRLF-terminated lines, Host and
        Content-Length added); the status and body of the response."""
        target = self._target(url, headers)
        async with self._slots:
            connection = self._reuse(target) or await self._connect(target)
            request = target.head + b"Content-Length: %d\r\n\r\n" % len(body) + body
            try:
                status, reply = await connection.exchange(request)
            except BaseException:
                connection.close()
                raise
            if connection.reusable and not self.closed:
                connection.idle_since = asyncio.get_running_loop().time()
                self._idle.setdefault(target.origin, collections.deque()).append(connection)
            else:
                connection.close()
            return status, reply

    def close(self) -> None:
        """Close every connection. Idempotent."""
        self.closed = True
        for connection in list(self._all):
            connection.close()
        self._idle.clear()

    def _target(self, url: str, headers: str) -> _Target:
        key = (url, headers)
        target = self._targets.get(key)
        if target is None:
            if len(self._targets) > 1000:  # peers and their URLs are few; never grow unbounded
                self._targets.clear()
            target = self._targets[key] = _Target(url, headers)
        return target

    def _reuse(self, target: _Target) -> _Connection | None:
        idle = self._idle.get(target.origin)
        if not idle:
            return None
        oldest_kept = asyncio.get_running_loop().time() - KEEP_IDLE
        while idle:
            connection = idle.pop()  # the most recently used: the likeliest to be alive
            if connection.open and connection.idle_since >= oldest_kept and not connection.unread():
                return connection
            connection.close()
        return None

    async def _connect(self, target: _Target) -> _Connection:
        if self.closed:
            raise ConnectFailed("the client is closed")
        loop = asyncio.get_running_loop()
        context: ssl.SSLContext | None = None
        if target.tls:
            if self._tls is None:
                self._tls = ssl.create_default_context()
            context = self._tls
        try:
            _, connection = await loop.create_connection(
                lambda: _Connection(self._max_body, self._all.discard),
                target.host,
                target.port,
                ssl=context,
                server_hostname=target.host if context is not None else None,
            )
        except OSError as exc:  # refused, unreachable, no such name, a TLS failure
            text = str(exc)
            what = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
            raise ConnectFailed(what) from exc
        self._all.add(connection)
        return connection
