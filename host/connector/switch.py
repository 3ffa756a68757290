"""The packet pipeline: one :class:`Connector` wires routing, expiry, balances and the links.

A Prepare from peer X (or from this host, X = None) goes through, in order:

1. ``peer.*`` destinations: ``peer.settle`` from a peer goes to the settlement messages port
   and its reply back in the Fulfill (:meth:`Connector._settlement_message`); every other
   ``peer.*`` address is F02. They are never forwarded.
2. Routing (longest prefix): no route is F02; a route back to X is F02 too (a loop).
3. Expiry: expired is R00, too little time left to forward is R02; the forwarded Prepare
   expires earlier by the margin (:mod:`host.connector.expiry`).
4. Balances: reserve, T04 when a credit limit would be crossed
   (:mod:`host.connector.middleware`).
5. Delivery: to the local receiver, or over ILP-over-HTTP to the next hop Y with a timeout of
   the time to the forwarded expiry. A link failure is T01 Peer Unreachable (RFC 0027: "has a
   route ... but was unable to reach the next connector"; F02 is for no route at all); no
   reply in time is R00. Both are triggered by this host.
6. A Fulfill whose fulfillment does not hash to the condition is F05 and moves nothing; a
   valid one has its balances applied durably before it goes back; a Reject from downstream
   goes back unchanged and releases the reservation.

The pipeline answers every input with a reply packet: a bug on the way becomes a T00 Reject
(and a logged traceback), never an exception for the HTTP layer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import socket
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta

from host.connector import expiry
from host.connector.config import ConnectorConfig, PeerConfig, RouteConfig
from host.connector.http import IlpHttpClient, IlpHttpServer, LinkFailure, LinkTimeout
from host.connector.links import LinkStates
from host.connector.local import LocalReceiver
from host.connector.middleware import BalanceMiddleware, CreditRefused, Hold, packet_id
from host.connector.ports import (
    AccountNotReady,
    ClearingPort,
    LocalHandler,
    MessageRefused,
    PeerRefused,
    PeerUnreachable,
    SettlementMessagesPort,
    UnknownPeer,
)
from host.connector.probe import probe_failed_links
from host.connector.routing import RoutingTable
from host.ilp import (
    ErrorCode,
    Fulfill,
    IlpPacketError,
    Prepare,
    Reject,
    Reply,
    make_reject,
    parse_prepare,
    peer_settle,
    serialize,
)
from host.ilp import address as ilp_address
from host.ilp import errors as ilp_errors
from host.ilp.packet import MAX_DATA_LENGTH
from sdk.connectivity import ConnectionState

log = logging.getLogger("ilp_host.connector")


class Connector:
    """The connector core of one host: its peers, routes, balances and ILP-over-HTTP server.

    ``clearing`` and ``settlement_messages`` are the engine's ports; ``local_handler``
    receives the packets addressed to ``address`` (a :class:`LocalReceiver` by default).
    The server listens on ``host``:``port`` (0: a free port, see :attr:`port`), or on the
    already-bound socket ``sock``.
    """

    def __init__(
        self,
        address: str,
        peers: Sequence[PeerConfig],
        routes: Iterable[RouteConfig],
        clearing: ClearingPort,
        settlement_messages: SettlementMessagesPort,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        sock: socket.socket | None = None,
        expiry_policy: expiry.ExpiryPolicy | None = None,
        settle_timeout: float = peer_settle.DEFAULT_TIMEOUT.total_seconds(),
        local_handler: LocalHandler | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.address = ilp_address.validate(address, "connector address")
        if ilp_address.is_peer_address(address):
            raise ValueError(f"connector address {address!r} must not be a peer.* address")
        self._peers = {peer.id: peer for peer in peers}
        if len(self._peers) != len(peers):
            raise ValueError("peer ids must be unique")
        self.routing = RoutingTable(
            address,
            {peer.id: peer.address for peer in peers},
            [(route.prefix, route.peer) for route in routes],
        )
        for route in self.routing.routes():
            if route.peer_id is not None and route.peer_id not in self._peers:
                raise ValueError(f"route {route.prefix!r} names unknown peer {route.peer_id!r}")
        self._messages = settlement_messages
        self._expiry = expiry_policy or expiry.ExpiryPolicy()
        self._settle_timeout = timedelta(seconds=settle_timeout)
        self._local = local_handler or LocalReceiver(address)
        self._now = now
        self.balances = BalanceMiddleware(clearing)
        self.links = LinkStates(self._peers, now=now)
        self._prober: asyncio.Task[None] | None = None
        self._client = IlpHttpClient()
        self._server = IlpHttpServer(
            self.handle_http,
            {peer.id: peer.incoming_token for peer in peers},
            host=host,
            port=port,
            sock=sock,
        )

    @classmethod
    def from_config(
        cls,
        config: ConnectorConfig,
        clearing: ClearingPort,
        settlement_messages: SettlementMessagesPort,
        *,
        local_handler: LocalHandler | None = None,
    ) -> Connector:
        """A connector built from the checked ``[connector]``/``[[peer]]``/``[[route]]`` tables."""
        return cls(
            config.address,
            config.peers,
            config.routes,
            clearing,
            settlement_messages,
            host=config.host,
            port=config.port,
            expiry_policy=config.expiry,
            settle_timeout=config.settle_timeout,
            local_handler=local_handler,
        )

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the client pool and listen; returns once the server's socket is bound. Failed
        links are probed from then on (host.connector.probe)."""
        await self._client.start()
        try:
            await self._server.start()
        except BaseException:
            await self._client.close()
            raise
        self._prober = asyncio.create_task(
            probe_failed_links(
                {peer_id: peer.address for peer_id, peer in self._peers.items()},
                lambda peer_id: self.links.state(peer_id).state,
                self._exchange,
                self._now,
            ),
            name="connector-link-probe",
        )

    async def stop(self) -> None:
        """Stop listening, close the links; every link goes SHUTDOWN. Idempotent."""
        if self._prober is not None:
            self._prober.cancel()
            await asyncio.gather(self._prober, return_exceptions=True)
            self._prober = None
        try:
            await self._server.stop()
        finally:
            await self._client.close()
            self.links.close()

    async def __aenter__(self) -> Connector:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        """The TCP port the ILP-over-HTTP server is bound to."""
        return self._server.port

    @property
    def url(self) -> str:
        """The URL peers POST to, e.g. ``http://127.0.0.1:43117/``."""
        return self._server.url

    # -- views ----------------------------------------------------------------------------

    def link_states(self) -> list[ConnectionState]:
        """Every peer link's state, in configuration order."""
        return self.links.states()

    def watch_links(self) -> AsyncIterator[ConnectionState]:
        """Each peer link state as it changes, until the connector stops."""
        return self.links.watch()

    # -- the packet path ------------------------------------------------------------------

    async def handle_http(self, peer_id: str, body: bytes) -> bytes:
        """The reply bytes for the body of an authenticated ILP-over-HTTP request."""
        try:
            prepare = parse_prepare(body)
        except IlpPacketError as exc:
            reply: Reply = make_reject(
                ErrorCode.F01_INVALID_PACKET, self.address, f"not a valid ILP Prepare: {exc}"
            )
        else:
            reply = await self._answer(peer_id, prepare, packet_id(peer_id, body))
        return serialize(reply)

    async def handle_prepare(self, from_peer: str | None, prepare: Prepare) -> Reply:
        """The reply to a Prepare from peer ``from_peer`` (None: from this host). Never raises."""
        return await self._answer(from_peer, prepare, packet_id(from_peer, serialize(prepare)))

    async def _answer(self, source: str | None, prepare: Prepare, packet: bytes) -> Reply:
        try:
            return await self._switch(source, prepare, packet)
        except Exception:
            log.exception(
                "internal error on a Prepare from %s to %s",
                source or "this host",
                prepare.destination,
            )
            return self._reject(ErrorCode.T00_INTERNAL_ERROR, "internal error in the connector")

    async def _switch(self, source: str | None, prepare: Prepare, packet: bytes) -> Reply:
        destination = prepare.destination
        if ilp_address.is_peer_address(destination):
            if source is not None and peer_settle.is_settle_prepare(prepare):
                return await self._settlement_message(source, prepare)
            return self._reject(
                ErrorCode.F02_UNREACHABLE,
                f"{destination} is a peer.* address for the direct peer only; not forwarded",
            )
        route = self.routing.resolve(destination)
        if route is None:
            return self._reject(ErrorCode.F02_UNREACHABLE, f"no route to {destination}")
        now = self._now()
        if route.peer_id is None:
            refused = expiry.check_expired(prepare.expires_at, now)
            if refused is not None:
                return self._reject(refused.code, refused.message)
            time_limit = expiry.time_left(prepare.expires_at, now)
            return await self._deliver(source, None, prepare, prepare, time_limit, packet)
        if route.peer_id == source:
            return self._reject(
                ErrorCode.F02_UNREACHABLE,
                f"the route to {destination} leads back to the peer that sent it",
            )
        decision = expiry.forwarding(prepare.expires_at, now, self._expiry)
        if isinstance(decision, expiry.Refuse):
            return self._reject(decision.code, decision.message)
        outgoing = dataclasses.replace(prepare, expires_at=decision.expires_at)
        return await self._deliver(
            source, route.peer_id, prepare, outgoing, decision.timeout, packet
        )

    async def _deliver(
        self,
        source: str | None,
        target: str | None,
        prepare: Prepare,
        outgoing: Prepare,
        time_limit: float,
        packet: bytes,
    ) -> Reply:
        """Reserve, hand ``outgoing`` to the next hop (or the local receiver), settle up."""
        try:
            hold = await self.balances.reserve(source, target, prepare.amount)
        except CreditRefused as exc:
            return self._reject(ErrorCode.T04_INSUFFICIENT_LIQUIDITY, str(exc))
        except AccountNotReady as exc:
            return self._reject(ErrorCode.T00_INTERNAL_ERROR, str(exc))
        try:
            reply = await self._next_hop(target, outgoing, time_limit)
        except BaseException:
            self.balances.release(hold)
            raise
        if isinstance(reply, Reject):
            self.balances.release(hold)
            return reply
        if hashlib.sha256(reply.fulfillment).digest() != prepare.execution_condition:
            self.balances.release(hold)
            log.warning(
                "%s returned a fulfillment that does not match the condition",
                f"peer {target}" if target else "the local receiver",
            )
            return self._reject(
                ErrorCode.F05_WRONG_CONDITION, "the next hop's fulfillment does not match"
            )
        return await self._commit(hold, reply, packet)

    async def _commit(self, hold: Hold, fulfill: Fulfill, packet: bytes) -> Reply:
        try:
            await self.balances.commit(hold, packet)
        except Exception:
            log.exception(
                "a fulfilled packet from %s could not be charged: answering with a Reject",
                hold.source,
            )
            return self._reject(ErrorCode.T00_INTERNAL_ERROR, "could not record the payment")
        return fulfill

    async def _next_hop(self, target: str | None, prepare: Prepare, time_limit: float) -> Reply:
        if target is None:
            try:
                async with asyncio.timeout(time_limit):
                    return await self._local.handle(prepare)
            except TimeoutError:
                return self._reject(
                    ErrorCode.R00_TRANSFER_TIMED_OUT, "the receiver did not answer in time"
                )
        try:
            return await self._exchange(target, prepare, time_limit)
        except LinkTimeout:
            return self._reject(
                ErrorCode.R00_TRANSFER_TIMED_OUT, "the next hop did not answer in time"
            )
        except LinkFailure:
            return self._reject(ErrorCode.T01_PEER_UNREACHABLE, "the next hop is unreachable")

    async def _exchange(self, peer_id: str, prepare: Prepare, time_limit: float) -> Reply:
        """One ILP-over-HTTP exchange with a peer; the link state follows the outcome."""
        peer = self._peers[peer_id]
        self.links.sending(peer_id)
        try:
            reply = await self._client.send(
                peer.url, peer.outgoing_token, serialize(prepare), time_limit
            )
        except LinkFailure as exc:
            self.links.failed(peer_id, str(exc))
            log.info("link to peer %s: %s", peer_id, exc)
            raise
        self.links.succeeded(peer_id)
        return reply

    def _reject(self, code: str, message: str) -> Reject:
        return make_reject(code, self.address, message)

    # -- peer.settle ----------------------------------------------------------------------

    async def _settlement_message(self, peer_id: str, prepare: Prepare) -> Reply:
        """A message from the peer's settlement engine: to ours, and its reply back."""
        now = self._now()
        refused = expiry.check_expired(prepare.expires_at, now)
        if refused is not None:
            return peer_settle.settle_reject(refused.code, refused.message)
        try:
            message = peer_settle.settle_message(prepare)
        except peer_settle.SettleMessageError as exc:
            return peer_settle.settle_reject(exc.code, exc.message)
        try:
            async with asyncio.timeout(expiry.time_left(prepare.expires_at, now)):
                reply = await self._messages.receive(peer_id, message)
        except MessageRefused as exc:
            code = (
                exc.code if ilp_errors.is_well_formed(exc.code) else ErrorCode.F99_APPLICATION_ERROR
            )
            return peer_settle.settle_reject(code, exc.message)
        except TimeoutError:
            return peer_settle.settle_reject(
                ErrorCode.R00_TRANSFER_TIMED_OUT, "the settlement engine did not answer in time"
            )
        except Exception:
            log.exception("the settlement engine failed on a message from peer %s", peer_id)
            return peer_settle.settle_reject(
                ErrorCode.F99_APPLICATION_ERROR, "the settlement engine failed on the message"
            )
        if len(reply) > MAX_DATA_LENGTH:
            log.error("the settlement engine's reply of %d bytes is too long", len(reply))
            return peer_settle.settle_reject(
                ErrorCode.F99_APPLICATION_ERROR,
                f"the settlement engine's reply exceeds {MAX_DATA_LENGTH} bytes",
            )
        return peer_settle.settle_fulfill(reply)

    async def send_settlement_message(self, account_id: str, data: bytes) -> bytes:
        """Send ``data`` to the settlement engine of peer ``account_id``; its reply.

        Raises UnknownPeer, PeerUnreachable (link failure or no answer within the settle
        timeout), PeerRefused (the peer answered with a Reject), or ValueError for data over
        32767 bytes. Not idempotent: each call is a new message.
        """
        if account_id not in self._peers:
            raise UnknownPeer(f"no peer has account id {account_id!r}")
        if len(data) > MAX_DATA_LENGTH:
            raise ValueError(
                f"a settlement message is at most {MAX_DATA_LENGTH} bytes, got {len(data)}"
            )
        prepare = peer_settle.settle_prepare(data, self._now() + self._settle_timeout)
        try:
            reply = await self._exchange(account_id, prepare, self._settle_timeout.total_seconds())
        except LinkFailure as exc:
            raise PeerUnreachable(f"peer {account_id}: {exc}") from exc
        try:
            return peer_settle.settle_reply(reply)
        except peer_settle.SettleMessageError as exc:
            raise PeerRefused(
                f"peer {account_id}: {exc.message} ({exc.code})",
                exc.code,
                exc.data,
            ) from exc
