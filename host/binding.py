"""The engine bound to its adaptors: one place where engine, supervisor and connector meet.

- Each adaptor that serves becomes a SettlementPort of the engine (its ledger scale from
  GetInfo); one that stops serving is removed, so the outbox waits for it instead of failing.
- The configured accounts of an adaptor are created in the engine and set up in the adaptor
  (SetupAccount, retried with backoff) each time it starts serving.
- Incoming settlements: the binding follows each serving adaptor's WatchEvents itself and
  gives each settlement to the engine (credit once, then acknowledge); a credit that fails
  is retried with backoff, in ledger order. The supervisor only says who serves, on which
  channel.
- ``peer.settle`` messages from a peer's engine go to the account's adaptor (ReceiveData), and
  the adaptors' Engine.SendData goes to the peer through the connector.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random as _random
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Protocol

import grpc

from host.clearing_records import BalanceChange, InFlight, Resolution
from host.config import AccountSpec
from host.connector.ports import (
    STATUS_OF_ERROR,
    AccountNotReady,
    MessageRefused,
    PeerRefused,
    PeerUnreachable,
    UnknownPeer,
)
from host.engine import Engine, EngineError, InvalidArgument, NotFound
from host.engine.grpc_port import CALL_DEADLINE, GrpcSettlementPort
from host.ilp.outcome import Outcome
from host.lifecycle import ProcessState
from host.supervisor import AdaptorSnapshot, Supervisor
from sdk import failpoints
from sdk.amount import AmountError, parse_unsigned
from sdk.backoff import Backoff
from sdk.contract import MAX_DATA_BYTES
from sdk.pb.ilphost.adaptor.v1 import adaptor_pb2, adaptor_pb2_grpc
from sdk.pb.ilphost.engine.v1 import engine_pb2, engine_pb2_grpc

log = logging.getLogger("ilp_host.engine")

Context = grpc.aio.ServicerContext[Any, Any]
#: Pauses between SetupAccount retries.
SETUP_BACKOFF = Backoff(initial=0.2, cap=10.0)
#: Pauses before crediting an incoming settlement again, and before reopening WatchEvents.
CREDIT_BACKOFF = Backoff(initial=0.2, cap=5.0)
EVENTS_BACKOFF = Backoff(initial=0.2, cap=5.0)
#: How often the settlement accounts' liquidity is read (GetBalance).
LIQUIDITY_INTERVAL = 5.0

#: Takes one incoming settlement an adaptor reported: (adaptor name, settlement). Raising
#: means "not taken, try again" (it is retried with backoff); returning means taken or refused
#: for good.
Credit = Callable[[str, adaptor_pb2.IncomingSettlement], Awaitable[None]]


class PeerMessenger(Protocol):
    """Carries settlement messages to a peer's engine (the connector's peer.settle)."""

    async def send_settlement_message(self, account_id: str, data: bytes) -> bytes: ...


async def follow_incoming(
    channel: grpc.aio.Channel,
    adaptor: str,
    credit: Credit,
    *,
    random: Callable[[], float] = _random.random,
) -> None:
    """Until cancelled: give each incoming settlement ``adaptor`` reports on WatchEvents to
    ``credit``, in the order reported.

    A stream that ends is reopened with backoff; the adaptor then re-delivers what is still
    unacknowledged. An adaptor that does not serve WatchEvents has nothing to report: this
    returns.
    """
    stub = adaptor_pb2_grpc.LedgerAdaptorStub(channel)
    reopened = 0
    while True:
        call = stub.WatchEvents(adaptor_pb2.WatchEventsRequest())
        try:
            async for event in call:
                if event.WhichOneof("event") == "incoming_settlement":
                    await _credit_until_taken(credit, adaptor, event.incoming_settlement, random)
                    # Only progress resets the backoff: an adaptor whose stream keeps ending
                    # must not make the host reopen it in a tight loop.
                    reopened = 0
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                return
            log.debug("adaptor %s: WatchEvents ended: %s", adaptor, exc.code().name)
        finally:
            call.cancel()
        reopened += 1
        await asyncio.sleep(EVENTS_BACKOFF.delay(reopened, random))


async def _credit_until_taken(
    credit: Credit,
    adaptor: str,
    settlement: adaptor_pb2.IncomingSettlement,
    random: Callable[[], float],
) -> None:
    failures = 0
    while True:
        try:
            await credit(adaptor, settlement)
            return
        except Exception as exc:
            failures += 1
            delay = CREDIT_BACKOFF.delay(failures, random)
            log.warning(
                "adaptor %s: incoming settlement %s not credited yet (%s); retrying in %.1fs",
                adaptor,
                settlement.settlement_id,
                exc,
                delay,
                exc_info=log.isEnabledFor(logging.DEBUG),
            )
            await asyncio.sleep(delay)


class EngineBinding:
    """Keeps the engine's adaptors (its AdaptorRegistry) and accounts in step with the
    supervisor's adaptors."""

    def __init__(
        self,
        engine: Engine,
        accounts: Sequence[AccountSpec],
        *,
        random: Callable[[], float] = _random.random,
    ) -> None:
        self._engine = engine
        self._adaptors = engine.adaptors
        self._accounts = tuple(accounts)
        self._by_id = {account.id: account for account in accounts}
        self._random = random
        self._channels: dict[str, grpc.aio.Channel] = {}
        #: Each bound adaptor's ledger scale (GetInfo): incoming amounts must be at it.
        self._scales: dict[str, int] = {}
        #: What runs for each bound adaptor (its setup, its incoming settlements).
        self._tasks: dict[str, list[asyncio.Task[None]]] = {}
        #: The first of those tasks to fail: a bug, which ends ``follow``.
        self._failed: asyncio.Future[None] | None = None
        self.ready: dict[str, bool] = {account.id: False for account in accounts}
        #: Set once the account exists in the engine (or its creation was refused, logged):
        #: the connector accepts packets only after that (see host.app).
        self._created = {account.id: asyncio.Event() for account in accounts}

    async def accounts_created(self, adaptors: set[str]) -> None:
        """Return once every configured account of ``adaptors`` was created in the engine."""
        for account in self._accounts:
            if account.adaptor in adaptors:
                await self._created[account.id].wait()

    async def follow(self, supervisor: Supervisor) -> None:
        """Until cancelled: bind each adaptor while it serves, unbind it when it stops.

        Raises what a task run for an adaptor raised (a bug): the host then stops.
        """
        self._failed = asyncio.get_running_loop().create_future()
        watching = asyncio.create_task(self._watch(supervisor), name="binding-watch")
        try:
            await asyncio.wait({watching, self._failed}, return_when=asyncio.FIRST_COMPLETED)
            if self._failed.done():
                self._failed.result()
            watching.result()
        finally:
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(watching, return_exceptions=True)
            for name in list(self._tasks):
                await self._stop_tasks(name)

    async def _watch(self, supervisor: Supervisor) -> None:
        async for snapshot in supervisor.watch():
            failpoints.fail(failpoints.HOST_ENGINE_BINDING)
            await self._apply(snapshot, supervisor.channel(snapshot.name))

    async def _apply(self, snapshot: AdaptorSnapshot, channel: grpc.aio.Channel | None) -> None:
        name = snapshot.name
        serving = snapshot.state == ProcessState.SERVING and snapshot.info is not None
        if serving and channel is not None and self._channels.get(name) is not channel:
            assert snapshot.info is not None
            await self._stop_tasks(name)
            self._channels[name] = channel
            self._scales[name] = snapshot.info.asset_scale
            stub = adaptor_pb2_grpc.LedgerAdaptorStub(channel)
            self._adaptors.bind(name, GrpcSettlementPort(stub, snapshot.info.asset_scale))
            self._start(name, "setup", self._setup(name, stub, snapshot.info))
            credit = follow_incoming(channel, name, self._credit, random=self._random)
            self._start(name, "incoming", credit)
            log.info("adaptor %s bound to the engine", name)
        elif not serving and name in self._channels:
            del self._channels[name]
            self._adaptors.unbind(name)
            await self._stop_tasks(name)
            for account in self._accounts:
                if account.adaptor == name:
                    self.ready[account.id] = False
            log.info("adaptor %s unbound from the engine (%s)", name, snapshot.state.name)

    def _start(self, name: str, what: str, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work, name=f"{what}-{name}")
        task.add_done_callback(self._ended)
        self._tasks.setdefault(name, []).append(task)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        if self._failed is not None and not self._failed.done():
            self._failed.set_exception(task.exception())  # type: ignore[arg-type]

    async def _stop_tasks(self, name: str) -> None:
        tasks = self._tasks.pop(name, [])
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _setup(
        self,
        name: str,
        stub: adaptor_pb2_grpc.LedgerAdaptorAsyncStub,
        info: adaptor_pb2.GetInfoResponse,
    ) -> None:
        """Create and set up this adaptor's accounts, then keep its liquidity current."""
        for account in self._accounts:
            if account.adaptor != name:
                continue
            try:
                await self._engine.create_account(
                    account.id,
                    adaptor=name,
                    asset_code=account.asset_code,
                    asset_scale=account.asset_scale,
                    ledger_scale=info.asset_scale,
                    policy=account.policy,
                )
            except EngineError as exc:
                log.error("account %s cannot be created: %s", account.id, exc)
                self._created[account.id].set()
                continue
            self._created[account.id].set()
            failures = 0
            while True:
                try:
                    await stub.SetupAccount(
                        adaptor_pb2.SetupAccountRequest(account_id=account.id),
                        timeout=CALL_DEADLINE,
                    )
                    break
                except grpc.aio.AioRpcError as exc:
                    failures += 1
                    delay = SETUP_BACKOFF.delay(failures, self._random)
                    log.warning(
                        "SetupAccount %s on %s: %s: %s; retrying in %.1fs",
                        account.id,
                        name,
                        exc.code().name,
                        exc.details(),
                        delay,
                    )
                await asyncio.sleep(delay)
            self.ready[account.id] = True
            log.info("account %s set up on adaptor %s", account.id, name)
        self._adaptors.changed(name)  # settlements that waited for its accounts
        if "balance" in info.capabilities:
            while True:
                with contextlib.suppress(grpc.aio.AioRpcError):
                    reply = await stub.GetBalance(
                        adaptor_pb2.GetBalanceRequest(), timeout=CALL_DEADLINE
                    )
                    with contextlib.suppress(AmountError):
                        value = parse_unsigned(reply.balance.value, reply.balance.scale)
                        await self._engine.record_liquidity(name, value)
                await asyncio.sleep(LIQUIDITY_INTERVAL)

    async def _credit(self, adaptor: str, settlement: adaptor_pb2.IncomingSettlement) -> None:
        """Credit an incoming settlement once (the engine then acknowledges it).

        A malformed report is logged and left unacknowledged. An unknown account raises, so
        the credit is retried: the account may simply not be created yet at start-up.
        """
        try:
            amount = parse_unsigned(settlement.amount.value, settlement.amount.scale, "amount")
            scale = self._scales.get(adaptor)
            if scale is not None and settlement.amount.scale != scale:
                raise InvalidArgument(
                    f"amount.scale is {settlement.amount.scale}, the ledger's scale is {scale}"
                )
            account = self._by_id.get(settlement.account_id)
            if account is not None and account.adaptor != adaptor:
                raise InvalidArgument(
                    f"account {settlement.account_id} is settled by {account.adaptor}, "
                    f"not {adaptor}"
                )
            await self._engine.receive_settlement(
                settlement.settlement_id, settlement.account_id, amount
            )
        except (AmountError, InvalidArgument) as exc:
            log.error("adaptor %s reported a malformed incoming settlement: %s", adaptor, exc)
        except NotFound:
            raise
        except EngineError as exc:
            log.error("incoming settlement %s refused: %s", settlement.settlement_id, exc)

    def clearing(self) -> EngineClearing:
        """The connector's ClearingPort: the engine's clearing balances."""
        return EngineClearing(self._engine)

    def settlement_messages(self) -> SettlementMessages:
        """The connector's SettlementMessagesPort: peer.settle messages to our adaptors."""
        return SettlementMessages(self._by_id, self._channels)


