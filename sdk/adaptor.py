"""``Adaptor``: the typed base class of a Python ledger adaptor.

Subclass it, override the RPCs the adaptor supports (``async def``), and hand an instance to
``sdk.serve``. Every RPC left alone answers UNIMPLEMENTED, naming the RPC and the class, which
is what the contract asks for an RPC behind a capability the adaptor does not declare.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any, NoReturn, TypeAlias

import grpc

from sdk.contract import CONTRACT_VERSIONS
from sdk.pb.ilphost.adaptor.v1 import adaptor_pb2, adaptor_pb2_grpc
from sdk.stdio import Log

#: The servicer context every RPC receives.
Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]


class Adaptor(adaptor_pb2_grpc.LedgerAdaptorServicer):
    """Base class of a ledger adaptor served with grpc.aio.

    ``contract_versions`` lists the contract versions the adaptor speaks (a class attribute, or
    the constructor argument); ``sdk.serve`` negotiates with the host from it.

    Hooks: ``start()`` runs once the server listens and before the handshake line is printed,
    so the host never sees an adaptor that has not connected to its ledger; ``stop()`` runs on
    a graceful stop (Shutdown RPC, SIGTERM, parent gone) before the server drains.
    """

    contract_versions: tuple[int, ...] = CONTRACT_VERSIONS

    def __init__(self, *, contract_versions: Iterable[int] | None = None) -> None:
        if contract_versions is not None:
            self.contract_versions = tuple(contract_versions)

    @property
    def log(self) -> Log:
        """A logger writing hclog JSON to stderr, named after the adaptor class."""
        return Log(type(self).__name__)

    async def start(self) -> None:
        """Connect to the ledger; raising here makes the adaptor exit 1 before the handshake.

        Raise ``sdk.LaunchError`` for a configuration problem: its message is printed as is.
        """

    async def stop(self) -> None:
        """Release what start() took; end open WatchEvents streams so the server can drain."""

    async def _unimplemented(self, rpc: str, context: Context) -> NoReturn:
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            f"{type(self).__name__} does not implement LedgerAdaptor.{rpc}",
        )

    async def GetInfo(
        self, request: adaptor_pb2.GetInfoRequest, context: Context
    ) -> adaptor_pb2.GetInfoResponse:
        """See the contract (proto/ilphost/adaptor/v1/adaptor.proto)."""
        await self._unimplemented("GetInfo", context)

    async def Probe(
        self, request: adaptor_pb2.ProbeRequest, context: Context
    ) -> adaptor_pb2.ProbeResponse:
        """See the contract (proto/ilphost/adaptor/v1/adaptor.proto)."""
        await self._unimplemented("Probe", context)

    async def SetupAccount(
        self, request: adaptor_pb2.SetupAccountRequest, context: Context
    ) -> adaptor_pb2.SetupAccountResponse:
        """See the contract (proto/ilphost/adaptor/v1/adaptor.proto)."""
        await self._unimplemented("SetupAccount", context)

    async def DeleteAccount(
        self, request: adaptor_pb2.DeleteAccountRequest, context: Context
    ) -> adaptor_pb2.DeleteAccountResponse:
        """See the contract (proto/ilphost/adaptor/v1/adaptor.proto)."""
        await self._unimplemented("DeleteAccount", context)

    async def SendMoney(
        self, request: adaptor_pb2.SendMoneyRequest, context: Context
    ) -> adaptor_pb2.SendMoneyResponse:
        """See the contract (proto/ilphost/adaptor/v1/adaptor.proto)."""
        await self._unimplemented("SendMoney", context)

    async def ReceiveMoney(
        self, request: adaptor_pb2.ReceiveMoneyRequest, context: Context
    ) -> adaptor_pb2.ReceiveMoneyResponse:
        """See the contract (proto/ilphost/adaptor/v1/adaptor.proto)."""
        await self._unimplemented("ReceiveMoney", context)

    async def ReceiveData(
        self, request: adaptor_pb2.ReceiveDataRequest, context: Context
    ) -> adaptor_pb2.ReceiveDataResponse:
        """See the contract (proto/ilphost/adaptor/v1/adaptor.proto)."""
        await self._unimplemented("ReceiveData", context)

    async def GetBalance(
        self, request: adaptor_pb2.GetBalanceRequest, context: Context
    ) -> adaptor_pb2.GetBalanceResponse:
        """See the contract (proto/ilphost/adaptor/v1/adaptor.proto)."""
        await self._unimplemented("GetBalance", context)

    async def WatchEvents(
        self, request: adaptor_pb2.WatchEventsRequest, context: Context
    ) -> AsyncIterator[adaptor_pb2.WatchEventsResponse]:
        """See the contract (proto/ilphost/adaptor/v1/adaptor.proto)."""
        await self._unimplemented("WatchEvents", context)
        # Never reached; the yield makes this an async generator, as grpc.aio expects of a
        # server-streaming handler and as overrides are.
        yield adaptor_pb2.WatchEventsResponse()
