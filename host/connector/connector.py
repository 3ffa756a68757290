"""The packet pipeline: one :class:`Connector` wires routing, expiry, balances and the links.

A Prepare from peer X (or from this host, X = None) goes through, in order:

1. ``peer.*`` destinations, answered here and never forwarded: ``peer.settle`` from a peer
   goes to the settlement messages port and its reply back in the Fulfill
   (:meth:`Connector._settlement_message`); ``peer.config`` from a child gets its ILDCP
   configuration (host.ilp.ildcp); ``peer.route.control`` and ``peer.route.update`` go to the
   route broadcaster (host.connector.route_broadcast); ``peer.outcome`` is answered from the
   in-flight journal (host.ilp.outcome), when the clearing port keeps one; ``peer.reconcile``
   gets our totals of the sender's account (host.ilp.reconcile; F02 without a book reader, as
   a connector of another project answers); every other ``peer.*`` address is F02.
2. Routing (longest prefix): no route is F02; a route back to X is F02 too (a loop).
3. Expiry: expired is R00, too little time left to forward is R02; the forwarded Prepare
   expires earlier by the margin (:mod:`host.connector.expiry`).
4. Balances: reserve, T04 when a credit limit would be crossed
   (:mod:`host.connector.middleware`); a forwarded packet is journaled before it goes out.
5. Delivery: to the local receiver, or over ILP-over-HTTP to the next hop Y with a timeout of
   the time to the forwarded expiry. A link failure is T01 Peer Unreachable (RFC 0027: "has a
   route ... but was unable to reach the next connector"; F02 is for no route at all); no
   reply in time is R00. Both are triggered by this host. An HTTP error status for this one
   request (host.connector.http.PacketRefused) rejects only this Prepare, with the peer's
   reason: 413 as F08 (too large for the peer), any other as T01; it leaves the link's state
   alone, except that ``SERVER_ERROR_STREAK`` 5xx in a row fail the link.
6. A Fulfill whose fulfillment does not hash to the condition is F05 and moves nothing; a
   valid one has its balances applied durably before it goes back; a Reject from downstream
   goes back unchanged and releases the reservation. A forwarded packet without a definite
   answer (no reply in time, a link that failed after the request left), or whose Fulfill
   could not be recorded, goes to the resolver (:mod:`host.connector.inflight`), which asks the
   next hop what became of it.

The pipeline answers every input with a reply packet: a bug on the way becomes a T00 Reject
(and a logged traceback), never an exception for the HTTP layer.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta

from host.clearing_records import InFlight
from host.connector import expiry
from host.connector.config import ConnectorConfig, PeerConfig, RouteConfig
from host.connector.http import (
    IlpHttpClient,
    IlpHttpServer,
    LinkFailure,
    LinkTimeout,
    PacketRefused,
)
from host.connector.inflight import InFlightResolver
from host.connector.links import LinkStates
from host.connector.local import LocalReceiver
from host.connector.middleware import BalanceMiddleware, CreditRefused, Hold, packet_id
from host.connector.observer import NoObserver, PacketObserver
from host.connector.ports import (
    AccountNotReady,
    ClearingPort,
    ConnectorError,
    LocalHandler,
    MessageRefused,
    PeerRefused,
    PeerUnreachable,
    SettlementMessagesPort,
    UnknownPeer,
)
from host.connector.probe import probe_failed_links
from host.connector.reconciliation import BookReader
from host.connector.route_broadcast import RouteBroadcaster
from host.connector.routing import RoutingTable
from host.ilp import (
    ErrorCode,
    Fulfill,
    IlpPacketError,
    Prepare,
    Reject,
    Reply,
    ccp,
    ildcp,
    make_reject,
    outcome,
    parse_prepare,
    peer_settle,
    reconcile,
    serialize,
)
from host.ilp import address as ilp_address
from host.ilp import errors as ilp_errors
from host.ilp.packet import MAX_DATA_LENGTH, prepare_with_expiry
from sdk import failpoints
from sdk.connectivity import ConnectionState, Connectivity

log = logging.getLogger("ilp_host.connector")

#: 5xx answers in a row from a peer that fail its link (one alone is this packet's problem).
SERVER_ERROR_STREAK = 3
#: How long a host whose address comes from its parent waits for the parent's ILDCP answer.
ILDCP_TIMEOUT = 30.0
#: How long a peer is given to answer a ``peer.outcome`` query.
OUTCOME_QUERY_TIMEOUT = 10.0


#: How long a peer that refused ``peer.settle`` as an unknown protocol is not asked again:
#: such a peer (ilp-connector: it settles in its plugins) will not change its mind soon.
SETTLE_REFUSAL_HOLD = 300.0
#: The codes a connector without settlement engines answers ``peer.settle`` with.
_NO_SETTLEMENT_ENGINE = frozenset({ErrorCode.F01_INVALID_PACKET, ErrorCode.F02_UNREACHABLE})


class AddressUnknown(RuntimeError):
    """This host has no address: none configured, and its parent did not give one in time."""


_PEER_PROTOCOLS = frozenset({ildcp.ILDCP_ADDRESS, ccp.CONTROL_ADDRESS, ccp.UPDATE_ADDRESS})


class Connector:
    """The connector core of one host: its peers, routes, balances and ILP-over-HTTP server.

    ``clearing`` and ``settlement_messages`` are the engine's ports; ``local_handler``
    receives the packets addressed to ``address`` (a :class:`LocalReceiver` by default).
    The server listens on ``host``:``port`` (0: a free port, see :attr:`port`), or on the
    already-bound socket ``sock``; HTTPS with ``server_tls``. ``https`` peers are checked
    against ``peer_tls`` if given, else the system's trusted roots.
    """

    def __init__(
        self,
        address: str | None,
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
        assets: Mapping[str, tuple[str, int]] | None = None,
        route_broadcast_interval: float = 30.0,
        ildcp_timeout: float = ILDCP_TIMEOUT,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        books: BookReader | None = None,
        server_tls: ssl.SSLContext | None = None,
        peer_tls: ssl.SSLContext | None = None,
    ) -> None:
        if address is not None:
            ilp_address.validate(address, "connector address")
            if ilp_address.is_peer_address(address):
                raise ValueError(f"connector address {address!r} must not be a peer.* address")
        #: This host's ILP address ("" until learned from the parent).
        self.address = address or ""
        #: Where the address came from: "config", "ildcp:<parent id>", or "" while unknown.
        self.address_source = "config" if address else ""
        self._peers = {peer.id: peer for peer in peers}
        if len(self._peers) != len(peers):
            raise ValueError("peer ids must be unique")
        parents = [peer.id for peer in peers if peer.relation == "parent"]
        self._parent = parents[0] if parents else None
        if address is None and self._parent is None:
            raise ValueError("a connector without an address needs a parent to learn it from")
        self._assets = dict(assets or {})
        self.routing = RoutingTable(
            address,
            self._peer_addresses(),
            [(route.prefix, route.peer) for route in routes],
            default_peer=self._parent,
            relations={peer.id: peer.relation for peer in peers},
        )
        for route in self.routing.routes():
            if route.peer_id is not None and route.peer_id not in self._peers:
                raise ValueError(f"route {route.prefix!r} names unknown peer {route.peer_id!r}")
        self._messages = settlement_messages
        #: Each peer account's book, for peer.reconcile (None: not answered, F02).
        self._books = books
        self._expiry = expiry_policy or expiry.ExpiryPolicy()
        self._settle_timeout = timedelta(seconds=settle_timeout)
        self._ildcp_timeout = ildcp_timeout
        # Without an address yet, the local receiver comes with the address (_set_address).
        self._local: LocalHandler = local_handler or LocalReceiver(address or "test.unknown")
        self._default_local = local_handler is None
        self._now = now
        self.balances = BalanceMiddleware(clearing)
        #: The packets whose outcome is not known yet, and the loop that resolves them.
        self.inflight = InFlightResolver(clearing, self.balances, self._ask_outcome)
        self._resolver: asyncio.Task[None] | None = None
        self.links = LinkStates(self._peers, now=now)
        self._server_errors = dict.fromkeys(self._peers, 0)
        #: Per peer: the outcome of the last settlement message, and until when (loop time) a
        #: peer without settlement engine is not sent another.
        self._settlement: dict[str, str] = dict.fromkeys(self._peers, "")
        self._settle_held_until: dict[str, float] = {}
        self.routes = RouteBroadcaster(
            self._peers, self.routing, self._exchange, interval=route_broadcast_interval, now=now
        )
        #: Told of every packet on the links (host.metrics sets it); nothing by default.
        self.observer: PacketObserver = NoObserver()
        self._prober: asyncio.Task[None] | None = None
        self._client = IlpHttpClient(tls=peer_tls)
        self._server = IlpHttpServer(
            self.handle_http,
            {peer.id: peer.incoming_token for peer in peers},
            host=host,
            port=port,
            sock=sock,
            bare_token_peers=frozenset(peer.id for peer in peers if peer.accept_bare_token),
            tls=server_tls,
        )

    def _peer_addresses(self) -> dict[str, str]:
        """Each peer's address, as far as known (a child's needs ours)."""
        known: dict[str, str] = {}
        for peer in self._peers.values():
            if peer.relation == "child":
                if self.address:
                    known[peer.id] = peer.child_address(self.address)
            elif peer.address is not None:
                known[peer.id] = peer.address
        return known

    @classmethod
    def from_config(
        cls,
        config: ConnectorConfig,
        clearing: ClearingPort,
        settlement_messages: SettlementMessagesPort,
        *,
        local_handler: LocalHandler | None = None,
        assets: Mapping[str, tuple[str, int]] | None = None,
        books: BookReader | None = None,
        server_tls: ssl.SSLContext | None = None,
        peer_tls: ssl.SSLContext | None = None,
    ) -> Connector:
        """A connector built from the checked ``[connector]``/``[[peer]]``/``[[route]]`` tables;
        ``assets`` maps account ids to (asset code, scale), for the children's ILDCP;
        ``server_tls`` and ``peer_tls`` are made of the TLS files the tables name."""
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
            assets=assets,
            route_broadcast_interval=config.route_broadcast_interval,
            books=books,
            server_tls=server_tls,
            peer_tls=peer_tls,
        )

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the client pool and listen; returns once the server's socket is bound and this
        host has an address (AddressUnknown if its parent gave none within the ILDCP timeout).
        Failed links are probed from then on (host.connector.probe); routes are exchanged
        (host.connector.route_broadcast)."""
        await self._client.start()
        try:
            await self._server.start()
            if not self.address:
                await self._learn_address()
        except BaseException:
            await self._server.stop()
            await self._client.close()
            raise
        self._prober = asyncio.create_task(
            probe_failed_links(
                {peer_id: self._probe_destination(peer_id) for peer_id in self._peers},
                lambda peer_id: self.links.state(peer_id).state,
                self._exchange,
                self._now,
            ),
            name="connector-link-probe",
        )
        self.routes.start()
        await self.inflight.load()
        self._resolver = asyncio.create_task(self.inflight.run(), name="connector-inflight")

    def _probe_destination(self, peer_id: str) -> str:
        # A parent configured without an address is probed with an ILDCP request: harmless.
        return self._peer_addresses().get(peer_id, ildcp.ILDCP_ADDRESS)

    async def _learn_address(self) -> None:
        """Ask the parent for this host's address (ILDCP), retrying until the timeout."""
        parent = self._parent
        assert parent is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._ildcp_timeout
        delay = 0.1
        problem = "no answer"
        while loop.time() < deadline:
            prepare = ildcp.request(self._now() + timedelta(seconds=5))
            try:
                answer = ildcp.read_reply(await self._exchange(parent, prepare, 5.0))
            except (LinkFailure, PacketRefused, ildcp.IldcpError) as exc:
                problem = str(exc)
                log.info("ILDCP: parent %s gave no address yet: %s", parent, problem)
            else:
                self._set_address(answer.client_address, parent)
                asset = self._assets.get(parent)
                if asset is not None and asset != (answer.asset_code, answer.asset_scale):
                    log.warning(
                        "parent %s says our asset is %s at scale %d; [[account]] %s says %s at "
                        "scale %d",
                        parent,
                        answer.asset_code,
                        answer.asset_scale,
                        parent,
                        *asset,
                    )
                return
            await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
            delay = min(delay * 2, 2.0)
        raise AddressUnknown(
            f"no [connector] address, and parent {parent} gave none by ILDCP within "
            f"{self._ildcp_timeout:.0f} s ({problem})"
        )

    def _set_address(self, address: str, parent: str) -> None:
        self.address = address
        self.address_source = f"ildcp:{parent}"
        self.routing.set_own_address(address, self._peer_addresses())
        if self._default_local:
            self._local = LocalReceiver(address)
        log.info("this host's address is %s (from parent %s by ILDCP)", address, parent)

    async def stop(self) -> None:
        """Stop listening, close the links; every link goes SHUTDOWN. Idempotent."""
        await self.routes.stop()
        if self._resolver is not None:
            self._resolver.cancel()
            await asyncio.gather(self._resolver, return_exceptions=True)
            self._resolver = None
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

    def peer_ids(self) -> list[str]:
        """The peers' account ids, in configuration order."""
        return list(self._peers)

    def peer_address(self, peer_id: str) -> str:
        """A peer's address as far as known ("" for a parent configured without one)."""
        return self._peer_addresses().get(peer_id, "")

    def peer_relation(self, peer_id: str) -> str:
        """How a peer stands to this host: "parent", "child" or "peer"."""
        return self._peers[peer_id].relation

    def settlement_messages(self, peer_id: str) -> str:
        """How settlement messages (``peer.settle``) fare with a peer: "" before the first,
        "ok", or why the peer refused them."""
        return self._settlement[peer_id]

    def link_states(self) -> list[ConnectionState]:
        """Every peer link's state, in configuration order."""
        return self.links.states()

    def watch_links(self) -> AsyncIterator[ConnectionState]:
        """Each peer link state as it changes, until the connector stops."""
        return self.links.watch()

    # -- the packet path ------------------------------------------------------------------

    async def handle_http(self, peer_id: str, body: bytes) -> bytes:
        """The reply bytes for the body of an authenticated ILP-over-HTTP request."""
        started = time.perf_counter()
        try:
            prepare = parse_prepare(body)
        except IlpPacketError as exc:
            reply: Reply = make_reject(
                ErrorCode.F01_INVALID_PACKET, self.address, f"not a valid ILP Prepare: {exc}"
            )
            self.observer.incoming(peer_id, 0, reply, time.perf_counter() - started)
        else:
            reply = await self._answer(peer_id, prepare, body)
            destination = prepare.destination
            if not ilp_address.is_peer_address(destination):
                seconds = time.perf_counter() - started
                self.observer.incoming(peer_id, prepare.amount, reply, seconds)
            elif destination == peer_settle.SETTLE_ADDRESS:
                self.observer.settlement_message(peer_id, "incoming", isinstance(reply, Fulfill))
            # Other peer.* messages (routes, ILDCP) are the link's control traffic: not counted.
        return serialize(reply)

    async def handle_prepare(self, from_peer: str | None, prepare: Prepare) -> Reply:
        """The reply to a Prepare from peer ``from_peer`` (None: from this host). Never raises."""
        return await self._answer(from_peer, prepare, serialize(prepare))

    async def _answer(self, source: str | None, prepare: Prepare, raw: bytes) -> Reply:
        """``raw``: the Prepare's bytes as received (the packet ids derive from them)."""
        try:
            return await self._switch(source, prepare, raw)
        except Exception:
            log.exception(
                "internal error on a Prepare from %s to %s",
                source or "this host",
                prepare.destination,
            )
            return self._reject(ErrorCode.T00_INTERNAL_ERROR, "internal error in the connector")

    async def _switch(self, source: str | None, prepare: Prepare, raw: bytes) -> Reply:
        destination = prepare.destination
        if ilp_address.is_peer_address(destination):
            if source is not None and peer_settle.is_settle_prepare(prepare):
                return await self._settlement_message(source, prepare)
            if source is not None and outcome.is_query(prepare) and self.balances.journaled:
                return await self._outcome_answer(source, prepare)
            if source is not None and destination in _PEER_PROTOCOLS:
                return self._peer_protocol(source, prepare)
            if source is not None and reconcile.is_request(prepare) and self._books is not None:
                return await self._answer_reconcile(source, prepare)
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
            return await self._deliver(source, None, prepare, prepare.expires_at, time_limit, raw)
        if route.peer_id == source:
            return self._reject(
                ErrorCode.F02_UNREACHABLE,
                f"the route to {destination} leads back to the peer that sent it",
            )
        decision = expiry.forwarding(prepare.expires_at, now, self._expiry)
        if isinstance(decision, expiry.Refuse):
            return self._reject(decision.code, decision.message)
        return await self._deliver(
            source, route.peer_id, prepare, decision.expires_at, decision.timeout, raw
        )

    async def _deliver(
        self,
        source: str | None,
        target: str | None,
        prepare: Prepare,
        expires_at: datetime,
        time_limit: float,
        raw: bytes,
    ) -> Reply:
        """Reserve, journal, hand the Prepare to the next hop with its expiry ``expires_at`` (or
        as it is to the local receiver), settle up.

        A forwarded packet without a definite answer (no reply in time, a failed link) stays
        in the journal: the resolver asks the next hop what became of it
        (host.connector.inflight). So does one whose Fulfill could not be recorded.
        """
        try:
            hold = await self.balances.reserve(source, target, prepare.amount)
        except CreditRefused as exc:
            return self._reject(ErrorCode.T04_INSUFFICIENT_LIQUIDITY, str(exc))
        except AccountNotReady as exc:
            return self._reject(ErrorCode.T00_INTERNAL_ERROR, str(exc))
        # The Prepare as it goes to the next hop: only its expiry differs from what came in.
        outgoing = prepare_with_expiry(raw, expires_at) if target is not None else raw
        packet = InFlight(
            key=packet_id(source, raw).hex(),
            source=source,
            source_id=outcome.wire_packet_id(raw) if source is not None else b"",
            target=target,
            target_id=outcome.wire_packet_id(outgoing) if target is not None else b"",
            amount=prepare.amount,
            expires_at=expires_at.timestamp(),
            condition=prepare.execution_condition,
        )
        journaled = target is not None and prepare.amount > 0 and self.balances.journaled
        if journaled:
            try:
                await self.balances.journal(packet)
            except Exception:
                self.balances.release(hold)
                log.exception("could not journal a packet to peer %s: rejecting it", target)
                return self._reject(ErrorCode.T00_INTERNAL_ERROR, "could not record the packet")
        try:
            reply, definite = await self._next_hop(target, prepare, outgoing, time_limit)
        except BaseException:
            self.balances.release(hold)
            if journaled:
                self.inflight.add(packet)
            raise
        if isinstance(reply, Fulfill) and (
            hashlib.sha256(reply.fulfillment).digest() != prepare.execution_condition
        ):
            log.warning(
                "%s returned a fulfillment that does not match the condition",
                f"peer {target}" if target else "the local receiver",
            )
            reply = self._reject(
                ErrorCode.F05_WRONG_CONDITION, "the next hop's fulfillment does not match"
            )
        if isinstance(reply, Reject):
            self.balances.release(hold)
            if journaled and not definite:
                self.inflight.add(packet)
            elif journaled:
                await self._resolve_rejected(packet)
            return reply
        failpoints.hit(failpoints.CONNECTOR_AFTER_FULFILL)
        if source is not None and self._now() >= prepare.expires_at:
            # Too late for the source: it has given up (and will be told "rejected" if it
            # asks). The next hop's Fulfill is still a fact: its side is recorded.
            self.balances.release(hold)
            if target is not None:
                self.inflight.add(packet, reply.fulfillment)
            return self._reject(ErrorCode.R00_TRANSFER_TIMED_OUT, "the packet expired meanwhile")
        return await self._commit(hold, packet, reply)

    async def _resolve_rejected(self, packet: InFlight) -> None:
        try:
            await self.balances.resolve_rejected(packet)
        except Exception as exc:
            log.warning("could not record a rejected packet (it is resolved later): %s", exc)
            self.inflight.add(packet)

    async def _commit(self, hold: Hold, packet: InFlight, fulfill: Fulfill) -> Reply:
        try:
            recorded = await self.balances.commit(hold, packet, fulfill.fulfillment)
        except Exception as exc:
            log.exception(
                "a fulfilled packet from %s could not be charged: answering with a Reject",
                hold.source or "this host",
            )
            if packet.target is not None:
                # The next hop fulfilled: its debit is owed whatever we answer.
                self.inflight.add(packet, fulfill.fulfillment, str(exc))
            return self._reject(ErrorCode.T00_INTERNAL_ERROR, "could not record the payment")
        if not recorded:
            return self._reject(
                ErrorCode.R00_TRANSFER_TIMED_OUT, "the packet was resolved meanwhile"
            )
        return fulfill

    async def _next_hop(
        self, target: str | None, prepare: Prepare, outgoing: bytes, time_limit: float
    ) -> tuple[Reply, bool]:
        """The next hop's reply, and whether it is definite (False: we made up a Reject
        because no answer came, so the next hop may still have fulfilled it). ``outgoing``:
        the Prepare's bytes for the next hop; the local receiver gets ``prepare``."""
        if target is None:
            try:
                async with asyncio.timeout(time_limit):
                    return await self._local.handle(prepare), True
            except TimeoutError:
                return self._reject(
                    ErrorCode.R00_TRANSFER_TIMED_OUT, "the receiver did not answer in time"
                ), True
        try:
            return await self._exchange(target, prepare, time_limit, outgoing), True
        except LinkTimeout:
            return self._reject(
                ErrorCode.R00_TRANSFER_TIMED_OUT, "the next hop did not answer in time"
            ), False
        except LinkFailure as exc:
            return self._reject(
                ErrorCode.T01_PEER_UNREACHABLE, "the next hop is unreachable"
            ), not exc.maybe_delivered
        except PacketRefused as exc:
            code = (
                ErrorCode.F08_AMOUNT_TOO_LARGE
                if exc.status == 413
                else ErrorCode.T01_PEER_UNREACHABLE
            )
            return self._reject(code, f"peer {target} refused the packet: {exc}"), not (
                exc.server_error
            )

    async def _outcome_answer(self, peer_id: str, prepare: Prepare) -> Reply:
        """``peer.outcome``: what our journal says of a packet this peer sent us."""
        try:
            packet_id_ = outcome.read_query(prepare)
        except outcome.OutcomeError as exc:
            return self._reject(exc.code, exc.message)
        if expiry.check_expired(prepare.expires_at, self._now()) is not None:
            return self._reject(ErrorCode.R00_TRANSFER_TIMED_OUT, "the query has expired")
        journal = self.balances.journal_port
        assert journal is not None
        return outcome.answer(await journal.packet_outcome(peer_id, packet_id_))

    async def _ask_outcome(self, peer_id: str, packet: InFlight) -> outcome.Outcome:
        """Ask a next hop what became of ``packet`` (host.connector.inflight's question)."""
        timeout = OUTCOME_QUERY_TIMEOUT
        query = outcome.query(packet.target_id, self._now() + timedelta(seconds=timeout))
        reply = await self._exchange(peer_id, query, timeout)
        return outcome.read_reply(reply, packet.condition)

    async def _exchange(
        self, peer_id: str, prepare: Prepare, time_limit: float, encoded: bytes | None = None
    ) -> Reply:
        """One ILP-over-HTTP exchange with a peer; the link state follows the outcome.
        ``encoded``: the bytes to send, when the caller has them (``prepare`` encoded, its
        expiry perhaps changed).

        Raises LinkFailure (the link's state moves) or PacketRefused (it does not, except
        after a streak of 5xx).
        """
        peer = self._peers[peer_id]
        self.links.sending(peer_id)
        try:
            reply = await self._client.send(
                peer.url,
                peer.outgoing_token,
                serialize(prepare) if encoded is None else encoded,
                time_limit,
            )
        except LinkFailure as exc:
            self.links.failed(peer_id, str(exc))
            log.info("link to peer %s: %s", peer_id, exc)
            self._observe_outgoing(peer_id, prepare, None)
            raise
        except PacketRefused as exc:
            self._refused(peer_id, exc)
            self._observe_outgoing(peer_id, prepare, None)
            raise
        self._server_errors[peer_id] = 0
        self.links.succeeded(peer_id)
        self._observe_outgoing(peer_id, prepare, reply)
        return reply

    def _observe_outgoing(self, peer_id: str, prepare: Prepare, reply: Reply | None) -> None:
        """Tell the observer of a Prepare sent to a peer (None: no ILP reply came)."""
        destination = prepare.destination
        if not ilp_address.is_peer_address(destination):
            self.observer.outgoing(peer_id, prepare.amount, reply)
        elif destination == peer_settle.SETTLE_ADDRESS:
            self.observer.settlement_message(peer_id, "outgoing", isinstance(reply, Fulfill))
        # Other peer.* messages (routes, ILDCP) are the link's control traffic: not counted.

    def _refused(self, peer_id: str, exc: PacketRefused) -> None:
        log.info("peer %s refused a packet: %s", peer_id, exc)
        if not exc.server_error:
            self._server_errors[peer_id] = 0
            if self.links.state(peer_id).state == Connectivity.CONNECTING:
                self.links.succeeded(peer_id)  # it answered: the link itself works
            return
        self._server_errors[peer_id] += 1
        if self._server_errors[peer_id] >= SERVER_ERROR_STREAK:
            self.links.failed(
                peer_id, f"{self._server_errors[peer_id]} server errors in a row: {exc}"
            )

    def _reject(self, code: str, message: str) -> Reject:
        return make_reject(code, self.address, message)

    # -- ILDCP and route broadcast ----------------------------------------------------------

    def _peer_protocol(self, peer_id: str, prepare: Prepare) -> Reply:
        if prepare.execution_condition != ildcp.PEER_PROTOCOL_CONDITION:
            return self._reject(
                ErrorCode.F01_INVALID_PACKET, "the condition must be the peer protocol condition"
            )
        if expiry.check_expired(prepare.expires_at, self._now()) is not None:
            return self._reject(ErrorCode.R00_TRANSFER_TIMED_OUT, "the request has expired")
        if prepare.destination == ccp.CONTROL_ADDRESS:
            return self.routes.handle_control(peer_id, prepare)
        if prepare.destination == ccp.UPDATE_ADDRESS:
            return self.routes.handle_update(peer_id, prepare)
        return self._configure_child(peer_id)

    def _configure_child(self, peer_id: str) -> Reply:
        """ILDCP: a child's address (ours + its segment) and its account's asset."""
        peer = self._peers[peer_id]
        if peer.relation != "child":
            return self._reject(
                ErrorCode.F00_BAD_REQUEST,
                f"peer.config answers children only; {peer_id} is configured as a {peer.relation}",
            )
        if not self.address:
            return self._reject(ErrorCode.T00_INTERNAL_ERROR, "this host has no address yet")
        asset = self._assets.get(peer_id)
        if asset is None:
            return self._reject(
                ErrorCode.F00_BAD_REQUEST,
                f"no [[account]] {peer_id}: the child's asset is unknown",
            )
        code, scale = asset
        return ildcp.fulfill(ildcp.IldcpResponse(peer.child_address(self.address), scale, code))

    # -- peer.reconcile -------------------------------------------------------------------

    async def totals(self, peer_id: str) -> reconcile.Totals:
        """Our book of ``peer_id``'s account with what is in flight now. UnknownPeer; other
        ConnectorError if the book cannot be read."""
        if peer_id not in self._peers:
            raise UnknownPeer(f"no peer has account id {peer_id!r}")
        if self._books is None:
            raise ConnectorError("this connector keeps no books to reconcile")
        try:
            book = await self._books(peer_id)
        except ConnectorError:
            raise
        except Exception as exc:
            raise ConnectorError(f"the book of account {peer_id} cannot be read: {exc}") from exc
        incoming, outgoing = self.balances.reserved(peer_id)
        return reconcile.Totals(
            book.asset_scale, book.balance, book.settled_out, book.settled_in, incoming, outgoing
        )

    async def ask_reconcile(
        self, peer_id: str
    ) -> tuple[reconcile.Totals, reconcile.Totals, reconcile.Totals]:
        """Ask ``peer_id`` for its totals: (ours before, theirs, ours after).

        Raises UnknownPeer, ConnectorError (our book), PeerUnreachable, reconcile.NotSupported
        (the peer has no such address) or reconcile.ReconcileError (refused or malformed).
        """
        before = await self.totals(peer_id)
        prepare = reconcile.request(before, self._now() + self._settle_timeout)
        try:
            reply = await self._exchange(peer_id, prepare, self._settle_timeout.total_seconds())
        except (LinkFailure, PacketRefused) as exc:
            raise PeerUnreachable(f"peer {peer_id}: {exc}") from exc
        theirs = reconcile.read_reply(reply)
        return before, theirs, await self.totals(peer_id)

    async def _answer_reconcile(self, peer_id: str, prepare: Prepare) -> Reply:
        try:
            reconcile.read_request(prepare)
        except reconcile.ReconcileError as exc:
            log.warning("peer %s sent a malformed peer.reconcile: %s", peer_id, exc.message)
            return self._reject(exc.code, exc.message)
        if expiry.check_expired(prepare.expires_at, self._now()) is not None:
            return self._reject(ErrorCode.R00_TRANSFER_TIMED_OUT, "the request has expired")
        try:
            totals = await self.totals(peer_id)
        except ConnectorError as exc:
            log.warning("peer.reconcile from %s not answered: %s", peer_id, exc)
            return self._reject(ErrorCode.T00_INTERNAL_ERROR, str(exc))
        return reconcile.fulfill(totals)

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
        loop = asyncio.get_running_loop()
        held = self._settle_held_until.get(account_id)
        if held is not None and loop.time() < held:
            raise PeerRefused(
                f"peer {account_id}: {self._settlement[account_id]} (not asked again for "
                f"{held - loop.time():.0f} s)",
                ErrorCode.F01_INVALID_PACKET,
                b"",
            )
        prepare = peer_settle.settle_prepare(data, self._now() + self._settle_timeout)
        try:
            reply = await self._exchange(account_id, prepare, self._settle_timeout.total_seconds())
        except LinkFailure as exc:
            raise PeerUnreachable(f"peer {account_id}: {exc}") from exc
        except PacketRefused as exc:
            raise PeerRefused(
                f"peer {account_id} refused the message: {exc}",
                ErrorCode.F08_AMOUNT_TOO_LARGE
                if exc.status == 413
                else ErrorCode.T01_PEER_UNREACHABLE,
                b"",
            ) from exc
        if (
            isinstance(reply, Reject)
            and reply.code in _NO_SETTLEMENT_ENGINE
            and reply.triggered_by != peer_settle.SETTLE_ADDRESS
        ):
            # Refused by the peer's connector itself, not by a settlement engine behind it.
            self._settlement[account_id] = (
                f"no settlement engine behind the peer: its connector refuses peer.settle "
                f"({reply.code} {reply.message or 'no message'}); a peer that settles in its "
                "own plugins"
            )
            self._settle_held_until[account_id] = loop.time() + SETTLE_REFUSAL_HOLD
            log.warning("peer %s: %s", account_id, self._settlement[account_id])
        try:
            answer = peer_settle.settle_reply(reply)
        except peer_settle.SettleMessageError as exc:
            if account_id not in self._settle_held_until:
                self._settlement[account_id] = f"refused: {exc.message} ({exc.code})"
            raise PeerRefused(
                f"peer {account_id}: {exc.message} ({exc.code})",
                exc.code,
                exc.data,
            ) from exc
        self._settlement[account_id] = "ok"
        self._settle_held_until.pop(account_id, None)
        return answer
