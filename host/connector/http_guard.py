"""Bounds on the connections of the ILP-over-HTTP server, before and after authentication.

The server listens where peers reach it, so anyone may open connections to it. Without bounds
a client that sends a request line and nothing more, or a body one byte at a time, holds a
connection (a file descriptor and its buffers) for as long as it likes, and a few thousand of
them exhaust the host. :class:`ConnectionGuard` wraps each connection's protocol
(host.connector.http_serving.ServerConnection) and closes it when:

- the complete headers of a request have not arrived ``header_timeout`` seconds after its
  first byte (slow headers);
- no new request starts ``idle_timeout`` seconds after the connection opened or the last
  response (idle keep-alive);
- more than ``max_unauthenticated`` connections are open that have not yet presented a valid
  token: a new one is closed at once. Peers' connections, once authenticated, do not count.

Over HTTPS a connection is counted from its first moment, not from the end of its TLS
handshake: :meth:`ConnectionGuard.tls_protocol` accepts the TCP connection itself, counts it
against ``max_unauthenticated`` while the handshake runs, bounds the handshake by
``header_timeout``, and logs a failed one (an untrusted or missing certificate, plain HTTP
sent to the HTTPS port, a client that gave up) as the client's mistake. Left to asyncio's
``create_server(ssl=...)``, connections in the handshake were counted nowhere and a failed
handshake was not logged at all.

The request handler reports each request's progress (:meth:`ConnectionGuard.headers_received`,
:meth:`ConnectionGuard.authenticated`, :meth:`ConnectionGuard.response_sent`); it bounds the
body's read itself (``body_timeout``).

:class:`ClientErrorLog` is the server's log for what clients do wrong (malformed requests,
disconnects mid-body, slow clients): one WARNING line without a traceback, at most one per
interval (a count of the lines left out comes with the next), never the client's bytes beyond
a short, escaped excerpt. A client cannot fill the log.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

#: Defaults, in seconds and connections.
HEADER_TIMEOUT: Final = 10.0
BODY_TIMEOUT: Final = 10.0
IDLE_TIMEOUT: Final = 60.0
MAX_UNAUTHENTICATED: Final = 256
#: Longest excerpt of a client's input in a log line.
EXCERPT: Final = 120


@dataclass(frozen=True)
class Limits:
    """The bounds of the module docstring."""

    header_timeout: float = HEADER_TIMEOUT
    body_timeout: float = BODY_TIMEOUT
    idle_timeout: float = IDLE_TIMEOUT
    max_unauthenticated: int = MAX_UNAUTHENTICATED
    #: At most one client-error line per this many seconds.
    log_interval: float = 10.0


def excerpt(text: object, limit: int = EXCERPT) -> str:
    """``text`` for a log line: escaped (repr), cut to ``limit`` characters. Pure."""
    shown = repr(str(text))
    return shown if len(shown) <= limit else f"{shown[:limit]}...(cut)"


class ClientErrorLog(logging.Logger):
    """A logger for client mistakes: WARNING without traceback, rate-limited (see above)."""

    def __init__(
        self,
        parent: logging.Logger,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(f"{parent.name}.clients")
        self.parent = parent
        self._interval = interval
        self._clock = clock
        self._last: float | None = None
        self.suppressed = 0

    def client_error(self, what: str) -> None:
        """Log ``what`` a client did wrong, unless a line was logged less than an interval ago."""
        now = self._clock()
        if self._last is not None and now - self._last < self._interval:
            self.suppressed += 1
            return
        self._last = now
        more = f" ({self.suppressed} more client errors not shown)" if self.suppressed else ""
        self.suppressed = 0
        self.warning("%s%s", what, more)


class _Connection:
    """What the guard knows of one connection."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.authenticated = False
        self.in_request = False
        #: A request has begun whose headers are not complete yet.
        self.headers_due = False
        self.timer: asyncio.TimerHandle | None = None
        #: Whether ``timer`` is the header timeout (else the idle one, or none).
        self.timing_headers = False


