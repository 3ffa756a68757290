"""simledger-python: the reference ledger adaptor for the simulated ledger (host.simledger).

Run by the host as ``python adaptors/simledger-python/adaptor.py`` with:

- ``ILP_SIMLEDGER_ADDR``: the ledger's gRPC target ("unix:/path" or "host:port");
- ``ILP_SIMLEDGER_ACCOUNT``: this side's ledger account (created at start, idempotently);
- ``ILP_ADAPTOR_STATE_DB``: the adaptor's own SQLite file (see adaptor_state.py);
- ``ILP_HOST_ENGINE_ADDR``: the host's Engine service (set by the host).

How it maps the contract onto the ledger:

- Peers exchange ledger accounts with the protobuf peer messages of host.simledger.peer_messages: a
  PeerRequest (ledger_account_exchange: the sender's ledger account) carried by
  Engine.SendData, answered by a PeerReply naming the receiver's. SetupAccount sends it (and
  keeps retrying in the background while the peer cannot be reached); ReceiveData answers it.
- SendMoney is one ledger Transfer whose id is "<our ledger account>:<idempotency key>": stable
  across restarts, so the ledger's own idempotency makes a retried key pay once.
- Incoming settlements are the ledger's transfers into our account (WatchTransfers from a
  persisted cursor) whose payer is a known peer; the others wait until the payer is known.
- The "ledger" connection is CONNECTING at start, READY while the ledger answers and the watch
  stream is open, TRANSIENT_FAILURE (with the error and attempts) while it does not; the
  adaptor reconnects with capped, jittered backoff and serves (handshake) even while the
  ledger is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import grpc
from adaptor_state import Acknowledgement, AdaptorState, Incoming

import sdk
from host.pb.ilphost.simledger.v1 import simledger_pb2, simledger_pb2_grpc
from host.simledger import peer_messages as simledger
from sdk import amount, failpoints
from sdk.backoff import backoff_delay
from sdk.connectivity import Connectivity
from sdk.pb.ilphost.engine.v1 import engine_pb2
from sdk.pb.ilphost.types.v1 import types_pb2

NAME: Final = "simledger-python"
VERSION: Final = "0.1.0"
CAPABILITIES: Final = ("send_money", "receive_money", "data", "balance", "accounts")
LEDGER: Final = "ledger"

ENV_LEDGER_ADDR: Final = "ILP_SIMLEDGER_ADDR"
ENV_LEDGER_ACCOUNT: Final = "ILP_SIMLEDGER_ACCOUNT"
ENV_STATE_DB: Final = "ILP_ADAPTOR_STATE_DB"


#: Seconds a ledger call may take; a Transfer longer (latency faults) is "outcome unknown".
LEDGER_TIMEOUT: Final = 10.0
TRANSFER_TIMEOUT: Final = 60.0
EXCHANGE_TIMEOUT: Final = 10.0
#: gRPC's own reconnect backoff grows to two minutes; a ledger that comes back must be seen soon.
CHANNEL_OPTIONS: Final = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
)
# What "outcome unknown, retry" looks like from the ledger.
_RETRYABLE: Final = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


class ConfigError(sdk.LaunchError):
    """The environment does not describe a usable adaptor; the message says what to set.

    A LaunchError, so that serve() prints the message and exits 1 before the handshake.
    """


@dataclass(frozen=True)
class Config:
    """Where the ledger is, which account is ours, where our state lives."""

    ledger_target: str
    ledger_account: str
    state_db: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Config:
        """Read the configuration; ConfigError naming every missing or malformed variable."""
        missing = [
            name
            for name in (ENV_LEDGER_ADDR, ENV_LEDGER_ACCOUNT, ENV_STATE_DB)
            if not environ.get(name)
        ]
        if missing:
            raise ConfigError(f"{NAME} needs the environment variable(s) {', '.join(missing)}")
        account = environ[ENV_LEDGER_ACCOUNT]
        if not simledger.is_ledger_account(account):
            raise ConfigError(
                f"{ENV_LEDGER_ACCOUNT} must be {simledger.LEDGER_ACCOUNT_RULE}, "
                f"got {account[:40]!r}"
            )
        return cls(environ[ENV_LEDGER_ADDR], account, environ[ENV_STATE_DB])


class Backoff:
    """The SDK's capped exponential backoff (each delay within ±20 % of the nominal one),
    counting its own attempts."""

    def __init__(self, first: float, cap: float, rng: random.Random | None = None) -> None:
        self._first, self._cap = first, cap
        self._attempt = 0
        self._rng = rng or random.Random()

    def delay(self) -> float:
        """The next delay in seconds."""
        self._attempt += 1
        return backoff_delay(
            self._attempt,
            initial=self._first,
            multiplier=2,
            cap=self._cap,
            jitter=0.2,
            random=self._rng.random,
        )

    def reset(self) -> None:
        """Start again from the first delay (after a success)."""
        self._attempt = 0


def _describe(exc: grpc.aio.AioRpcError) -> str:
    return f"{exc.code().name}: {exc.details()}"


def _reason(exc: Exception) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return _describe(exc)
    return f"{type(exc).__name__}: {exc}"


class SimLedgerAdaptor(sdk.LedgerAdaptor):
    """The LedgerAdaptor contract over one account of the simulated ledger."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self._environ = os.environ if environ is None else environ
        self.connections.add(LEDGER, "settlement-system", Connectivity.CONNECTING)
        self._asset: tuple[str, int] | None = None
        self._exchanges: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._resources = contextlib.AsyncExitStack()

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the state, re-arm what it remembers, and connect in the background.

        Returns without waiting for the ledger: the adaptor serves (and reports the ledger
        connection's state) even while the ledger is down.
        """
        try:
            await self._open()
        except BaseException:
            await self._resources.aclose()
            raise

    async def _open(self) -> None:
        self._config = Config.from_env(self._environ)
        try:
            _, self._engine = await self._resources.enter_async_context(sdk.connect_engine())
        except sdk.EngineNotConfigured as exc:
            raise ConfigError(str(exc)) from exc
        try:
            self._state = AdaptorState(self._config.state_db)
        except (sqlite3.Error, RuntimeError) as exc:
            raise ConfigError(f"{ENV_STATE_DB}={self._config.state_db!r}: {exc}") from exc
        self._resources.callback(self._state.close)
        payments = sdk.SqlitePaymentStore(self._config.state_db)
        self._resources.callback(payments.close)
        self._payments = sdk.Payments(payments)
        code, scale = self._state.get_meta("asset_code"), self._state.get_meta("asset_scale")
        if code is not None and scale is not None:
            self._asset = (code, int(scale))
        channel = grpc.aio.insecure_channel(self._config.ledger_target, options=CHANNEL_OPTIONS)
        self._resources.push_async_callback(channel.close, None)
        self._ledger = simledger_pb2_grpc.SimLedgerStub(channel)
        # A restart re-delivers exactly what the host has not acknowledged.
        for incoming in self._state.unacknowledged():
            self._report(incoming)
        self._spawn(self._follow_ledger())
        for account_id in self._state.accounts_awaiting_exchange():
            self._start_exchange(account_id)

    async def stop(self) -> None:
        """Stop the background work, report the ledger connection SHUTDOWN, end the event
        streams, close the ledger and the state."""
        tasks = [*self._tasks, *self._exchanges.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.connections.move(LEDGER, Connectivity.SHUTDOWN)
        self.events.close()
        await self._resources.aclose()

    def _spawn(self, work: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- the ledger connection ----------------------------------------------------------------

    async def _follow_ledger(self) -> None:
        """Keep the ledger connection up and the incoming transfers flowing, for ever."""
        backoff = Backoff(first=0.1, cap=2.0)
        while True:
            try:
                await self._connect_ledger()
                self.connections.move(LEDGER, Connectivity.READY)
                self.log.info("ledger ready", ledger=self._config.ledger_target)
                backoff.reset()
                await self._watch_incoming()
                error = "the ledger ended the transfer stream"
            except Exception as exc:
                # Whatever went wrong (a bug included), the link must not die silently.
                error = _reason(exc)
                if not isinstance(exc, grpc.aio.AioRpcError):
                    self.log.exception("ledger link failed", error=error)
            state = self.connections.move(LEDGER, Connectivity.TRANSIENT_FAILURE, error)
            delay = backoff.delay()
            self.log.warn(
                "ledger unreachable", error=error, attempts=state.attempts, retry_in=round(delay, 2)
            )
            await asyncio.sleep(delay)
            self.connections.move(LEDGER, Connectivity.CONNECTING)

    async def _connect_ledger(self) -> None:
        info = await self._ledger.GetLedgerInfo(
            simledger_pb2.GetLedgerInfoRequest(), timeout=LEDGER_TIMEOUT
        )
        asset = (info.asset_code, info.asset_scale)
        if asset != self._asset:
            if self._asset is not None:
                self.log.warn("the ledger's asset changed", was=self._asset, now=asset)
            self._state.set_meta("asset_code", asset[0])
            self._state.set_meta("asset_scale", str(asset[1]))
            self._asset = asset
        await self._ledger.CreateAccount(
            simledger_pb2.CreateAccountRequest(account_id=self._config.ledger_account),
            timeout=LEDGER_TIMEOUT,
        )

    async def _watch_incoming(self) -> None:
        """Record every transfer into our account from the cursor on; returns if the stream ends."""
        stream = self._ledger.WatchTransfers(
            simledger_pb2.WatchTransfersRequest(
                account_id=self._config.ledger_account, after_sequence=self._state.watch_cursor()
            )
        )
        try:
            async for reply in stream:
                transfer = reply.transfer
                incoming = self._state.record_incoming(
                    transfer.transfer_id,
                    transfer.sequence,
                    transfer.from_account_id,
                    int(transfer.amount.value),
                )
                if incoming is not None:
                    self._report(incoming)
        finally:
            stream.cancel()

    def _report(self, incoming: Incoming) -> None:
        assert self._asset is not None
        self.events.report_incoming(
            sdk.Incoming(
                incoming.settlement_id, incoming.account_id, incoming.amount, self._asset[1]
            )
        )

    # -- exchanging ledger accounts with the peer ----------------------------------------------

    async def _exchange(self, account_id: str) -> None:
        """Send our ledger account to the peer and learn theirs from the reply."""
        reply = await self._engine.SendData(
            engine_pb2.SendDataRequest(
                account_id=account_id,
                data=simledger.ledger_account_request(self._config.ledger_account),
            ),
            timeout=EXCHANGE_TIMEOUT,
        )
        peer = simledger.parse_ledger_account_reply(reply.data, self._config.ledger_account)
        self._learn(account_id, peer)

    def _learn(self, account_id: str, peer_ledger_account: str) -> None:
        if self._state.peer_ledger_account(account_id) != peer_ledger_account:
            self.log.info(
                "peer ledger account known", account=account_id, ledger_account=peer_ledger_account
            )
        for incoming in self._state.learn_peer_ledger_account(account_id, peer_ledger_account):
            self._report(incoming)
        task = self._exchanges.pop(account_id, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def _start_exchange(self, account_id: str) -> None:
        if account_id not in self._exchanges:
            self._exchanges[account_id] = self._spawn(self._keep_exchanging(account_id))

    async def _keep_exchanging(self, account_id: str) -> None:
        """Retry the exchange until the peer answers (or the account is deleted)."""
        backoff = Backoff(first=0.5, cap=5.0)
        try:
            while self._state.has_account(account_id):
                if self._state.peer_ledger_account(account_id) is not None:
                    return
                await asyncio.sleep(backoff.delay())
                try:
                    await self._exchange(account_id)
                    return
                except Exception as exc:
                    self.log.warn(
                        "ledger account exchange failed", account=account_id, error=_reason(exc)
                    )
        finally:
            if self._exchanges.get(account_id) is asyncio.current_task():
                del self._exchanges[account_id]

    # -- the contract (the SDK has checked every request) -------------------------------------

    def _known_asset(self) -> tuple[str, int]:
        if self._asset is None:
            raise sdk.Unavailable(
                "the ledger has not answered yet, so its asset is not known; retry"
            )
        return self._asset

    async def info(self) -> sdk.Info:
        """Name, ledger, asset (from the ledger), capabilities."""
        code, scale = self._known_asset()
        return sdk.Info(NAME, VERSION, "simledger", code, scale, CAPABILITIES)

    async def setup_account(self, account_id: str) -> None:
        """Record the account and exchange ledger accounts with the peer (now or later)."""
        self._state.add_account(account_id)
        if self._state.peer_ledger_account(account_id) is None:
            try:
                await self._exchange(account_id)
            except Exception as exc:
                self.log.warn(
                    "peer not reached; retrying in the background",
                    account=account_id,
                    error=_reason(exc),
                )
                self._start_exchange(account_id)

    async def delete_account(self, account_id: str) -> None:
        """Forget the account (its background exchange stops)."""
        self._state.delete_account(account_id)
        task = self._exchanges.pop(account_id, None)
        if task is not None:
            task.cancel()

    async def receive_data(self, message: sdk.PeerMessage) -> bytes:
        """Learn the peer's ledger account from its PeerRequest; reply with ours."""
        try:
            peer_ledger_account = simledger.parse_ledger_account_request(
                message.data, self._config.ledger_account
            )
        except simledger.PeerMessageError as exc:
            raise sdk.InvalidRequest(str(exc)) from exc
        if not self._state.has_account(message.account_id):
            raise sdk.NotFound(f"account {message.account_id!r} is not set up")
        self._learn(message.account_id, peer_ledger_account)
        return simledger.ledger_account_reply(self._config.ledger_account)

    async def send_money(self, request: sdk.SendMoney) -> sdk.Sent:
        """One ledger Transfer to the peer's ledger account, once per key."""
        failpoints.hit(failpoints.ADAPTOR_SEND_MONEY_RECEIVED)
        return await self._payments.once(request, self._transfer)

    async def _transfer(self, request: sdk.SendMoney) -> sdk.Sent:
        account_id = request.account_id
        if not self._state.has_account(account_id):
            raise sdk.NotFound(f"account {account_id!r} is not set up")
        payee = self._state.peer_ledger_account(account_id)
        if payee is None:
            self._start_exchange(account_id)
            raise sdk.Refused(
                f"the peer's ledger account for {account_id!r} is not known yet; retry later"
            )
        # Derived from the key alone: a retry after a lost answer or a restart is the same
        # transfer, which the ledger pays once.
        transfer_id = f"{self._config.ledger_account}:{request.idempotency_key}"
        try:
            await self._ledger.Transfer(
                simledger_pb2.TransferRequest(
                    transfer_id=transfer_id,
                    from_account_id=self._config.ledger_account,
                    to_account_id=payee,
                    amount=types_pb2.Amount(value=str(request.amount), scale=request.scale),
                    memo=self._config.ledger_account,
                ),
                timeout=TRANSFER_TIMEOUT,
            )
        except grpc.aio.AioRpcError as exc:
            raise _transfer_refusal(exc, payee) from exc
        failpoints.hit(failpoints.ADAPTOR_AFTER_TRANSFER)
        return sdk.Sent(settlement_id=transfer_id)

    async def receive_money(self, settlement_id: str) -> None:
        """Acknowledge an incoming settlement: persisted, then no longer re-delivered."""
        if self._state.acknowledge(settlement_id) == Acknowledgement.UNKNOWN:
            raise sdk.NotFound(f"no incoming settlement {settlement_id[:200]!r} was reported")
        # Settlements acknowledged before a restart are known to the state only.
        with contextlib.suppress(sdk.UnknownSettlement):
            self.events.settlements.acknowledge(settlement_id)

    async def get_balance(self) -> sdk.Balance:
        """The balance of our ledger account."""
        try:
            reply = await self._ledger.GetAccount(
                simledger_pb2.GetAccountRequest(account_id=self._config.ledger_account),
                timeout=LEDGER_TIMEOUT,
            )
        except grpc.aio.AioRpcError as exc:
            # NOT_FOUND: the account is created when the connection comes up.
            if exc.code() in _RETRYABLE or exc.code() == grpc.StatusCode.NOT_FOUND:
                raise sdk.Unavailable(f"the ledger: {_describe(exc)}") from exc
            raise sdk.AdaptorError(f"the ledger: {_describe(exc)}") from exc
        balance = reply.account.balance
        return sdk.Balance(amount.unsigned_of(balance, "the ledger's balance"), balance.scale)


def _transfer_refusal(exc: grpc.aio.AioRpcError, payee: str) -> sdk.AdaptorError:
    """What SendMoney answers when the ledger did not take the transfer."""
    code = exc.code()
    if code in _RETRYABLE:
        return sdk.Unavailable(
            f"the ledger did not confirm the transfer ({_describe(exc)}); retry with the same key"
        )
    if code == grpc.StatusCode.NOT_FOUND:
        return sdk.Refused(
            f"the ledger does not know an account in this transfer ({exc.details()}); "
            f"the peer's ledger account is {payee!r}"
        )
    refusal = {
        grpc.StatusCode.FAILED_PRECONDITION: sdk.Refused,
        grpc.StatusCode.ALREADY_EXISTS: sdk.Conflict,
        grpc.StatusCode.INVALID_ARGUMENT: sdk.InvalidRequest,
    }.get(code)
    if refusal is not None:
        return refusal(f"the ledger refused the transfer: {exc.details()}")
    return sdk.AdaptorError(f"unexpected answer from the ledger: {_describe(exc)}")


if __name__ == "__main__":
    sdk.serve(SimLedgerAdaptor())
