"""The engine's binding to a connector in another process (proposal 2), over the Connector API.

The engine is the same as in proposal 1; what differs is who holds the clearing balances that
packets move. Here the connector does (it must keep clearing while the engine is away), and the
engine keeps its own copy, in step through two flows:

- **Connector to engine**: ``WatchEvents``. Each balance change (a fulfilled packet) is applied
  to the engine's account under the change's own idempotency key, which may queue a settlement;
  then its cursor is acknowledged. A crash between the two replays the change, and the key makes
  the replay count once. Changes whose key starts with ``engine/`` are our own, echoed back.
- **Engine to connector**: the engine journals every change it makes to a balance itself (a
  settlement's debit, an incoming credit) in the transaction that makes it
  (``Engine(journal_clearing=True)``); :meth:`RemoteConnector.push_effects` sends each with
  ``ApplyBalanceDelta`` under its ``engine/`` key and forgets it once the connector confirmed.

Both flows retry with backoff while the connector is down, so nothing is lost and, thanks to the
keys, nothing counts twice. ``peer.settle`` messages travel both ways too: the connector's
``PeerMessage`` events go to our adaptors (``SettlementMessagesPort``), and our adaptors'
``SendData`` goes to the connector's ``SendData`` (:meth:`send_settlement_message`).

Each event stream's headers say where the connector's log ended when it opened
(``ilp-backlog-end``); :attr:`RemoteConnector.in_step` is set once the engine has applied that
far, and the engine credits incoming settlements only then (``Engine(connector_in_step=...)``):
a settlement pays for packets, and credited before their changes it would leave the engine
owing the payer, and paying it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random as _random
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from host.connector.api import BACKLOG_END
from host.connector.ports import (
    STATUS_OF_ERROR,
    ConnectorError,
    MessageRefused,
    PeerRefused,
    PeerUnreachable,
    SettlementMessagesPort,
    UnknownPeer,
)
from host.credentials import ServerTls, client_credentials
from host.engine import Engine, EngineError, NotFound
from host.engine.model import ClearingEffect
from host.engine.store import Store
from host.pb.ilphost.admin.v1 import admin_pb2
from host.pb.ilphost.connector.v1 import connector_pb2, connector_pb2_grpc
from host.store import StoreError
from sdk import channels
from sdk.amount import AmountError, signed_of
from sdk.backoff import Backoff
from sdk.pb.ilphost.types.v1 import types_pb2

log = logging.getLogger("ilp_host.connector_link")

#: The prefix of the keys of the engine's own balance changes (the Connector API reserves it).
ENGINE_KEY_PREFIX = "engine/"
#: Pauses while the connector is unreachable or an event cannot be applied yet.
RETRY_BACKOFF = Backoff(initial=0.2, cap=5.0)
#: How often the processed cursor is acknowledged (acknowledgements are cumulative).
ACK_INTERVAL = 0.2
#: Deadline of unary calls to the connector.
CALL_TIMEOUT = 10.0
#: How many journaled effects are read at a time.
PUSH_BATCH = 64
#: Slack added to the peer's own timeout for SendData.
SEND_SLACK = 5.0
#: Events read ahead of the engine, and applied together at most.
QUEUE_LIMIT = 1024
BATCH_LIMIT = 256


@dataclass
class RemoteConnectorStatus:
    """What an operator watches of the link (logged on change; see ``ilp-host engine``)."""

    connected: bool = False
    #: The last event cursor applied, and the last acknowledged to the connector.
    processed: int = 0
    acknowledged: int = 0
    #: Effects pushed since the start.
    pushed: int = 0


async def _read_into(
    call: grpc.aio.UnaryStreamCall[
        connector_pb2.WatchEventsRequest, connector_pb2.WatchEventsResponse
    ],
    arrived: asyncio.Queue[connector_pb2.WatchEventsResponse | None],
) -> None:
    """Move the stream's events into ``arrived``; None once it ended (its error is raised)."""
    try:
        async for event in call:
            await arrived.put(event)
    except grpc.aio.AioRpcError:
        await arrived.put(None)
        raise
    await arrived.put(None)