class ConnectionGuard:
    """Tracks the server's connections and closes those past a bound (module docstring)."""

    def __init__(self, limits: Limits, errors: ClientErrorLog) -> None:
        self.limits = limits
        self._errors = errors
        self._connections: dict[asyncio.BaseTransport, _Connection] = {}
        self.unauthenticated = 0
        #: Connections whose TLS handshake is under way, and the tasks running them.
        self.handshaking = 0
        self.handshakes: set[asyncio.Task[None]] = set()

    def protocol(self, inner: asyncio.Protocol) -> asyncio.Protocol:
        """``inner`` (a fresh request handler) wrapped: the protocol factory's product."""
        return _GuardedProtocol(inner, self)

    def tls_protocol(self, inner: asyncio.Protocol, context: ssl.SSLContext) -> asyncio.Protocol:
        """``inner`` wrapped as :meth:`protocol` does, behind a TLS handshake that this guard
        counts and bounds (module docstring): the product of a plain TCP server's factory."""
        return _TlsAccept(_AfterHandshake(self.protocol(inner)), self, context)

    def cancel_handshakes(self) -> None:
        """The server stops: end the handshakes under way (their connections close)."""
        for task in list(self.handshakes):
            task.cancel()

    @property
    def open(self) -> int:
        """How many connections are open."""
        return len(self._connections)

    # -- from the wrapped protocol -------------------------------------------------------

    def opened(self, transport: asyncio.Transport) -> bool:
        """A new connection: False (and closed) when too many unauthenticated ones are open."""
        if self.unauthenticated >= self.limits.max_unauthenticated:
            self._errors.client_error(
                f"ILP-over-HTTP: {self.unauthenticated} connections have not authenticated "
                f"yet; closed a new one from {_peer(transport)}"
            )
            transport.abort()
            return False
        connection = _Connection(transport)
        self._connections[transport] = connection
        self.unauthenticated += 1
        self._arm(connection, self.limits.idle_timeout, "sent no request")
        return True

    def handshake_begins(self, transport: asyncio.Transport) -> bool:
        """A new HTTPS connection: False (and closed) when too many unauthenticated ones, those
        in their TLS handshake included, are open."""
        if self.unauthenticated + self.handshaking >= self.limits.max_unauthenticated:
            self._errors.client_error(
                f"ILP-over-HTTP: {self.unauthenticated + self.handshaking} connections have not "
                f"authenticated yet; closed a new one from {_peer(transport)}"
            )
            transport.abort()
            return False
        self.handshaking += 1
        return True

    def handshake_failed(self, transport: asyncio.BaseTransport, exc: BaseException) -> None:
        """A TLS handshake did not complete: the client's mistake (or its choice to leave)."""
        self._errors.client_error(
            f"ILP-over-HTTP: the TLS handshake with {_peer(transport)} failed: "
            f"{excerpt(str(exc) or type(exc).__name__)}"
        )

    def data(self, transport: asyncio.BaseTransport) -> None:
        """Bytes arrived: a waiting connection's next request has begun."""
        connection = self._connections.get(transport)
        if connection is not None and not connection.in_request:
            connection.in_request = True
            connection.headers_due = True

    def data_read(self, transport: asyncio.BaseTransport) -> None:
        """The handler has read the bytes that arrived: a request whose headers are still
        incomplete is bounded from now. (A request that arrives whole, the usual case, needs
        no timer of its own: its headers completed while the bytes were read.)"""
        connection = self._connections.get(transport)
        if connection is not None and connection.headers_due and not connection.timing_headers:
            self._arm(connection, self.limits.header_timeout, "did not complete its headers")
            connection.timing_headers = True

    def closed(self, transport: asyncio.BaseTransport) -> None:
        connection = self._connections.pop(transport, None)
        if connection is None:
            return
        if connection.timer is not None:
            connection.timer.cancel()
        if not connection.authenticated:
            self.unauthenticated -= 1

    # -- from the request handler -------------------------------------------------------

    def headers_received(self, transport: asyncio.BaseTransport | None) -> None:
        """A request's headers are complete: its body is bounded by the handler."""
        connection = self._connections.get(transport) if transport is not None else None
        if connection is not None:
            connection.headers_due = False
            if connection.timer is not None:
                connection.timer.cancel()
                connection.timer = None

    def authenticated(self, transport: asyncio.BaseTransport | None) -> None:
        """The connection presented a valid token: it no longer counts against the cap."""
        connection = self._connections.get(transport) if transport is not None else None
        if connection is not None and not connection.authenticated:
            connection.authenticated = True
            self.unauthenticated -= 1

    def response_sent(self, transport: asyncio.BaseTransport | None) -> None:
        """A response went out: the connection may idle until the next request."""
        connection = self._connections.get(transport) if transport is not None else None
        if connection is not None:
            connection.in_request = False
            self._arm(connection, self.limits.idle_timeout, "stayed idle")

    def _arm(self, connection: _Connection, delay: float, why: str) -> None:
        if connection.timer is not None:
            connection.timer.cancel()
        connection.timing_headers = False
        loop = asyncio.get_running_loop()
        connection.timer = loop.call_later(delay, self._expire, connection, delay, why)

    def _expire(self, connection: _Connection, delay: float, why: str) -> None:
        connection.timer = None
        connection.timing_headers = False
        if connection.transport.is_closing():
            return
        if why != "stayed idle":  # an idle keep-alive connection closing is no client error
            self._errors.client_error(
                f"ILP-over-HTTP: closed a connection from {_peer(connection.transport)} that "
                f"{why} within {delay:g} s"
            )
        connection.transport.close()


