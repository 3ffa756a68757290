"""One connection of the ILP-over-HTTP server: HTTP/1.1 on a bare asyncio protocol.

The packet endpoint needs little of HTTP: one ``POST`` with a small body, one response with a
small body, keep-alive. A web framework's request and response objects, router and streams
cost more per packet than the packet's own work (bench/bench_vs_ilp_connector.py's floors: a
relay on aiohttp spends about three times the CPU of one on asyncio protocols), so each
connection parses its requests with httptools (llhttp, the parser of Node.js) and writes its
responses as bytes.

Per request, in the order the server decides (:class:`Endpoint` holds what is shared):

- its headers complete: a method other than POST is ``405``, a missing or unknown token
  ``401``, a declared length over the limit ``413``, each answered at once, without reading
  the body, and the connection is closed after it (its unread input drained first, so that the
  client reads the answer rather than a reset);
- an ``Expect: 100-continue`` is answered once the request is accepted;
- its body must be complete within the body timeout (``408`` otherwise) and stay within the
  limit while it arrives (``413`` for a chunked body that grows past it);
- the complete body goes to the packet handler in a task of its own; its reply is the ``200``.

Responses go out in the order of the requests (pipelining; at most :data:`MAX_PIPELINED` of one
connection are handled at once). A malformed request is ``400``
and one client-error line (host.connector.http_guard.ClientErrorLog); a handler that raises
is ``500`` and logged with its traceback (a bug of ours). The connection's idle and header
bounds are the guard's (host.connector.http_guard.ConnectionGuard), which wraps this protocol.
A client that goes away does not cancel the packet being handled: its durable work completes.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

import httptools

from host.connector.http_guard import ClientErrorLog, ConnectionGuard, excerpt

#: Requests of one connection handled at once; the next wait for a turn, and the connection is
#: read no further while some wait (a peer that pipelines more waits as its TCP window fills).
MAX_PIPELINED: Final = 16
#: How long a closing connection keeps reading (and dropping) what the client still sends,
#: so that the client reads the answer before the socket is gone.
LINGER: Final = 2.0

PacketHandler = Callable[[str, bytes], Awaitable[bytes]]


@dataclass
class Endpoint:
    """What every connection of one server shares."""

    handler: PacketHandler
    #: The peer id whose token an Authorization header carries, or None.
    authenticate: Callable[[str | None], str | None]
    guard: ConnectionGuard
    errors: ClientErrorLog
    log: logging.Logger
    max_body: int
    content_type: str
    connections: set[ServerConnection] = field(default_factory=set)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _ok_head: bytes | None = field(default=None, init=False, repr=False)

    def answer(self, reply: bytes, close: bool) -> bytes:
        """The ``200`` carrying a packet handler's reply: :func:`response`'s bytes, from a
        head encoded once per server rather than once per packet."""
        head = self._ok_head
        if head is None:
            head = self._ok_head = _head(200, "OK", f"Content-Type: {self.content_type}\r\n")
        return b"".join((head, b"%d\r\n" % len(reply), _CLOSE if close else b"", b"\r\n", reply))


def response(
    status: int, reason: str, body: bytes, headers: str = "", close: bool = False
) -> bytes:
    """A complete HTTP/1.1 response (Content-Length framing). Pure."""
    return b"".join(
        (
            _head(status, reason, headers),
            b"%d\r\n" % len(body),
            _CLOSE if close else b"",
            b"\r\n",
            body,
        )
    )


def _head(status: int, reason: str, headers: str) -> bytes:
    """A response's head up to the value of its Content-Length."""
    return f"HTTP/1.1 {status} {reason}\r\n{headers}Content-Length: ".encode("latin-1")


_CLOSE: Final = b"Connection: close\r\n"


def _text(status: int, reason: str, text: str, headers: str = "", close: bool = True) -> bytes:
    return response(
        status,
        reason,
        text.encode(),
        f"Content-Type: text/plain; charset=utf-8\r\n{headers}",
        close,
    )


class _Slot:
    """A response in the connection's queue: its bytes once known, and whether it is the last."""

    __slots__ = ("close", "data")

    def __init__(self, data: bytes | None = None, close: bool = False) -> None:
        self.data = data
        self.close = close