async def _next_batch(
    arrived: asyncio.Queue[connector_pb2.WatchEventsResponse | None],
) -> list[connector_pb2.WatchEventsResponse] | None:
    """The events that arrived (waiting for one), up to BATCH_LIMIT; None once the stream ended."""
    first = await arrived.get()
    if first is None:
        return None
    batch = [first]
    while len(batch) < BATCH_LIMIT and not arrived.empty():
        event = arrived.get_nowait()
        if event is None:
            arrived.put_nowait(None)  # seen again on the next call, after this batch
            break
        batch.append(event)
    return batch


def _backlog_end(headers: grpc.aio.Metadata | None) -> int:
    """The ``ilp-backlog-end`` header of a WatchEvents stream; 0 when absent (a connector
    that does not send it leaves nothing to wait for) or malformed."""
    value = None if headers is None else headers.get(BACKLOG_END)
    try:
        return int(value) if isinstance(value, str) else 0
    except ValueError:
        return 0


def channel_to(address: str, tls: ServerTls | None = None) -> grpc.aio.Channel:
    """A channel to the Connector API at ``unix:PATH``, or at ``HOST:PORT`` with ``tls`` (the
    certificate to trust and the token to present)."""
    return channels.aio_channel(
        address,
        None if tls is None else client_credentials(tls),
        options=[
            # Notice a connector that died without closing the connection (a TCP peer).
            ("grpc.keepalive_time_ms", 10_000),
            ("grpc.keepalive_timeout_ms", 5_000),
            ("grpc.keepalive_permit_without_calls", 1),
            # gRPC's default reconnect backoff grows to 2 minutes: an engine started well
            # before its connector would then wait that long after the connector is up.
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.min_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 2000),
        ],
    )


