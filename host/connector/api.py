"""The Connector API (ilphost.connector.v1.Connector): what ``ilp-host connector`` serves to an
external settlement engine (proposal 2).

- :class:`EngineRelay` is the connector's SettlementMessagesPort when the engine is elsewhere:
  a ``peer.settle`` message from a peer's engine goes, live, onto the engine's open event
  stream, and the connector waits for the engine's RespondToPeerMessage. With no engine
  connected the peer gets T00 at once (its adaptor retries).
- :class:`ConnectorApi` serves the RPCs over the clearing file
  (host.connector.durable_clearing), the relay and the connector's own peer links, with the
  statuses the .proto documents.
- :func:`serve_connector_api` listens on a unix socket (0600) or, with TLS and a bearer token,
  on TCP; with grpc.health.v1 and server reflection.

Who may call: the API moves balances (an ``ApplyBalanceDelta`` makes the engine settle on the
ledger) and ``WatchEvents`` takes the engine's stream over, so only the engine may reach it:
through the socket's file mode, or on TCP with the token (host.admin.auth; health exempt).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from host.admin.auth import BearerTokenInterceptor
from host.connector.durable_clearing import (
    BalanceEvent,
    ClearingInputError,
    CursorOutOfRange,
    DurableClearing,
    KeyConflict,
)
from host.connector.ports import (
    STATUS_OF_ERROR,
    MessageRefused,
    PeerRefused,
    PeerUnreachable,
    UnknownPeer,
)
from host.credentials import ServerTls
from host.ilp.errors import ErrorCode
from host.pb.ilphost.connector.v1 import connector_pb2, connector_pb2_grpc
from sdk import contract
from sdk.amount import AmountError, signed_of
from sdk.contract import MAX_DATA_BYTES
from sdk.health import HealthServicer
from sdk.pb.ilphost.types.v1 import types_pb2

log = logging.getLogger("ilp_host.connector.api")

#: The WatchEvents header that tells the engine how far behind it starts: the cursor of the last
#: balance change logged when the stream opened, or 0 when the stream starts past it. An engine
#: that has applied up to it holds every change logged before (host.remote_connector).
BACKLOG_END = "ilp-backlog-end"

Context = grpc.aio.ServicerContext[Any, Any]
SERVICE = connector_pb2.DESCRIPTOR.services_by_name["Connector"].full_name
#: Events sent per read of the log.
BATCH = 256


class PeerMessenger(Protocol):
    """The connector's side of SendData: carries data to a peer's engine (peer.settle)."""

    async def send_settlement_message(self, account_id: str, data: bytes) -> bytes: ...


@dataclass(eq=False)
class Subscription:
    """One open event stream: its live peer messages, and whether it was replaced.

    ``changed`` is set by either (the stream waits on it next to the clearing's new events).
    """

    messages: list[connector_pb2.PeerMessage] = field(default_factory=list)
    replaced: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def post(self, message: connector_pb2.PeerMessage) -> None:
        self.messages.append(message)
        self.changed.set()

    def replace(self) -> None:
        self.replaced = True
        self.changed.set()

    def take(self) -> list[connector_pb2.PeerMessage]:
        """The messages posted since the last take."""
        self.changed.clear()
        taken, self.messages = self.messages, []
        return taken


class EngineRelay:
    """The SettlementMessagesPort of a connector whose engine is another process."""

    def __init__(self, timeout: float = 30.0) -> None:
        self._timeout = timeout
        self._current: Subscription | None = None
        self._waiting: dict[str, asyncio.Future[tuple[bytes, str]]] = {}
        #: When the engine connected or disconnected last (None: never, since the start).
        self.since: datetime | None = None

    @property
    def connected(self) -> bool:
        return self._current is not None

    def attach(self) -> Subscription:
        """A new stream takes over; the one open before ends (ABORTED)."""
        if self._current is not None:
            self._current.replace()
        self._current = Subscription()
        self.since = datetime.now(UTC)
        return self._current

    def detach(self, subscription: Subscription) -> None:
        """The stream ended. Messages still queued on it are refused (T00: the peer retries)."""
        if self._current is subscription:
            self._current = None
            self.since = datetime.now(UTC)
        for message in subscription.take():
            future = self._waiting.pop(message.message_id, None)
            if future is not None and not future.done():
                future.set_exception(
                    MessageRefused("the settlement engine went away", ErrorCode.T00_INTERNAL_ERROR)
                )

    async def receive(self, account_id: str, data: bytes) -> bytes:
        """A peer engine's message: to our engine's stream, and its answer back."""
        subscription = self._current
        if subscription is None:
            raise MessageRefused(
                "no settlement engine is connected to this connector",
                ErrorCode.T00_INTERNAL_ERROR,
            )
        message_id = uuid.uuid4().hex
        future: asyncio.Future[tuple[bytes, str]] = asyncio.get_running_loop().create_future()
        self._waiting[message_id] = future
        subscription.post(
            connector_pb2.PeerMessage(message_id=message_id, account_id=account_id, data=data)
        )
        try:
            reply, error = await asyncio.wait_for(future, self._timeout)
        except TimeoutError:
            raise MessageRefused(
                f"the settlement engine did not answer within {self._timeout:g}s",
                ErrorCode.T00_INTERNAL_ERROR,
            ) from None
        finally:
            self._waiting.pop(message_id, None)
        if error:
            raise MessageRefused(error, ErrorCode.F99_APPLICATION_ERROR)
        return reply

    def respond(self, message_id: str, data: bytes, error: str) -> bool:
        """The engine's answer to a message; False when nobody waits for it any more."""
        future = self._waiting.pop(message_id, None)
        if future is None or future.done():
            return False
        future.set_result((data, error))
        return True


def _event(event: BalanceEvent, scale: int) -> connector_pb2.WatchEventsResponse:
    return connector_pb2.WatchEventsResponse(
        cursor=event.cursor,
        balance_changed=connector_pb2.BalanceChanged(
            account_id=event.account_id,
            balance=types_pb2.SignedAmount(value=str(event.balance), scale=scale),
            delta=types_pb2.SignedAmount(value=str(event.delta), scale=scale),
            idempotency_key=event.idempotency_key,
        ),
    )


class ConnectorApi(connector_pb2_grpc.ConnectorServicer):
    """ilphost.connector.v1.Connector over the clearing file, the relay and the peer links."""

    def __init__(
        self, clearing: DurableClearing, relay: EngineRelay, messenger: PeerMessenger
    ) -> None:
        self._clearing = clearing
        self._relay = relay
        self._messenger = messenger

    async def _scale(self, account_id: str, context: Context) -> int:
        """The account's scale; INVALID_ARGUMENT if the id is malformed, NOT_FOUND if unknown."""
        if not contract.is_account_id(account_id):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"account_id: {account_id[:40]!r} is invalid: use {contract.ACCOUNT_ID_RULE}",
            )
        try:
            return self._clearing.limits(account_id).asset_scale
        except UnknownPeer as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
            raise AssertionError("unreachable") from exc

    async def GetBalance(
        self, request: connector_pb2.GetBalanceRequest, context: Context
    ) -> connector_pb2.GetBalanceResponse:
        scale = await self._scale(request.account_id, context)
        balance = await self._clearing.balance(request.account_id)
        return connector_pb2.GetBalanceResponse(
            balance=types_pb2.SignedAmount(value=str(balance), scale=scale)
        )

    async def ApplyBalanceDelta(
        self, request: connector_pb2.ApplyBalanceDeltaRequest, context: Context
    ) -> connector_pb2.ApplyBalanceDeltaResponse:
        scale = await self._scale(request.account_id, context)
        try:
            delta = signed_of(request.delta, "delta")
            if request.delta.scale != scale:
                raise AmountError(
                    f"delta.scale is {request.delta.scale}, account {request.account_id} counts "
                    f"at scale {scale}"
                )
            balance = await self._clearing.apply_balance_change(
                request.account_id, delta, request.idempotency_key
            )
        except (AmountError, ClearingInputError) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except KeyConflict as exc:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, str(exc))
        return connector_pb2.ApplyBalanceDeltaResponse(
            balance=types_pb2.SignedAmount(value=str(balance), scale=scale)
        )

    async def SendData(
        self, request: connector_pb2.SendDataRequest, context: Context
    ) -> connector_pb2.SendDataResponse:
        await self._scale(request.account_id, context)  # NOT_FOUND for an unknown peer
        if len(request.data) > MAX_DATA_BYTES:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"data is {len(request.data)} bytes, at most {MAX_DATA_BYTES} allowed",
            )
        try:
            reply = await self._messenger.send_settlement_message(request.account_id, request.data)
        except (UnknownPeer, PeerUnreachable, PeerRefused) as exc:
            await context.abort(grpc.StatusCode[STATUS_OF_ERROR[type(exc)]], str(exc))
        return connector_pb2.SendDataResponse(data=reply)

    async def WatchEvents(
        self, request: connector_pb2.WatchEventsRequest, context: Context
    ) -> AsyncIterator[connector_pb2.WatchEventsResponse]:
        clearing = self._clearing
        await clearing.refresh_log()  # shared books: other instances may have written since
        if request.after_cursor > clearing.last_cursor:
            await context.abort(
                grpc.StatusCode.OUT_OF_RANGE,
                f"after_cursor {request.after_cursor} is ahead of the log (last "
                f"{clearing.last_cursor}): was this connector's database replaced?",
            )
        cursor = max(request.after_cursor, clearing.acknowledged)
        subscription = self._relay.attach()
        log.info("settlement engine attached, from cursor %d", cursor)
        try:
            # At once, not with the first event: the engine counts itself connected from the
            # headers on, also when there is nothing to send.
            backlog = clearing.last_cursor if clearing.last_cursor > cursor else 0
            await context.send_initial_metadata(((BACKLOG_END, str(backlog)),))
            while True:
                for message in subscription.take():
                    yield connector_pb2.WatchEventsResponse(cursor=0, peer_message=message)
                events = await clearing.events_after(cursor, BATCH)
                for event in events:
                    yield _event(event, clearing.limits(event.account_id).asset_scale)
                    cursor = event.cursor
                if events:
                    continue
                await self._next(subscription, cursor)
                if subscription.replaced:
                    await context.abort(
                        grpc.StatusCode.ABORTED, "another engine stream replaced this one"
                    )
        finally:
            self._relay.detach(subscription)
            log.info("settlement engine detached at cursor %d", cursor)

    async def _next(self, subscription: Subscription, cursor: int) -> None:
        """Wait for a new event, a live peer message, or being replaced."""
        waits = {
            asyncio.ensure_future(self._clearing.wait_beyond(cursor)),
            asyncio.ensure_future(subscription.changed.wait()),
        }
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    async def AcknowledgeEvents(
        self, request: connector_pb2.AcknowledgeEventsRequest, context: Context
    ) -> connector_pb2.AcknowledgeEventsResponse:
        try:
            await self._clearing.acknowledge(request.cursor)
        except CursorOutOfRange as exc:
            await context.abort(grpc.StatusCode.OUT_OF_RANGE, str(exc))
        return connector_pb2.AcknowledgeEventsResponse()

    async def RespondToPeerMessage(
        self, request: connector_pb2.RespondToPeerMessageRequest, context: Context
    ) -> connector_pb2.RespondToPeerMessageResponse:
        if not self._relay.respond(request.message_id, request.data, request.error):
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"no peer waits for message {request.message_id[:64]!r} (answered already, or "
                "it timed out)",
            )
        return connector_pb2.RespondToPeerMessageResponse()


