"""ethereum: a ledger adaptor for Ethereum JSON-RPC nodes, settling in ETH or one ERC-20 token.

Run by the host as ``python adaptors/ethereum/adaptor.py``; configured by environment variables
(eth_config.py, README.md). How the contract maps onto the chain:

- SendMoney: one EIP-1559 transaction per idempotency key, signed and stored before it is
  broadcast (eth_payer.py); COMPLETED once it has ``confirmations`` blocks; a revert is FAILED
  with its reason (FAILED_PRECONDITION, nothing paid; a retry of the key may try again).
- Incoming: confirmed payments to our address from a known peer's address (eth_follower.py),
  re-delivered until ReceiveMoney.
- Peers exchange settlement accounts (address, chain id, token) over Engine.SendData as
  ilphost.ethereum.v1 messages (eth_peering.py); a mismatch refuses the account.
- The node link is the ``ledger`` connection: READY while the node answers, TRANSIENT_FAILURE
  with the error while it does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final, NoReturn

import eth_peering
import grpc
from eth_chain import (
    TRANSFER_GAS,
    balance_of_call,
    decimals_call,
    decode_string,
    decode_uint,
    spendable,
    symbol_call,
)
from eth_config import ENV_STATE_DB, Config, ConfigError
from eth_follower import Follower
from eth_payer import Asset, Chain, Payer, Refusal, wait_final
from eth_rpc import JsonRpc, NodeUnavailable, RpcError
from eth_state import COMPLETED, FAILED, Acknowledgement, EthState, Incoming

import sdk
from sdk.amount import AmountError, unsigned_of
from sdk.backoff import backoff_delay
from sdk.connectivity import Connectivity
from sdk.contract import ACCOUNT_ID, ACCOUNT_ID_RULE, IDEMPOTENCY_KEY, IDEMPOTENCY_KEY_RULE
from sdk.pb.ilphost.adaptor.v1 import adaptor_pb2
from sdk.pb.ilphost.engine.v1 import engine_pb2
from sdk.pb.ilphost.types.v1 import types_pb2

NAME: Final = "ethereum"
VERSION: Final = "0.1.0"
CAPABILITIES: Final = ("send_money", "receive_money", "data", "balance", "accounts")
#: In ETH, gas is paid from the settled balance: a payment lowers GetBalance by more than its
#: amount (the contract's capability "fees").
ETH_CAPABILITIES: Final = (*CAPABILITIES, "fees")
LEDGER: Final = "ledger"
EXCHANGE_TIMEOUT: Final = 10.0
#: Seconds between looks at the chain while the node announces new blocks: polling is then only
#: the fallback, and at ILP_ETHEREUM_POLL_INTERVAL two adaptors' polls cost a loaded machine
#: more than they find.
ANNOUNCED_POLL_INTERVAL: Final = 1.0


def _delay(attempt: int, first: float, cap: float) -> float:
    """Capped exponential backoff with ±20 % jitter: ``2 * first`` after the first failure."""
    return backoff_delay(attempt, initial=2 * first, multiplier=2, cap=cap, jitter=0.2)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return f"{type(exc).__name__}: {exc}"


class EthereumAdaptor(sdk.Adaptor):
    """The LedgerAdaptor contract over one Ethereum address."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self._environ = os.environ if environ is None else environ
        self._hub = sdk.EventHub()
        self._connections = sdk.Connections(self._hub)
        self._connections.add(LEDGER, "settlement-system", Connectivity.CONNECTING)
        self._asset: Asset | None = None
        self._chain_id: int | None = None
        self._payer: Payer | None = None
        self._exchanges: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._resources = contextlib.AsyncExitStack()
        #: Set when the node announces a block (ILP_ETHEREUM_WS_URL): look at once.
        self._new_block = asyncio.Event()
        #: The payer's headroom being read, if it is (see _read_headroom).
        self._headroom_reading: asyncio.Task[None] | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Read the configuration and the state; connect to the node in the background."""
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
            self._state = EthState(self._config.state_db)
        except (sqlite3.Error, RuntimeError) as exc:
            raise ConfigError(f"{ENV_STATE_DB}={self._config.state_db!r}: {exc}") from exc
        self._resources.callback(self._state.close)
        self._rpc = JsonRpc(self._config.rpc_url)
        self._resources.push_async_callback(self._rpc.close)
        self._chain = Chain(self._rpc, self._config)
        known = self._state.get_meta("asset")
        if known is not None:
            code, scale, token = known.split("|")
            self._asset = Asset(code, int(scale), token or None)
            self._chain_id = int(self._state.get_meta("chain_id") or 0) or None
        for incoming in self._state.unacknowledged():
            self._report(incoming)
        self.log.info(
            "ethereum adaptor",
            address=self._config.address,
            asset=self._config.token or "ETH",
            node=self._config.rpc_url,
            confirmations=self._config.confirmations or "finalized",
        )
        self._spawn(self._follow_node())
        if self._config.ws_url is not None:
            self._spawn(self._watch_new_blocks(self._config.ws_url))
        for account_id in self._state.accounts_awaiting_exchange():
            self._start_exchange(account_id)

    async def stop(self) -> None:
        self._hub.close()
        tasks = [*self._tasks, *self._exchanges.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._resources.aclose()

    def _spawn(self, work: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- the node ---------------------------------------------------------------------------------

    async def _follow_node(self) -> None:
        """Keep the node link up, follow confirmed blocks, move unfinished payments on."""
        attempt = 0
        while True:
            try:
                await self._connect()
                self._connections.move(LEDGER, Connectivity.READY)
                self.log.info("node ready", node=self._config.rpc_url, chain_id=self._chain_id)
                attempt = 0
                # The height is asked unless a block was just announced, or the last step
                # read it (it stopped short): then the step checks it with the blocks it reads.
                ask_height = True
                while True:
                    more = await self._follower.step(ask_height)
                    await self._move_payments()
                    ask_height = not more
                    if not more:
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(self._poll_interval()):
                                await self._new_block.wait()
                                ask_height = False
                        self._new_block.clear()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = _reason(exc)
                if not isinstance(exc, (NodeUnavailable, RpcError, LookupError)):
                    self.log.exception("node link failed", error=error)
            attempt += 1
            state = self._connections.move(LEDGER, Connectivity.TRANSIENT_FAILURE, error)
            delay = _delay(attempt, 0.1, 2.0)
            self.log.warn(
                "node unreachable", error=error, attempts=state.attempts, retry_in=round(delay, 2)
            )
            await asyncio.sleep(delay)
            self._connections.move(LEDGER, Connectivity.CONNECTING)

    def _poll_interval(self) -> float:
        if self._chain.head is not None:
            return max(self._config.poll_interval, ANNOUNCED_POLL_INTERVAL)
        return self._config.poll_interval

    async def _watch_new_blocks(self, ws_url: str) -> None:
        """Wake the follower on every block the node announces; polling covers the gaps."""
        attempt = 0
        while True:
            try:
                async for header in self._rpc.new_heads(ws_url):
                    attempt = 0
                    self._chain.announce(header)
                    self._new_block.set()
                    self._read_headroom()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if attempt == 0:
                    self.log.warn("new-block subscription lost; polling", error=_reason(exc))
            self._chain.head = None  # not announced any more: payments ask the node
            attempt += 1
            await asyncio.sleep(_delay(attempt, 0.2, 5.0))

    def _read_headroom(self) -> None:
        """Read the payer's headroom at the announced block, in the background, one reading
        at a time, when it is due (see Payer.headroom_due)."""
        payer = self._payer
        if payer is None or self._headroom_reading is not None or not payer.headroom_due():
            return
        task = self._spawn(payer.read_headroom())

        def done(finished: asyncio.Task[None]) -> None:
            self._headroom_reading = None
            if not finished.cancelled():
                finished.exception()  # an unreachable node is the node link's loop to report

        task.add_done_callback(done)
        self._headroom_reading = task

    async def _connect(self) -> None:
        """Check the chain and the asset against the configuration and the state."""
        chain_id = await self._rpc.chain_id()
        expected = self._config.chain_id or self._chain_id
        if expected is not None and chain_id != expected:
            raise RpcError(
                "eth_chainId",
                0,
                f"the node is on chain {chain_id}, this adaptor settles on chain {expected}",
                None,
            )
        asset = await self._read_asset()
        if self._asset is not None and asset != self._asset:
            raise RpcError("asset", 0, f"the asset changed from {self._asset} to {asset}", None)
        self._state.set_meta("chain_id", str(chain_id))
        self._state.set_meta("asset", f"{asset.code}|{asset.scale}|{asset.token or ''}")
        self._chain_id, self._asset = chain_id, asset
        if self._payer is None:
            self._payer = Payer(self._chain, self._state, asset, chain_id, self.log)
            self._follower = Follower(
                self._chain,
                self._state,
                self._config.address,
                asset.token,
                self._report,
                self.log,
            )
        await self._payer.sync_nonce()

    async def _read_asset(self) -> Asset:
        token = self._config.token
        if token is None:
            return Asset("ETH", 18, None)
        if await self._rpc.call("eth_getCode", token, "latest") in (None, "0x"):
            raise RpcError("eth_getCode", 0, f"no contract at {token} (ILP_ETHEREUM_TOKEN)", None)
        decimals = decode_uint(await self._rpc.eth_call({"to": token, "data": decimals_call()}))
        try:
            symbol = decode_string(await self._rpc.eth_call({"to": token, "data": symbol_call()}))
        except (RpcError, ValueError):
            symbol = "ERC20"
        return Asset(symbol or "ERC20", decimals, token)

    async def _move_payments(self) -> None:
        assert self._payer is not None
        for payment in self._state.unfinished_payments():
            await self._payer.progress(payment.key)

    def _report(self, incoming: Incoming) -> None:
        assert self._asset is not None
        self._hub.report_incoming(
            sdk.Incoming(
                incoming.settlement_id, incoming.account_id, incoming.amount, self._asset.scale
            )
        )

    # -- exchanging settlement accounts -----------------------------------------------------------

    def _ours(self) -> eth_peering.SettlementAccount | None:
        if self._chain_id is None or self._asset is None:
            return None
        return eth_peering.SettlementAccount(
            self._chain_id, self._config.address, self._asset.token
        )

    def _check_peer(self, account_id: str, theirs: eth_peering.SettlementAccount) -> str | None:
        """Why the peer's account is refused (recorded), or None; learns it otherwise."""
        ours = self._ours()
        assert ours is not None
        problem = eth_peering.disagreement(ours, theirs)
        pinned = self._config.pinned_peers.get(account_id)
        if problem is None and pinned is not None and pinned != theirs.address:
            problem = (
                f"address mismatch: the peer says {theirs.address}, the configuration pins "
                f"{pinned} for {account_id}"
            )
        if problem is not None:
            self._state.refuse_peer(account_id, problem)
            self.log.warn("peer refused", account=account_id, reason=problem)
            return problem
        if self._state.peer(account_id)[0] != theirs.address:
            self.log.info("peer address known", account=account_id, address=theirs.address)
        for incoming in self._state.learn_peer(account_id, theirs.address):
            self._report(incoming)
        return None

    async def _exchange(self, account_id: str) -> str | None:
        """Send our settlement account; learn theirs from the reply. The refusal, or None."""
        ours = self._ours()
        if ours is None:
            raise NodeUnavailable("the node has not answered yet: chain id unknown")
        answer = await self._engine.SendData(
            engine_pb2.SendDataRequest(account_id=account_id, data=eth_peering.request(ours)),
            timeout=EXCHANGE_TIMEOUT,
        )
        return self._check_peer(account_id, eth_peering.parse_reply(answer.data))

    def _start_exchange(self, account_id: str) -> None:
        if account_id not in self._exchanges:
            self._exchanges[account_id] = self._spawn(self._keep_exchanging(account_id))

    async def _keep_exchanging(self, account_id: str) -> None:
        attempt = 0
        try:
            while self._state.has_account(account_id):
                address, refused = self._state.peer(account_id)
                if address is not None or refused is not None:
                    return
                attempt += 1
                await asyncio.sleep(_delay(attempt, 0.25, 5.0))
                try:
                    await self._exchange(account_id)
                    return
                except Exception as exc:
                    self.log.warn(
                        "settlement account exchange failed", account=account_id, error=_reason(exc)
                    )
        finally:
            if self._exchanges.get(account_id) is asyncio.current_task():
                del self._exchanges[account_id]

    # -- RPCs -------------------------------------------------------------------------------------

    async def _refuse(self, context: sdk.Context, code: grpc.StatusCode, message: str) -> NoReturn:
        await context.abort(code, message)

    async def _account_id(self, context: sdk.Context, value: str) -> str:
        if not ACCOUNT_ID.fullmatch(value):
            await self._refuse(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"account_id must be {ACCOUNT_ID_RULE}, got {value[:40]!r}",
            )
        return value

    async def _known_asset(self, context: sdk.Context) -> Asset:
        if self._asset is None:
            await self._refuse(
                context,
                grpc.StatusCode.UNAVAILABLE,
                "the node has not answered yet, so the asset is not known; retry",
            )
        return self._asset

    async def GetInfo(
        self, request: adaptor_pb2.GetInfoRequest, context: sdk.Context
    ) -> adaptor_pb2.GetInfoResponse:
        asset = await self._known_asset(context)
        return adaptor_pb2.GetInfoResponse(
            name=NAME,
            version=VERSION,
            ledger="ethereum",
            asset_code=asset.code,
            asset_scale=asset.scale,
            capabilities=CAPABILITIES if asset.token else ETH_CAPABILITIES,
            contract_versions=self.contract_versions,
        )

    async def Probe(
        self, request: adaptor_pb2.ProbeRequest, context: sdk.Context
    ) -> adaptor_pb2.ProbeResponse:
        return self._connections.probe()

    async def SetupAccount(
        self, request: adaptor_pb2.SetupAccountRequest, context: sdk.Context
    ) -> adaptor_pb2.SetupAccountResponse:
        """Record the account; exchange settlement accounts with the peer (now or later)."""
        account_id = await self._account_id(context, request.account_id)
        pinned_address = self._config.pinned_peers.get(account_id)
        self._state.add_account(account_id, pinned_address)
        if pinned_address is not None and self._asset is not None:
            for incoming in self._state.learn_peer(account_id, pinned_address):
                self._report(incoming)
        address, refused = self._state.peer(account_id)
        pinned = account_id in self._config.pinned_peers
        # Asked again after a refusal (the configuration may have been fixed): exchange again.
        if address is None or refused is not None or pinned:
            try:
                refused = await self._exchange(account_id)
            except Exception as exc:
                self.log.warn(
                    "settlement account exchange failed", account=account_id, error=_reason(exc)
                )
                # Transient (the contract: a peer not up yet answers FAILED_PRECONDITION or
                # UNAVAILABLE): OK now, the exchange goes on in the background. A refusal
                # recorded earlier stands until an exchange succeeds.
                if pinned:
                    refused = None  # the configuration says where to pay
                else:
                    self._start_exchange(account_id)
            if refused is not None:
                await self._refuse(context, grpc.StatusCode.FAILED_PRECONDITION, refused)
        return adaptor_pb2.SetupAccountResponse()

    async def DeleteAccount(
        self, request: adaptor_pb2.DeleteAccountRequest, context: sdk.Context
    ) -> adaptor_pb2.DeleteAccountResponse:
        account_id = await self._account_id(context, request.account_id)
        self._state.delete_account(account_id)
        task = self._exchanges.pop(account_id, None)
        if task is not None:
            task.cancel()
        return adaptor_pb2.DeleteAccountResponse()

    async def ReceiveData(
        self, request: adaptor_pb2.ReceiveDataRequest, context: sdk.Context
    ) -> adaptor_pb2.ReceiveDataResponse:
        """Learn the peer's settlement account; reply with ours, or refuse a mismatch."""
        account_id = await self._account_id(context, request.account_id)
        try:
            theirs = eth_peering.parse_request(request.data)
        except ValueError as exc:
            await self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if not self._state.has_account(account_id):
            await self._refuse(
                context, grpc.StatusCode.NOT_FOUND, f"account {account_id!r} is not set up"
            )
        ours = self._ours()
        if ours is None:
            await self._refuse(
                context,
                grpc.StatusCode.UNAVAILABLE,
                "the node has not answered yet: chain id unknown; retry",
            )
        # A mismatch refuses the account here (recorded); the reply still says where we settle,
        # so that the peer's adaptor finds the mismatch too and refuses it on its side.
        self._check_peer(account_id, theirs)
        task = self._exchanges.pop(account_id, None)
        if task is not None:
            task.cancel()
        return adaptor_pb2.ReceiveDataResponse(data=eth_peering.reply(ours))

    async def SendMoney(
        self, request: adaptor_pb2.SendMoneyRequest, context: sdk.Context
    ) -> adaptor_pb2.SendMoneyResponse:
        """Pay once per key; wait up to ILP_ETHEREUM_SEND_WAIT for the confirmations."""
        account_id = await self._account_id(context, request.account_id)
        key = request.idempotency_key
        if not IDEMPOTENCY_KEY.fullmatch(key):
            await self._refuse(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"idempotency_key must be {IDEMPOTENCY_KEY_RULE}, got {key[:40]!r}",
            )
        try:
            amount = unsigned_of(request.amount, "amount")
        except AmountError as exc:
            await self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        asset = await self._known_asset(context)
        if request.amount.scale != asset.scale or amount == 0 or amount >= 2**256:
            await self._refuse(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"amount must be greater than zero at the ledger's scale {asset.scale}, "
                f"got {request.amount.value} at scale {request.amount.scale}",
            )
        if not self._state.has_account(account_id):
            await self._refuse(
                context, grpc.StatusCode.NOT_FOUND, f"account {account_id!r} is not set up"
            )
        existing = self._state.payment(key)
        if existing is not None and (existing.account_id, existing.amount) != (account_id, amount):
            await self._refuse(
                context,
                grpc.StatusCode.ALREADY_EXISTS,
                f"idempotency_key {key!r} was already used for another account or amount",
            )
        payee, refused = self._state.peer(account_id)
        if existing is None or existing.status == FAILED:
            if refused is not None:
                await self._refuse(context, grpc.StatusCode.FAILED_PRECONDITION, refused)
            if payee is None:
                self._start_exchange(account_id)
                await self._refuse(
                    context,
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"the peer's address for {account_id!r} is not known yet; retry later",
                )
        payer = self._payer
        if payer is None:
            await self._refuse(
                context,
                grpc.StatusCode.UNAVAILABLE,
                "the node has not answered yet; retry with the same key",
            )
        try:
            if existing is None or existing.status == FAILED:
                if existing is not None and existing.status == FAILED:
                    # The engine was told; asking again means: try again.
                    self.log.info(
                        "settlement retried after a failure", key=key, previous=existing.reason
                    )
                await payer.pay(key, account_id, amount, payee or "")
            payment = await wait_final(
                payer, key, self._config.send_wait, self._config.poll_interval, context.done
            )
        except Refusal as refusal:
            await self._refuse(context, refusal.code, refusal.message)
        except (NodeUnavailable, RpcError) as exc:
            await self._refuse(
                context,
                grpc.StatusCode.UNAVAILABLE,
                f"the node did not answer ({exc}); any signed transaction is stored and will be "
                "broadcast: retry with the same key",
            )
        if payment.status == FAILED:
            await self._refuse(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                f"the settlement transaction failed and paid nothing: {payment.reason}",
            )
        if payment.status == COMPLETED:
            assert payment.settlement_id is not None
            return adaptor_pb2.SendMoneyResponse(
                settlement_id=payment.settlement_id,
                status=adaptor_pb2.SETTLEMENT_STATUS_COMPLETED,
            )
        newest = self._state.attempts(key, payment.nonce)[-1]
        return adaptor_pb2.SendMoneyResponse(
            settlement_id=newest.tx_hash, status=adaptor_pb2.SETTLEMENT_STATUS_PENDING
        )

    async def ReceiveMoney(
        self, request: adaptor_pb2.ReceiveMoneyRequest, context: sdk.Context
    ) -> adaptor_pb2.ReceiveMoneyResponse:
        settlement_id = request.settlement_id
        if not settlement_id:
            await self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, "settlement_id is empty")
        if self._state.acknowledge(settlement_id) == Acknowledgement.UNKNOWN:
            await self._refuse(
                context,
                grpc.StatusCode.NOT_FOUND,
                f"no incoming settlement {settlement_id[:200]!r} was reported",
            )
        with contextlib.suppress(sdk.UnknownSettlement):
            self._hub.settlements.acknowledge(settlement_id)
        return adaptor_pb2.ReceiveMoneyResponse()

    async def GetBalance(
        self, request: adaptor_pb2.GetBalanceRequest, context: sdk.Context
    ) -> adaptor_pb2.GetBalanceResponse:
        """What the address can pay out: in ETH, its balance with the transactions the node
        has pending, less the most one transfer may spend on gas at today's fees (the rule
        SendMoney refuses by); in a token, its token balance (gas is paid in ETH)."""
        asset = await self._known_asset(context)
        try:
            if asset.token is None:
                held, fees = await asyncio.gather(
                    self._rpc.balance(self._config.address, "pending"), self._chain.fees()
                )
                balance = spendable(held, TRANSFER_GAS, fees.max_fee)
            else:
                balance = decode_uint(
                    await self._rpc.eth_call(
                        {"to": asset.token, "data": balance_of_call(self._config.address)}
                    )
                )
        except (NodeUnavailable, RpcError, ValueError) as exc:
            await self._refuse(context, grpc.StatusCode.UNAVAILABLE, f"the node: {exc}")
        return adaptor_pb2.GetBalanceResponse(
            balance=types_pb2.Amount(value=str(balance), scale=asset.scale)
        )

    async def WatchEvents(
        self, request: adaptor_pb2.WatchEventsRequest, context: sdk.Context
    ) -> AsyncIterator[adaptor_pb2.WatchEventsResponse]:
        async for event in self._hub.watch(context):
            yield event


if __name__ == "__main__":
    sdk.serve(EthereumAdaptor())
