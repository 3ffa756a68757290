"""The connector behind HostAdmin: its peers' links and balances, where its engine runs, and
test packets with progress."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import grpc

from host.admin.server import AdminError
from host.connector.connector import Connector
from host.connector.inflight import Unresolved
from host.connector.local import PacketSource, SendProgress, SendSummary, nearest_rank
from host.connector.reconciliation import Outcome, Reconciler
from host.ilp import IlpPacketError
from host.ilp import address as ilp_address
from host.ilp.reconcile import Totals
from host.pb.ilphost.admin.v1 import admin_pb2
from sdk.pb.ilphost.types.v1 import types_pb2

#: An account's clearing balance as the connector holds it, and its scale; None if unknown.
BalanceReader = Callable[[str], Awaitable[tuple[int, int] | None]]

#: Progress messages at most this often (the last one always comes).
PROGRESS_INTERVAL = 0.25
MAX_COUNT = 1_000_000
MAX_CONCURRENCY = 256


def _unresolved(waiting: Unresolved, scale: int) -> admin_pb2.UnresolvedPacket:
    message = admin_pb2.UnresolvedPacket(
        key=waiting.packet.key,
        amount=types_pb2.Amount(value=str(waiting.packet.amount), scale=scale),
        fulfilled=bool(waiting.fulfillment),
        attempts=waiting.attempts,
        last_error=waiting.last_error,
    )
    message.expires_at.FromDatetime(datetime.fromtimestamp(waiting.packet.expires_at, UTC))
    return message


class ConnectorAdminService:
    """host.admin.server.ConnectorAdmin over a running Connector."""

    def __init__(
        self,
        connector: Connector,
        peers: dict[str, tuple[str, str]],
        balance: BalanceReader,
        engine_link: Callable[[], admin_pb2.EngineLink] = admin_pb2.EngineLink,
        reconciler: Reconciler | None = None,
    ) -> None:
        """``peers`` maps each peer id to its (ILP address, URL), in configuration order;
        ``engine_link`` describes the engine (by default: in this process); ``reconciler``
        compares the books with the peers (None: Reconcile is FAILED_PRECONDITION)."""
        self._connector = connector
        self._peers = peers
        self._balance = balance
        self._engine_link = engine_link
        self._reconciler = reconciler

    async def list_peers(self) -> admin_pb2.ListPeersResponse:
        links = {state.name: state for state in self._connector.link_states()}
        connector = self._connector
        listing = admin_pb2.ListPeersResponse(
            address=connector.address,
            engine=self._engine_link(),
            address_source=connector.address_source,
        )
        exchanges = {state.peer_id: state for state in connector.routes.status()}
        for peer_id, (address, url) in self._peers.items():
            exchange = exchanges[peer_id]
            peer = listing.peers.add(
                id=peer_id,
                address=connector.peer_address(peer_id) or address,
                url=url,
                link=links[f"peer:{peer_id}"].to_proto(),
                relation=connector.peer_relation(peer_id),
                settlement_messages=connector.settlement_messages(peer_id),
                routes=admin_pb2.RouteExchange(
                    send_mode=exchange.send_mode,
                    sent_epoch=exchange.sent_epoch,
                    receive_table_id=exchange.receive_table_id,
                    received_epoch=exchange.received_epoch,
                    learned_routes=exchange.learned,
                    last_error=exchange.error,
                ),
            )
            if self._reconciler is not None and peer_id in self._reconciler.last:
                peer.reconciliation.CopyFrom(
                    reconciliation_to_proto(self._reconciler.last[peer_id])
                )
            balance = await self._balance(peer_id)
            scale = 0
            if balance is not None:
                value, scale = balance
                peer.clearing_balance.CopyFrom(
                    types_pb2.SignedAmount(value=str(value), scale=scale)
                )
            peer.outcome_unsupported = connector.inflight.unsupported.get(peer_id, 0)
            for waiting in connector.inflight.waiting():
                if waiting.packet.target == peer_id:
                    peer.unresolved_packets.append(_unresolved(waiting, scale))
        return listing

    async def reconcile(self, peer_id: str) -> admin_pb2.ReconcileResponse:
        if peer_id not in self._peers:
            raise AdminError(grpc.StatusCode.NOT_FOUND, f"no peer {peer_id[:128]!r}")
        if self._reconciler is None:
            raise AdminError(
                grpc.StatusCode.FAILED_PRECONDITION, "this connector keeps no books to reconcile"
            )
        outcome = await self._reconciler.reconcile(peer_id)
        return admin_pb2.ReconcileResponse(reconciliation=reconciliation_to_proto(outcome))

    async def list_routes(self) -> admin_pb2.ListRoutesResponse:
        connector = self._connector
        return admin_pb2.ListRoutesResponse(
            routes=[
                admin_pb2.Route(
                    prefix=route.prefix,
                    next_hop=route.peer_id or "",
                    source=route.source,
                    path=list(route.path),
                )
                for route in connector.routing.routes()
            ],
            routing_table_id=str(connector.routes.table_id),
            epoch=connector.routes.epoch,
        )

    async def send_packets(
        self, request: admin_pb2.SendPacketsRequest
    ) -> AsyncIterator[admin_pb2.SendPacketsResponse]:
        try:
            ilp_address.validate(request.destination, "destination")
        except (IlpPacketError, ValueError) as exc:
            raise AdminError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from exc
        if not 1 <= request.count <= MAX_COUNT:
            raise AdminError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"count must be 1..{MAX_COUNT}, got {request.count}",
            )
        if request.concurrency > MAX_CONCURRENCY:
            raise AdminError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"concurrency must be at most {MAX_CONCURRENCY}, got {request.concurrency}",
            )
        latest: list[SendProgress] = []
        changed = asyncio.Event()

        def progress(now: SendProgress) -> None:
            latest[:] = [now]
            changed.set()

        source = PacketSource(self._connector)
        sending = asyncio.create_task(
            source.send(
                request.destination,
                request.amount,
                request.count,
                concurrency=request.concurrency or 1,
                progress=progress,
            )
        )
        try:
            while not sending.done():
                waiter = asyncio.create_task(changed.wait())
                await asyncio.wait({sending, waiter}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if latest and not sending.done():
                    changed.clear()
                    yield _progress(latest[0])
                    # At most one message per interval, but the summary the moment it is done.
                    await asyncio.wait({sending}, timeout=PROGRESS_INTERVAL)
            summary = sending.result()
        finally:
            if not sending.done():
                sending.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sending
        yield _summary(summary)


def _progress(now: SendProgress) -> admin_pb2.SendPacketsResponse:
    return admin_pb2.SendPacketsResponse(
        sent=now.sent,
        fulfilled=now.fulfilled,
        rejected=sum(now.rejected.values()),
        rejected_by_code=dict(now.rejected),
    )


def _summary(summary: SendSummary) -> admin_pb2.SendPacketsResponse:
    return admin_pb2.SendPacketsResponse(
        sent=summary.sent,
        fulfilled=summary.fulfilled,
        rejected=sum(summary.rejected.values()),
        rejected_by_code=dict(summary.rejected),
        done=True,
        median_latency_ms=nearest_rank(summary.latencies, 0.5) * 1000,
        p99_latency_ms=nearest_rank(summary.latencies, 0.99) * 1000,
    )


def reconciliation_to_proto(outcome: Outcome) -> admin_pb2.Reconciliation:
    """The admin API's form of one reconciliation."""
    scale = outcome.ours.asset_scale if outcome.ours is not None else 0

    def signed(value: int) -> types_pb2.SignedAmount:
        return types_pb2.SignedAmount(value=str(value), scale=scale)

    message = admin_pb2.Reconciliation(
        peer=outcome.peer_id,
        status=outcome.status,
        detail=outcome.detail,
        clearing_difference=signed(outcome.clearing_difference),
        to_peer_in_transit=signed(outcome.to_peer_in_transit),
        from_peer_in_transit=signed(outcome.from_peer_in_transit),
    )
    message.at.FromNanoseconds(int(outcome.at * 1e9))
    if outcome.ours is not None:
        message.ours.CopyFrom(_totals(outcome.ours))
    if outcome.theirs is not None:
        message.theirs.CopyFrom(_totals(outcome.theirs))
    return message


def _totals(totals: Totals) -> admin_pb2.ReconcileTotals:
    scale = totals.asset_scale

    def amount(value: int) -> types_pb2.Amount:
        return types_pb2.Amount(value=str(value), scale=scale)

    return admin_pb2.ReconcileTotals(
        balance=types_pb2.SignedAmount(value=str(totals.balance), scale=scale),
        settled_out=amount(totals.settled_out),
        settled_in=amount(totals.settled_in),
        in_flight_in=amount(totals.in_flight_in),
        in_flight_out=amount(totals.in_flight_out),
    )