class EngineClearing:
    """The engine as the connector's ClearingPort; an account the engine does not have yet
    (its adaptor has not started) is :class:`AccountNotReady`, a T00 for the packet."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def check_credit(self, account_id: str, delta: int) -> bool:
        try:
            return await self._engine.check_credit(account_id, delta)
        except NotFound:
            raise AccountNotReady(
                f"account {account_id} is not ready yet (its settlement adaptor has not "
                "started); try again later"
            ) from None

    async def apply_balance_change(self, account_id: str, delta: int, idempotency_key: str) -> int:
        return await self._engine.apply_balance_change(account_id, delta, idempotency_key)

    # The in-flight journal (host.connector.ports.ClearingJournal): in the engine's store, so
    # that a packet's resolution commits with its balance changes.

    async def journal_packet(self, packet: InFlight) -> None:
        await self._engine.journal_packet(packet)

    async def resolve_packet(
        self,
        packet: InFlight,
        resolution: Resolution,
        fulfillment: bytes,
        changes: Sequence[BalanceChange],
    ) -> Resolution:
        return await self._engine.resolve_packet(packet, resolution, fulfillment, changes)

    async def unresolved_packets(self) -> list[InFlight]:
        return await self._engine.unresolved_packets()

    async def packet_outcome(self, source: str, source_id: bytes) -> Outcome:
        return await self._engine.packet_outcome(source, source_id)


class SettlementMessages:
    """peer.settle messages from a peer's engine, delivered to the account's adaptor."""

    def __init__(
        self, accounts: dict[str, AccountSpec], channels: dict[str, grpc.aio.Channel]
    ) -> None:
        self._accounts = accounts
        self._channels = channels

    async def receive(self, account_id: str, data: bytes) -> bytes:
        account = self._accounts.get(account_id)
        if account is None:
            raise MessageRefused(f"no account {account_id} on this host")
        channel = self._channels.get(account.adaptor)
        if channel is None:
            raise MessageRefused(f"adaptor {account.adaptor} is not serving", code="T00")
        stub = adaptor_pb2_grpc.LedgerAdaptorStub(channel)
        try:
            reply = await stub.ReceiveData(
                adaptor_pb2.ReceiveDataRequest(account_id=account_id, data=data),
                timeout=CALL_DEADLINE,
            )
        except grpc.aio.AioRpcError as exc:
            transient = exc.code() in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
            )
            raise MessageRefused(
                f"adaptor {account.adaptor}: {exc.code().name}: {exc.details()}",
                code="T00" if transient else "F99",
            ) from exc
        return reply.data


class EngineServicer(engine_pb2_grpc.EngineServicer):
    """ilphost.engine.v1.Engine, served to the adaptors on a private socket."""

    def __init__(self, accounts: Sequence[AccountSpec], messenger: PeerMessenger | None) -> None:
        self._accounts = {account.id for account in accounts}
        self._messenger = messenger

    async def SendData(
        self, request: engine_pb2.SendDataRequest, context: Context
    ) -> engine_pb2.SendDataResponse:
        if request.account_id not in self._accounts:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"no account {request.account_id!r} on this host"
            )
        if len(request.data) > MAX_DATA_BYTES:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"data is {len(request.data)} bytes, at most {MAX_DATA_BYTES} allowed",
            )
        if self._messenger is None:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "this host has no connector: no peer link to carry the message",
            )
        assert self._messenger is not None
        try:
            reply = await self._messenger.send_settlement_message(request.account_id, request.data)
        except (UnknownPeer, PeerUnreachable, PeerRefused) as exc:
            await context.abort(grpc.StatusCode[STATUS_OF_ERROR[type(exc)]], str(exc))
        return engine_pb2.SendDataResponse(data=reply)