class ServerConnection(asyncio.Protocol):
    """The server side of one connection (module docstring)."""

    def __init__(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._queue: collections.deque[_Slot] = collections.deque()
        #: No further request is read: a refusal, a malformed request or the client's EOF.
        self._closing = False
        self._body_timer: asyncio.TimerHandle | None = None
        self._linger: asyncio.TimerHandle | None = None
        self._in_message = False
        #: Handlers running for this connection, and complete requests waiting for a turn.
        self._running = 0
        self._waiting: collections.deque[tuple[str, bytes, _Slot]] = collections.deque()
        self._reset()

    def _reset(self) -> None:
        self._authorization: str | None = None
        self._length: int | None = None
        self._expect_continue = False
        self._peer: str | None = None
        self._body: list[bytes] = []
        self._size = 0

    # -- the transport's events ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._endpoint.connections.add(self)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return  # lingering: what the client still sends is dropped
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._malformed("asked to upgrade the connection")
        except httptools.HttpParserError as exc:
            self._malformed(f"sent a malformed request ({excerpt(exc)})")
        else:
            # An accepted request whose body is still to come is bounded from now; one that
            # arrived whole (the usual case) needs no timer.
            peer = self._peer
            if (
                self._in_message
                and peer is not None
                and self._body_timer is None
                and not self._closing
            ):
                self._body_timer = asyncio.get_running_loop().call_later(
                    self._endpoint.guard.limits.body_timeout, self._body_too_slow, peer
                )

    def eof_received(self) -> bool:
        if self._closing:
            return False
        if self._in_message:
            self._broken_off("the client closed its side")
        self._closing = True
        if not self._queue:
            return False
        self._queue[-1].close = True  # answer what is pending, then close
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self._in_message and not self._closing:
            self._broken_off(type(exc).__name__ if exc else "the connection closed")
        self._closing = True
        self._transport = None
        self._cancel_body_timer()
        if self._linger is not None:
            self._linger.cancel()
        self._endpoint.connections.discard(self)

    def close(self) -> None:
        """Close the connection now (the server stops)."""
        if self._transport is not None:
            self._transport.close()

    # -- the parser's callbacks -----------------------------------------------------------

    def on_message_begin(self) -> None:
        self._in_message = True
        self._reset()

    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered == b"authorization":
            self._authorization = value.decode("latin-1")
        elif lowered == b"content-length":
            self._length = int(value)  # llhttp has checked it is a number
        elif lowered == b"expect":
            self._expect_continue = value.lower() == b"100-continue"

    def on_headers_complete(self) -> None:
        if self._closing:
            return
        endpoint = self._endpoint
        transport = self._transport
        endpoint.guard.headers_received(transport)
        if self._parser.get_method() != b"POST":
            self._refuse(_text(405, "Method Not Allowed", "use POST\n", "Allow: POST\r\n"))
            return
        peer = endpoint.authenticate(self._authorization)
        if peer is None:
            self._refuse(
                _text(
                    401,
                    "Unauthorized",
                    "missing or unknown bearer token\n",
                    'WWW-Authenticate: Bearer realm="ilp"\r\n',
                )
            )
            return
        endpoint.guard.authenticated(transport)
        if self._length is not None and self._length > endpoint.max_body:
            self._refuse(self._too_large())
            return
        self._peer = peer
        if self._expect_continue and transport is not None:
            transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self._closing:
            return
        self._size += len(body)
        if self._size > self._endpoint.max_body:
            self._refuse(self._too_large())
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._in_message = False
        if self._closing:
            return
        self._cancel_body_timer()
        peer = self._peer
        assert peer is not None
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        slot = _Slot(close=not self._parser.should_keep_alive())
        self._queue.append(slot)
        if self._running < MAX_PIPELINED:
            self._start(peer, body, slot)
        else:
            if not self._waiting and self._transport is not None:
                self._transport.pause_reading()
            self._waiting.append((peer, body, slot))

    def _start(self, peer: str, body: bytes, slot: _Slot) -> None:
        self._running += 1
        task = asyncio.get_running_loop().create_task(self._serve(peer, body, slot))
        self._endpoint.tasks.add(task)
        task.add_done_callback(self._endpoint.tasks.discard)

    # -- answers --------------------------------------------------------------------------

    async def _serve(self, peer: str, body: bytes, slot: _Slot) -> None:
        endpoint = self._endpoint
        try:
            reply = await endpoint.handler(peer, body)
        except Exception:  # the handler answers every body; this is a bug, keep serving
            endpoint.log.exception("ILP packet handler failed for a request from peer %s", peer)
            slot.data = _text(500, "Internal Server Error", "internal error\n", close=slot.close)
        else:
            slot.data = endpoint.answer(reply, slot.close)
        self._running -= 1
        if self._waiting:
            self._start(*self._waiting.popleft())
            if not self._waiting and self._transport is not None:
                self._transport.resume_reading()
        self._flush()

    def _flush(self) -> None:
        """Write the answers that are ready, in the order of their requests."""
        queue = self._queue
        while queue and queue[0].data is not None:
            slot = queue.popleft()
            transport = self._transport
            if transport is None or transport.is_closing():
                queue.clear()
                return
            assert slot.data is not None
            transport.write(slot.data)
            self._endpoint.guard.response_sent(transport)
            if slot.close:
                queue.clear()
                self._shut(transport)
                return

    def _refuse(self, answer: bytes) -> None:
        """Answer the current request with ``answer`` and read no further request."""
        self._closing = True
        self._cancel_body_timer()
        self._queue.append(_Slot(answer, close=True))
        self._flush()

    def _shut(self, transport: asyncio.Transport) -> None:
        """Close after the last answer; input the client may still send is drained a while."""
        self._closing = True
        if transport.can_write_eof():
            transport.write_eof()
            loop = asyncio.get_running_loop()
            self._linger = loop.call_later(LINGER, transport.close)
        else:
            transport.close()

    def _too_large(self) -> bytes:
        limit = self._endpoint.max_body
        return _text(413, "Payload Too Large", f"an ILP packet is at most {limit} bytes\n")

    def _malformed(self, what: str) -> None:
        self._in_message = False
        self._endpoint.errors.client_error(f"ILP-over-HTTP: {self._who()} {what}")
        self._refuse(_text(400, "Bad Request", "malformed request\n"))

    def _broken_off(self, why: str) -> None:
        self._in_message = False
        who = f"peer {self._peer}" if self._peer else self._who()
        self._endpoint.errors.client_error(
            f"ILP-over-HTTP: the request of {who} broke off before its end ({why})"
        )

    def _body_too_slow(self, peer: str) -> None:
        self._body_timer = None
        self._in_message = False
        limit = self._endpoint.guard.limits.body_timeout
        self._endpoint.errors.client_error(
            f"ILP-over-HTTP: peer {peer} did not send its body within {limit:g} s"
        )
        self._refuse(_text(408, "Request Timeout", "body too slow\n"))

    def _cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _who(self) -> str:
        transport = self._transport
        address = transport.get_extra_info("peername") if transport is not None else None
        if isinstance(address, tuple) and len(address) >= 2:
            return f"a client at {address[0]}:{address[1]}"
        return "a client"
