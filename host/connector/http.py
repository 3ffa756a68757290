"""ILP-over-HTTP as the deployed connectors speak it (interledger-rs, Rafiki, ilp-plugin-http).

One synchronous exchange per packet: ``POST`` the Prepare as an ``application/octet-stream``
body with ``Authorization: Bearer <token>``; the reply packet (Fulfill or Reject) comes back as
the body of a ``200``. Anything else (another status, a body that is not a Fulfill or a Reject)
is a failure of the link, not an ILP answer.

:class:`IlpHttpServer` accepts Prepares on any path. It identifies the peer by its bearer token
(compared in constant time against every peer's, so the time taken says nothing about which
token came close) and answers:

- ``401`` for a missing or unknown token, before reading the body;
- ``413`` for a body over 64 KiB (the largest Prepare is about 34 KiB);
- ``408`` for a body that does not arrive within the body timeout;
- ``405`` for a method other than POST;
- ``400`` for a malformed request;
- ``200`` with the handler's reply otherwise. The handler turns any body, garbage included,
  into a reply packet (an F01 Reject for garbage), so no exception reaches HTTP.

After any answer but a ``200`` (or a ``500``, our bug) the connection is closed. The HTTP of
both sides is on bare asyncio protocols (host.connector.http_serving,
host.connector.http_pool): per packet, a web framework cost more than the packet's own work.

With a TLS context (``[connector] tls_cert``/``tls_key``, host.credentials) the server speaks
HTTPS; a connector whose ``host`` is not a loopback address must (host.connector.config).
Connections are bounded in time and number before and after authentication
(host.connector.http_guard). What a client does wrong (a malformed request, a disconnect in
the middle of a body, a slow client) is one rate-limited WARNING line, never an ERROR.

:class:`IlpHttpClient` sends one Prepare and returns the parsed reply, or raises
:class:`LinkFailure` (:class:`LinkTimeout` when no reply came in time). An HTTP error status
that refuses this one request (413 Payload Too Large, 400, another 4xx but 401/403, or a 5xx)
is :class:`PacketRefused`, not a link failure: the peer is there and answered, it only would
not take this Prepare. 401 and 403 say the link's credentials are wrong, which no other
packet will fix: those are link failures.

A peer whose configuration says so (``accept_bare_token``) may present its token without the
``Bearer `` scheme, as ilp-plugin-http's legacy ``secretToken`` option sends it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import socket
import ssl
from collections.abc import Mapping
from typing import Final

from host.connector.http_guard import ClientErrorLog, ConnectionGuard, Limits
from host.connector.http_pool import BadResponse, ConnectFailed, ConnectionPool, ResponseTooLarge
from host.connector.http_serving import Endpoint, PacketHandler, ServerConnection
from host.ilp import IlpPacketError, Reply, parse_reply

log = logging.getLogger("ilp_host.connector.http")

#: Largest request or response body accepted.
MAX_BODY: Final = 64 * 1024
CONTENT_TYPE: Final = "application/octet-stream"
#: Seconds :meth:`IlpHttpServer.stop` lets the packets being handled finish.
SHUTDOWN_TIMEOUT: Final = 1.0


class LinkFailure(Exception):
    """An exchange with a peer that produced no ILP reply; the message says what happened.

    ``maybe_delivered``: whether the peer may have received the Prepare all the same (False
    when the connection could not be made, or the peer refused our credentials).
    """

    def __init__(self, message: str, *, maybe_delivered: bool = True) -> None:
        super().__init__(message)
        self.maybe_delivered = maybe_delivered


class LinkTimeout(LinkFailure):
    """The peer did not answer before the Prepare expired."""


class PacketRefused(Exception):
    """The peer answered this one request with an HTTP error status (not 401/403).

    ``status`` is the HTTP status; ``reason`` the start of the body the peer sent.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status}" + (f": {reason}" if reason else ""))
        self.status = status
        self.reason = reason

    @property
    def server_error(self) -> bool:
        """A 5xx: the peer's fault, not this packet's (a streak of them fails the link)."""
        return self.status >= 500


def _digest(token: str) -> bytes:
    # Comparing digests of equal length keeps compare_digest constant-time for any token length.
    return hashlib.sha256(token.encode("utf-8")).digest()