class RemoteConnector:
    """Keeps an engine and a connector process in step (see the module docstring)."""

    def __init__(
        self,
        engine: Engine,
        store: Store,
        channel: grpc.aio.Channel,
        messages: SettlementMessagesPort,
        *,
        effects: asyncio.Event,
        address: str,
        send_timeout: float = 30.0,
        random: Callable[[], float] = _random.random,
        in_step: asyncio.Event | None = None,
    ) -> None:
        """``effects`` is set by the engine after each clearing effect it journals
        (``Engine(on_clearing_effect=effects.set)``): the link then pushes them.

        ``in_step`` is set while the engine has applied every balance change the connector
        had logged when the event stream opened, clear while it has not or the stream is down
        (the engine waits on it: ``Engine(connector_in_step=in_step)``)."""
        self._engine = engine
        self._store = store
        self._stub = connector_pb2_grpc.ConnectorStub(channel)
        self._messages = messages
        self.address = address
        self._send_timeout = send_timeout + SEND_SLACK
        self.status = RemoteConnectorStatus()
        self._effects = effects
        self.in_step = in_step if in_step is not None else asyncio.Event()
        #: The cursor the connector's log ended at when the stream opened (0: nothing to apply).
        self._backlog_end = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._scales: dict[str, int] = {}
        self._random = random

    async def run(self) -> None:
        """Follow the events, acknowledge them and push the effects, until cancelled."""
        self._effects.set()  # effects journaled before a restart are pushed first
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self.follow_events(), name="connector-events")
                group.create_task(self.acknowledge_events(), name="connector-acks")
                group.create_task(self.push_effects(), name="connector-effects")
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- connector to engine --------------------------------------------------------------------

    async def follow_events(self) -> None:
        """Apply the connector's events in order, reopening the stream after any failure."""
        failures = 0  # in a row: progress resets it
        while True:
            # 0 on the first open: from the oldest unacknowledged. After that, from what this
            # process applied (unacknowledged changes would only be replays).
            request = connector_pb2.WatchEventsRequest(after_cursor=self.status.processed)
            call = self._stub.WatchEvents(request)
            arrived: asyncio.Queue[connector_pb2.WatchEventsResponse | None] = asyncio.Queue(
                maxsize=QUEUE_LIMIT
            )
            reader = asyncio.create_task(_read_into(call, arrived))
            try:
                # The connector sends the headers once it attached this stream: connected from
                # then on, not from the first event (an idle connector may send none for long).
                headers = await call.initial_metadata()
                if not call.done():
                    self._connected()
                    self._backlog_end = _backlog_end(headers)
                    self._check_in_step()
                while (batch := await _next_batch(arrived)) is not None:
                    self._connected()
                    failures = 0
                    await self._on_events(batch)
                await reader  # the stream ended: its error, if any
            except grpc.aio.AioRpcError as exc:
                failures += 1
                delay = RETRY_BACKOFF.delay(failures, self._random)
                self._disconnected(f"{exc.code().name}: {exc.details()}", delay)
                if exc.code() == grpc.StatusCode.OUT_OF_RANGE:
                    log.error(
                        "the connector's event log is behind this engine (cursor %d): was its "
                        "database replaced? Resuming from its oldest unacknowledged event; the "
                        "balances of the two may now differ",
                        self.status.processed,
                    )
                    self.status.processed = self.status.acknowledged = 0
            else:
                failures += 1
                delay = RETRY_BACKOFF.delay(failures, self._random)
                self._disconnected("the event stream ended", delay)
            finally:
                call.cancel()
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
            await asyncio.sleep(delay)

    def _connected(self) -> None:
        if not self.status.connected:
            self.status.connected = True
            log.info("following the connector's events at %s", self.address)

    def _disconnected(self, why: str, delay: float) -> None:
        if self.status.connected:
            log.warning("lost the connector at %s (%s); reconnecting", self.address, why)
        else:
            log.info(
                "connector at %s not reachable (%s); retrying in %.1fs", self.address, why, delay
            )
        self.status.connected = False
        # What the connector logs meanwhile is unknown until the next stream says.
        self.in_step.clear()

    def _check_in_step(self) -> None:
        if self.in_step.is_set() or self.status.processed < self._backlog_end:
            return
        self.in_step.set()
        if self._backlog_end:
            log.info(
                "applied the balance changes the connector logged meanwhile (up to cursor %d)",
                self._backlog_end,
            )

    async def _on_events(self, batch: list[connector_pb2.WatchEventsResponse]) -> None:
        """Answer the peer messages, apply the balance changes, then move the cursor."""
        changes = []
        for event in batch:
            kind = event.WhichOneof("event")
            if kind == "peer_message":
                # Answered concurrently: a message may wait on the ledger, the log must not.
                task = asyncio.create_task(self._answer(event.peer_message))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            elif kind == "balance_changed":
                changes.append(event.balance_changed)
        # Started in cursor order, the engine's transactions run in that order and share
        # their commits (group commit): one fsync for the batch, not one per change.
        applied = await asyncio.gather(*(self._apply_once(change) for change in changes))
        for change, done in zip(changes, applied, strict=True):
            if not done:
                await self._apply(change)
        cursors = [event.cursor for event in batch if event.cursor]
        if cursors:
            self.status.processed = max(cursors)
            self._check_in_step()

    async def _apply(self, change: connector_pb2.BalanceChanged) -> None:
        """Apply one balance change to the engine, retrying until it can be."""
        failures = 1
        while not await self._apply_once(
            change, retrying_in=(delay := RETRY_BACKOFF.delay(failures, self._random))
        ):
            await asyncio.sleep(delay)
            failures += 1

    async def _apply_once(
        self, change: connector_pb2.BalanceChanged, retrying_in: float = 0.0
    ) -> bool:
        """Apply a change; False when it cannot be yet (the caller retries)."""
        key = change.idempotency_key
        if key.startswith(ENGINE_KEY_PREFIX):
            return True  # our own settlement effect, already in the engine's balance
        try:
            scale = await self._scale(change.account_id)
            if change.delta.scale != scale:
                raise ValueError(
                    f"delta at scale {change.delta.scale}, the engine's account is at "
                    f"scale {scale}: the connector's and the engine's accounts differ"
                )
            delta = signed_of(change.delta, "delta")
            await self._engine.apply_balance_change(change.account_id, delta, key)
            return True
        except NotFound:
            # At start-up an account exists once its adaptor serves.
            problem = f"no account {change.account_id} in the engine yet"
        except (ValueError, AmountError, StoreError) as exc:
            problem = str(exc)
        except EngineError as exc:
            # Refused for good (a key reused with other content): nothing to wait for.
            log.error("balance change %s on %s refused: %s", key, change.account_id, exc)
            return True
        if retrying_in:
            log.warning(
                "cannot apply the connector's balance change %s yet: %s; retrying in %.1fs",
                key,
                problem,
                retrying_in,
            )
        return False

    async def _scale(self, account_id: str) -> int:
        scale = self._scales.get(account_id)
        if scale is None:
            scale = (await self._engine.get_account(account_id)).account.asset_scale
            self._scales[account_id] = scale
        return scale

    async def acknowledge_events(self) -> None:
        """Acknowledge the processed cursor whenever it moved (cumulative, so batched)."""
        while True:
            await asyncio.sleep(ACK_INTERVAL)
            cursor = self.status.processed
            if cursor <= self.status.acknowledged:
                continue
            with contextlib.suppress(grpc.aio.AioRpcError):  # next round, or the next stream
                await self._stub.AcknowledgeEvents(
                    connector_pb2.AcknowledgeEventsRequest(cursor=cursor), timeout=CALL_TIMEOUT
                )
                self.status.acknowledged = cursor

    async def _answer(self, message: connector_pb2.PeerMessage) -> None:
        """A peer engine's message to our adaptor, and our reply back through the connector."""
        reply = connector_pb2.RespondToPeerMessageRequest(message_id=message.message_id)
        try:
            reply.data = await self._messages.receive(message.account_id, message.data)
        except MessageRefused as exc:
            reply.error = exc.message
        except Exception as exc:
            log.exception("peer message %s for %s failed", message.message_id, message.account_id)
            reply.error = f"the engine could not handle the message: {exc}"
        try:
            await self._stub.RespondToPeerMessage(reply, timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            log.warning(
                "reply to peer message %s not delivered: %s: %s (the peer retries)",
                message.message_id,
                exc.code().name,
                exc.details(),
            )

    # -- engine to connector --------------------------------------------------------------------

    async def push_effects(self) -> None:
        """Send each journaled effect to the connector, oldest first, until cancelled."""
        failures = 0  # in a row: a push that went through resets it
        while True:
            await self._effects.wait()
            self._effects.clear()
            try:
                while effects := await self._store.clearing_effects(PUSH_BATCH):
                    for effect in effects:
                        await self._push(effect)
                        await self._store.forget_clearing_effect(effect.key)
                        self.status.pushed += 1
                failures = 0
            except (grpc.aio.AioRpcError, StoreError, EngineError) as exc:
                text = (
                    f"{exc.code().name}: {exc.details()}"
                    if isinstance(exc, grpc.aio.AioRpcError)
                    else str(exc)
                )
                failures += 1
                delay = RETRY_BACKOFF.delay(failures, self._random)
                log.warning(
                    "settlement effects not pushed to the connector yet (%s); retrying in %.1fs",
                    text,
                    delay,
                )
                await asyncio.sleep(delay)
                self._effects.set()

    async def _push(self, effect: ClearingEffect) -> None:
        scale = await self._scale(effect.account_id)
        started = time.monotonic()
        await self._stub.ApplyBalanceDelta(
            connector_pb2.ApplyBalanceDeltaRequest(
                account_id=effect.account_id,
                delta=types_pb2.SignedAmount(value=str(effect.delta), scale=scale),
                idempotency_key=effect.key,
            ),
            timeout=CALL_TIMEOUT,
        )
        log.debug(
            "pushed %s (%+d on %s) in %.1f ms",
            effect.key,
            effect.delta,
            effect.account_id,
            (time.monotonic() - started) * 1000,
        )

    async def status_message(self) -> admin_pb2.GetConnectorLinkResponse:
        """The link as the engine's admin API shows it (GetConnectorLink)."""
        return admin_pb2.GetConnectorLinkResponse(
            address=self.address,
            connected=self.status.connected,
            applied_cursor=self.status.processed,
            acknowledged_cursor=self.status.acknowledged,
            effects_pushed=self.status.pushed,
            effects_waiting=await self._store.count_clearing_effects(),
        )

    # -- adaptors to the peer -------------------------------------------------------------------

    async def send_settlement_message(self, account_id: str, data: bytes) -> bytes:
        """Our adaptor's message to the peer's engine, through the connector (PeerMessenger)."""
        try:
            reply = await self._stub.SendData(
                connector_pb2.SendDataRequest(account_id=account_id, data=data),
                timeout=self._send_timeout,
            )
        except grpc.aio.AioRpcError as exc:
            code, text = exc.code().name, f"connector at {self.address}: {exc.details()}"
            if code == STATUS_OF_ERROR[PeerRefused]:
                raise PeerRefused(text, "F99") from exc
            if code == STATUS_OF_ERROR[UnknownPeer]:
                raise UnknownPeer(text) from exc
            if code in (STATUS_OF_ERROR[PeerUnreachable], "DEADLINE_EXCEEDED"):
                raise PeerUnreachable(text) from exc
            raise ConnectorError(f"{text} ({code})") from exc
        return reply.data
