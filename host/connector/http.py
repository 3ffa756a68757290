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
- ``200`` with the handler's reply otherwise. The handler turns any body, garbage included,
  into a reply packet (an F01 Reject for garbage), so no exception reaches HTTP.

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
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from host.connector.http_guard import ClientErrorLog, ConnectionGuard, Limits
from host.ilp import IlpPacketError, Reply, parse_reply

log = logging.getLogger("ilp_host.connector.http")

#: Largest request or response body accepted.
MAX_BODY: Final = 64 * 1024
CONTENT_TYPE: Final = "application/octet-stream"

#: Turns the body of an authenticated request from peer ``peer_id`` into the reply packet.
PacketHandler = Callable[[str, bytes], Awaitable[bytes]]


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
    """The listening side of every peer link: one aiohttp server for all peers.

    ``incoming_tokens`` maps each peer id to the token that peer presents. ``port`` 0 picks a
    free port; :attr:`port` is the bound one once started. ``sock``, a bound TCP socket, is
    listened on instead of ``host``/``port`` (socket activation; tests that must know every
    port before any server starts); the server owns it from :meth:`start` on.
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
    ) -> None:
        self._handler = handler
        self._sock = sock
        limits = limits or Limits()
        self.client_errors = ClientErrorLog(log, limits.log_interval)
        self.guard = ConnectionGuard(limits, self.client_errors)
        self._listener: asyncio.Server | None = None
        self._tokens = [(_digest(token), peer_id) for peer_id, token in incoming_tokens.items()]
        self._bare = [(digest, peer) for digest, peer in self._tokens if peer in bare_token_peers]
        self._host = host
        self._requested_port = port
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

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
        return f"http://{host}:{self.port}/"

    async def start(self) -> None:
        """Listen; returns once the socket is bound."""
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # No access log: one line per packet would cost more than the packet. Malformed
        # requests go to the client-error log (a WARNING line), not aiohttp's tracebacks.
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=1.0,
            logger=self.client_errors,
            keepalive_timeout=self.guard.limits.idle_timeout,
        )
        await runner.setup()
        server = runner.server
        assert server is not None

        def factory() -> asyncio.Protocol:
            return self.guard.protocol(server())

        loop = asyncio.get_running_loop()
        try:
            if self._sock is not None:
                self._host = self._sock.getsockname()[0]
                listener = await loop.create_server(factory, sock=self._sock)
            else:
                listener = await loop.create_server(
                    factory, self._host, self._requested_port, reuse_address=True
                )
        except BaseException:
            await runner.cleanup()
            raise
        self._listener = listener
        self._runner = runner
        self._port = int(listener.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop listening and close open connections. Idempotent."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

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

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        transport = request.transport
        self.guard.headers_received(transport)
        try:
            return await self._answer(request, transport)
        finally:
            self.guard.response_sent(transport)

    async def _answer(
        self, request: web.Request, transport: asyncio.BaseTransport | None
    ) -> web.StreamResponse:
        if request.method != "POST":
            return web.Response(status=405, headers={"Allow": "POST"}, text="use POST\n")
        peer_id = self.authenticate(request.headers.get("Authorization"))
        if peer_id is None:
            return web.Response(
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="ilp"'},
                text="missing or unknown bearer token\n",
            )
        self.guard.authenticated(transport)
        length = request.content_length
        if length is not None and length > MAX_BODY:
            return _too_large()
        limit = self.guard.limits.body_timeout
        try:
            async with asyncio.timeout(limit):
                body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _too_large()
        except TimeoutError:
            self.client_errors.client_error(
                f"ILP-over-HTTP: peer {peer_id} did not send its body within {limit:g} s"
            )
            return web.Response(status=408, headers={"Connection": "close"}, text="body too slow\n")
        except (ConnectionError, HttpProcessingError) as exc:
            self.client_errors.client_error(
                f"ILP-over-HTTP: the request of peer {peer_id} broke off in its body "
                f"({type(exc).__name__})"
            )
            return web.Response(status=400, headers={"Connection": "close"})
        try:
            reply = await self._handler(peer_id, body)
        except Exception:  # the handler answers every body; this is a bug, keep serving
            log.exception("ILP packet handler failed for a request from peer %s", peer_id)
            return web.Response(status=500, text="internal error\n")
        return web.Response(body=reply, content_type=CONTENT_TYPE)


def _too_large() -> web.Response:
    return web.Response(status=413, text=f"an ILP packet is at most {MAX_BODY} bytes\n")


class IlpHttpClient:
    """The sending side of the peer links: one pooled aiohttp session for all peers."""

    def __init__(self, max_connections: int = 100) -> None:
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the session (its connection pool)."""
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._max_connections)
            self._session = aiohttp.ClientSession(connector=connector)

    async def close(self) -> None:
        """Close the session and its connections. Idempotent."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def send(self, url: str, token: str, prepare: bytes, time_limit: float) -> Reply:
        """POST the encoded Prepare to ``url``; the peer's reply, or LinkFailure/LinkTimeout.

        ``time_limit`` (seconds) bounds the whole exchange: the time to the Prepare's expiry.
        """
        if self._session is None:
            raise LinkFailure("the ILP-over-HTTP client is closed")
        headers = {"Authorization": f"Bearer {token}", "Content-Type": CONTENT_TYPE}
        try:
            async with asyncio.timeout(time_limit):
                async with self._session.post(url, data=prepare, headers=headers) as response:
                    body = await _read_limited(response)
                    status = response.status
        except TimeoutError:
            raise LinkTimeout(f"no reply from {url} within {time_limit:.3f} s") from None
        except aiohttp.ClientConnectorError as exc:
            raise LinkFailure(
                f"cannot reach {url}: {_describe(exc)}", maybe_delivered=False
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
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


async def _read_limited(response: aiohttp.ClientResponse) -> bytes:
    if response.content_length is not None and response.content_length > MAX_BODY:
        raise LinkFailure(f"reply of {response.content_length} bytes exceeds {MAX_BODY}")
    chunks: list[bytes] = []
    size = 0
    while chunk := await response.content.readany():
        size += len(chunk)
        if size > MAX_BODY:
            raise LinkFailure(f"reply exceeds {MAX_BODY} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