def check_api_address(address: str, tls: ServerTls | None = None) -> None:
    """ValueError unless ``address`` is unix:PATH, or TCP with ``tls`` (TLS and a token)."""
    if not address.startswith("unix:") and tls is None:
        raise ValueError(
            f"{address}: the Connector API on TCP needs TLS and a bearer token "
            "(connector.api_tls_cert, api_tls_key, api_token_file), or a unix: socket"
        )


async def serve_connector_api(
    api: ConnectorApi, address: str, tls: ServerTls | None = None
) -> grpc.aio.Server:
    """Start a server for ``api`` on ``address`` (with health and reflection); it is running.

    On TCP, ``tls`` is required: the server speaks TLS and refuses every call but health
    checks without its bearer token."""
    check_api_address(address, tls)
    interceptors = [BearerTokenInterceptor(tls.token)] if tls is not None else []
    server = grpc.aio.server(interceptors=interceptors)
    connector_pb2_grpc.add_ConnectorServicer_to_server(api, server)
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (
            SERVICE,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    if tls is not None:
        bound = server.add_secure_port(address, tls.server_credentials())
    else:
        bound = server.add_insecure_port(address)
    if bound == 0:
        raise OSError(f"cannot listen on {address}")
    if address.startswith("unix:"):
        with contextlib.suppress(OSError):
            os.chmod(address.removeprefix("unix:").removeprefix("//"), 0o600)
    await server.start()
    for service in ("", SERVICE):
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    return server