class _GuardedProtocol(asyncio.Protocol):
    """Passes every protocol event on to ``inner``, telling the guard what it needs."""

    def __init__(self, inner: asyncio.Protocol, guard: ConnectionGuard) -> None:
        self._inner = inner
        self._guard = guard
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        if self._guard.opened(transport):
            self._transport = transport
            self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        if transport is not None:
            self._guard.data(transport)
            self._inner.data_received(data)
            self._guard.data_read(transport)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._transport is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._guard.closed(self._transport)
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._transport is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._transport is not None:
            self._inner.resume_writing()


def _peer(transport: asyncio.BaseTransport) -> str:
    address = transport.get_extra_info("peername")
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return "an unknown address"


class _TlsAccept(asyncio.Protocol):
    """A new TCP connection of an HTTPS server while its TLS handshake runs (module docstring);
    then the connection is ``inner``'s, through the TLS transport."""

    def __init__(
        self, inner: _AfterHandshake, guard: ConnectionGuard, context: ssl.SSLContext
    ) -> None:
        self._inner = inner
        self._guard = guard
        self._context = context

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        if not self._guard.handshake_begins(transport):
            return
        # The ClientHello is start_tls's to read, not this protocol's: nothing is read until
        # the handshake task has handed the socket to it.
        transport.pause_reading()
        task = asyncio.get_running_loop().create_task(self._handshake(transport))
        self._guard.handshakes.add(task)
        task.add_done_callback(self._guard.handshakes.discard)

    async def _handshake(self, raw: asyncio.Transport) -> None:
        loop = asyncio.get_running_loop()
        try:
            secure = await loop.start_tls(
                raw,
                self._inner,
                self._context,
                server_side=True,
                ssl_handshake_timeout=self._guard.limits.header_timeout,
            )
        except OSError as exc:  # ssl.SSLError, a timeout (ConnectionAbortedError), a reset
            self._guard.handshake_failed(raw, exc)
            raw.abort()
            return
        finally:
            self._guard.handshaking -= 1
        if secure is None:  # the connection closed as the handshake ended
            raw.abort()
            return
        self._inner.attach(secure)


class _AfterHandshake(asyncio.Protocol):
    """``inner`` behind ``loop.start_tls``: that hands it the bytes that came with the client's
    last handshake message (TLS 1.3 lets a request follow in the same segment) before the
    handshake task can give it its transport, so they are kept until :meth:`attach`."""

    def __init__(self, inner: asyncio.Protocol) -> None:
        self._inner = inner
        self._attached = False
        self._early: list[bytes] = []
        self._eof = False
        self._lost: list[Exception | None] = []

    def attach(self, transport: asyncio.Transport) -> None:
        self._attached = True
        self._inner.connection_made(transport)
        for data in self._early:
            self._inner.data_received(data)
        self._early.clear()
        if self._eof and not self._inner.eof_received():
            transport.close()  # what eof_received's answer asks of a transport
        for exc in self._lost:
            self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._attached:
            self._inner.data_received(data)
        else:
            self._early.append(data)

    def eof_received(self) -> bool | None:
        if self._attached:
            return self._inner.eof_received()
        self._eof = True
        return True  # keep the transport open: what came before the EOF is still to be read

    def connection_lost(self, exc: Exception | None) -> None:
        if self._attached:
            self._inner.connection_lost(exc)
        else:
            self._lost.append(exc)

    def pause_writing(self) -> None:
        if self._attached:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._attached:
            self._inner.resume_writing()