class IlpHttpServer:
    """The listening side of every peer link: one server for all peers, each connection a
    host.connector.http_serving.ServerConnection.

    ``incoming_tokens`` maps each peer id to the token that peer presents. ``port`` 0 picks a
    free port; :attr:`port` is the bound one once started. ``sock``, a bound TCP socket, is
    listened on instead of ``host``/``port`` (socket activation; tests that must know every
    port before any server starts); the server owns it from :meth:`start` on. With ``tls`` it
    serves HTTPS: host.connector.http_guard runs each TLS handshake, counted against the cap of
    unauthenticated connections and bounded by the header timeout.
    """

    def __init__(
        self,
        handler: PacketHandler,
        incoming_tokens: Mapping[str, str],
        host: str = "127.0.0.1",
        port: int = 0,
        sock: socket.socket | None = None,
        limits: Limits | None = None,
        bare_token_peers: frozenset[str] = frozenset(),
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._handler = handler
        self._sock = sock
        self._tls = tls
        limits = limits or Limits()
        self.client_errors = ClientErrorLog(log, limits.log_interval)
        self.guard = ConnectionGuard(limits, self.client_errors)
        self._listener: asyncio.Server | None = None
        self._tokens = [(_digest(token), peer_id) for peer_id, token in incoming_tokens.items()]
        self._bare = [(digest, peer) for digest, peer in self._tokens if peer in bare_token_peers]
        self._host = host
        self._requested_port = port
        self._port: int | None = None
        self._endpoint = Endpoint(
            handler, self.authenticate, self.guard, self.client_errors, log, MAX_BODY, CONTENT_TYPE
        )

    @property
    def port(self) -> int:
        """The bound TCP port (after :meth:`start`)."""
        if self._port is None:
            raise RuntimeError("the ILP-over-HTTP server is not started")
        return self._port

    @property
    def url(self) -> str:
        """The base URL peers can POST to (after :meth:`start`)."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        scheme = "http" if self._tls is None else "https"
        return f"{scheme}://{host}:{self.port}/"

    async def start(self) -> None:
        """Listen; returns once the socket is bound."""
        endpoint = self._endpoint

        tls, guard = self._tls, self.guard

        def factory() -> asyncio.Protocol:
            if tls is not None:  # the guard runs the handshake: it counts and bounds it
                return guard.tls_protocol(ServerConnection(endpoint), tls)
            return guard.protocol(ServerConnection(endpoint))

        loop = asyncio.get_running_loop()
        if self._sock is not None:
            self._host = self._sock.getsockname()[0]
            listener = await loop.create_server(factory, sock=self._sock)
        else:
            listener = await loop.create_server(
                factory, self._host, self._requested_port, reuse_address=True
            )
        self._listener = listener
        self._port = int(listener.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop listening; let the packets being handled finish (a second at most), then close
        the open connections. Idempotent."""
        listener, self._listener = self._listener, None
        if listener is None:
            return
        listener.close()
        self.guard.cancel_handshakes()
        tasks = set(self._endpoint.tasks)
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=SHUTDOWN_TIMEOUT)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        for connection in list(self._endpoint.connections):
            connection.close()

    def authenticate(self, authorization: str | None) -> str | None:
        """The peer id whose incoming token is in the Authorization header, or None."""
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        candidates = self._tokens
        if scheme.lower() != "bearer":
            # ilp-plugin-http's legacy secretToken: the bare token, for peers that ask for it.
            token, candidates = authorization, self._bare
        if not token:
            return None
        presented = _digest(token.strip())
        found: str | None = None
        for digest, peer_id in candidates:
            # No early exit: every configured token is compared.
            if hmac.compare_digest(presented, digest):
                found = peer_id
        return found


class IlpHttpClient:
    """The sending side of the peer links: one pool of kept-alive connections for all peers
    (host.connector.http_pool)."""

    def __init__(self, max_connections: int = 100, tls: ssl.SSLContext | None = None) -> None:
        self._max_connections = max_connections
        self._tls = tls
        self._pool: ConnectionPool | None = None

    async def start(self) -> None:
        """Open the pool. ``https`` peers are checked against ``tls`` if given, else against
        the system's trusted roots."""
        if self._pool is None:
            self._pool = ConnectionPool(self._max_connections, MAX_BODY, self._tls)

    async def close(self) -> None:
        """Close the pool and its connections. Idempotent."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    async def send(self, url: str, token: str, prepare: bytes, time_limit: float) -> Reply:
        """POST the encoded Prepare to ``url``; the peer's reply, or LinkFailure/LinkTimeout.

        ``time_limit`` (seconds) bounds the whole exchange: the time to the Prepare's expiry.
        """
        pool = self._pool
        if pool is None:
            raise LinkFailure("the ILP-over-HTTP client is closed")
        headers = f"Authorization: Bearer {token}\r\nContent-Type: {CONTENT_TYPE}\r\n"
        try:
            async with asyncio.timeout(time_limit):
                status, body = await pool.post(url, headers, prepare)
        except TimeoutError:
            raise LinkTimeout(f"no reply from {url} within {time_limit:.3f} s") from None
        except ConnectFailed as exc:
            raise LinkFailure(f"cannot reach {url}: {exc}", maybe_delivered=False) from exc
        except (ResponseTooLarge, BadResponse, OSError) as exc:
            raise LinkFailure(f"cannot reach {url}: {_describe(exc)}") from exc
        if status != 200:
            text = body[:200].decode("utf-8", "replace").strip()
            if status in (401, 403) or status < 400:
                raise LinkFailure(
                    f"HTTP {status} from {url}" + (f": {text}" if text else ""),
                    maybe_delivered=status not in (401, 403),
                )
            raise PacketRefused(status, text)
        try:
            return parse_reply(body)
        except IlpPacketError as exc:
            raise LinkFailure(
                f"{url} answered with a body that is not an ILP reply: {exc}"
            ) from exc


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
