"""``LedgerAdaptor``: a ledger adaptor written as its ledger logic, in typed methods.

Subclass it and override what the ledger does::

    class MyAdaptor(sdk.LedgerAdaptor):
        async def info(self) -> sdk.Info: ...
        async def send_money(self, request: sdk.SendMoney) -> sdk.Sent: ...

The raw RPCs (``sdk.Adaptor``'s ``SendMoney(request, context)`` ...) are implemented here once:
each checks its request with ``sdk.requests`` (INVALID_ARGUMENT before the method runs, so a
malformed request changes nothing), calls the typed method, and turns an ``sdk.errors``
exception into its gRPC status (a caller's mistake, INVALID_ARGUMENT, NOT_FOUND or
ALREADY_EXISTS, also logs one WARNING line). Anything else a method raises is a bug: logged
with its traceback, answered INTERNAL. A method left alone answers UNIMPLEMENTED (the account
methods: OK, as the contract asks of an adaptor without the "accounts" capability).

Provided: ``self.events`` (an ``EventHub``: ``report_incoming`` feeds WatchEvents, and the default
``receive_money`` acknowledges there) and ``self.connections`` (``Connections`` on that hub:
Probe answers from it). A subclass may still override any raw RPC: it is an ``sdk.Adaptor``,
served by ``sdk.serve`` and ``sdk.testing`` as is.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TypeVar

import grpc

from sdk import amount, contract, requests
from sdk.adaptor import Adaptor, Context
from sdk.errors import AdaptorError, NotFound, Unimplemented
from sdk.events import Connections, EventHub, UnknownSettlement
from sdk.pb.ilphost.adaptor.v1 import adaptor_pb2
from sdk.requests import Balance, Info, PeerMessage, SendMoney, Sent

_T = TypeVar("_T")

#: Refusals that say the caller asked wrong: one WARNING line each (the others are the
#: ledger's state, which the ledger connection's state and the caller's retries report).
_CALLER_MISTAKES = frozenset(
    {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ALREADY_EXISTS}
)


class LedgerAdaptor(Adaptor, abc.ABC):
    """A ledger adaptor's logic in typed methods; see the module docstring."""

    def __init__(self, *, contract_versions: Iterable[int] | None = None) -> None:
        super().__init__(contract_versions=contract_versions)
        self.events = EventHub()
        self.connections = Connections(self.events)

    # --- what a subclass writes ----------------------------------------------------------------

    @abc.abstractmethod
    async def info(self) -> Info:
        """Name, ledger, asset and capabilities. Raise Unavailable while they are not known."""

    async def setup_account(self, account_id: str) -> None:
        """Prepare to settle with the peer behind ``account_id`` (checked); idempotent."""

    async def delete_account(self, account_id: str) -> None:
        """Forget ``account_id`` (checked); idempotent."""

    async def send_money(self, request: SendMoney) -> Sent:
        """Pay ``request.amount`` (> 0, at the ledger's scale) to the peer, once per key.

        ``sdk.Payments.once`` makes a payment function idempotent by key.
        """
        raise self._not_implemented("SendMoney")

    async def receive_money(self, settlement_id: str) -> None:
        """Acknowledge an incoming settlement; by default in ``self.events`` (NotFound if it
        was never reported there). Override to make acknowledgements durable."""
        try:
            self.events.settlements.acknowledge(settlement_id)
        except UnknownSettlement as exc:
            raise NotFound(str(exc)) from exc

    async def receive_data(self, message: PeerMessage) -> bytes:
        """Answer a message from the peer's adaptor; the reply bytes."""
        raise self._not_implemented("ReceiveData")

    async def get_balance(self) -> Balance:
        """The settlement account's liquidity, at the ledger's scale."""
        raise self._not_implemented("GetBalance")

    # --- the raw RPCs, in terms of the methods above -------------------------------------------

    def _not_implemented(self, rpc: str) -> Unimplemented:
        return Unimplemented(f"{type(self).__name__} does not implement LedgerAdaptor.{rpc}")

    async def _answer(self, rpc: str, context: Context, work: Callable[[], Awaitable[_T]]) -> _T:
        """``await work()``, with every refusal turned into its status (the one translation)."""
        try:
            return await work()
        except AdaptorError as exc:
            if exc.code in _CALLER_MISTAKES:
                self.log.warn(f"{rpc} refused", status=exc.code.name, reason=str(exc))
            elif exc.code == AdaptorError.code:
                self.log.error(f"{rpc} failed", reason=str(exc))
            await context.abort(exc.code, str(exc))
        except Exception as exc:
            self.log.exception(f"{rpc} failed")
            await context.abort(
                AdaptorError.code,
                f"{type(self).__name__} failed in {rpc} ({type(exc).__name__}); "
                "its log has the traceback",
            )

    async def GetInfo(
        self, request: adaptor_pb2.GetInfoRequest, context: Context
    ) -> adaptor_pb2.GetInfoResponse:
        info = await self._answer("GetInfo", context, self.info)
        return info.to_proto(self.contract_versions)

    async def Probe(
        self, request: adaptor_pb2.ProbeRequest, context: Context
    ) -> adaptor_pb2.ProbeResponse:
        return self.connections.probe()

    async def SetupAccount(
        self, request: adaptor_pb2.SetupAccountRequest, context: Context
    ) -> adaptor_pb2.SetupAccountResponse:
        async def work() -> None:
            await self.setup_account(requests.check_account_id(request.account_id))

        await self._answer("SetupAccount", context, work)
        return adaptor_pb2.SetupAccountResponse()

    async def DeleteAccount(
        self, request: adaptor_pb2.DeleteAccountRequest, context: Context
    ) -> adaptor_pb2.DeleteAccountResponse:
        async def work() -> None:
            await self.delete_account(requests.check_account_id(request.account_id))

        await self._answer("DeleteAccount", context, work)
        return adaptor_pb2.DeleteAccountResponse()

    async def SendMoney(
        self, request: adaptor_pb2.SendMoneyRequest, context: Context
    ) -> adaptor_pb2.SendMoneyResponse:
        async def work() -> Sent:
            self._require("send_money", "SendMoney")
            # What needs no ledger first: info() may be Unavailable while the ledger is down.
            requests.check_account_id(request.account_id)
            requests.check_idempotency_key(request.idempotency_key)
            amount.unsigned_of(request.amount)
            scale = (await self.info()).asset_scale
            return await self.send_money(SendMoney.from_proto(request, scale))

        return (await self._answer("SendMoney", context, work)).to_proto()

    async def ReceiveMoney(
        self, request: adaptor_pb2.ReceiveMoneyRequest, context: Context
    ) -> adaptor_pb2.ReceiveMoneyResponse:
        async def work() -> None:
            await self.receive_money(requests.check_acknowledged_id(request.settlement_id))

        await self._answer("ReceiveMoney", context, work)
        return adaptor_pb2.ReceiveMoneyResponse()

    async def ReceiveData(
        self, request: adaptor_pb2.ReceiveDataRequest, context: Context
    ) -> adaptor_pb2.ReceiveDataResponse:
        async def work() -> bytes:
            self._require("receive_data", "ReceiveData")
            reply = await self.receive_data(PeerMessage.from_proto(request))
            if len(reply) > contract.MAX_DATA_BYTES:
                raise AdaptorError(
                    f"{type(self).__name__}.receive_data replied {len(reply)} bytes, at most "
                    f"{contract.MAX_DATA_BYTES} fit in an ILP packet"
                )
            return reply

        return adaptor_pb2.ReceiveDataResponse(
            data=await self._answer("ReceiveData", context, work)
        )

    async def GetBalance(
        self, request: adaptor_pb2.GetBalanceRequest, context: Context
    ) -> adaptor_pb2.GetBalanceResponse:
        return (await self._answer("GetBalance", context, self.get_balance)).to_proto()

    async def WatchEvents(
        self, request: adaptor_pb2.WatchEventsRequest, context: Context
    ) -> AsyncIterator[adaptor_pb2.WatchEventsResponse]:
        async for event in self.events.watch(context):
            yield event

    def _require(self, method: str, rpc: str) -> None:
        # Not overridden: UNIMPLEMENTED before any check, as for an undeclared capability.
        if getattr(type(self), method) is getattr(LedgerAdaptor, method):
            raise self._not_implemented(rpc)
