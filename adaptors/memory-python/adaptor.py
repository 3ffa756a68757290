"""memory-python: the reference Python adaptor, over a ledger that lives in its own memory.

It settles nothing real, but it answers the whole LedgerAdaptor contract the way an adaptor
over a real ledger must: validation with clear statuses, idempotent SendMoney, liquidity,
incoming settlements re-delivered until acknowledged. Configuration (environment):

- ``ILP_ADAPTOR_ASSET_CODE`` (default "USD"), ``ILP_ADAPTOR_ASSET_SCALE`` (default 2)
- ``ILP_ADAPTOR_LIQUIDITY``: what the settlement account holds at start (default "100000000")
- ``ILP_ADAPTOR_INCOMING``: incoming settlements to report at start, e.g. "alice:500,bob:250",
  with ids "memory-in-1", "memory-in-2", ... stable across restarts.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import grpc

import sdk
from sdk import amount, contract
from sdk.connectivity import Connectivity
from sdk.pb.ilphost.adaptor.v1 import adaptor_pb2
from sdk.pb.ilphost.types.v1 import types_pb2

NAME = "memory-python"
VERSION = "0.1.0"
CAPABILITIES = ("send_money", "receive_money", "balance", "accounts")


@dataclass(frozen=True)
class Config:
    """What the environment configures."""

    asset_code: str
    asset_scale: int
    liquidity: int
    incoming: tuple[tuple[str, int], ...]

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Config:
        """Parse and check; ValueError names the variable."""
        code = environ.get("ILP_ADAPTOR_ASSET_CODE", "USD")
        raw_scale = environ.get("ILP_ADAPTOR_ASSET_SCALE", "2")
        if not raw_scale.isdigit() or int(raw_scale) > amount.MAX_SCALE:
            raise ValueError(f"ILP_ADAPTOR_ASSET_SCALE={raw_scale!r}: expected 0..255")
        scale = int(raw_scale)
        liquidity = amount.parse_unsigned(
            environ.get("ILP_ADAPTOR_LIQUIDITY", "100000000"), scale, "ILP_ADAPTOR_LIQUIDITY"
        )
        incoming: list[tuple[str, int]] = []
        for item in filter(None, environ.get("ILP_ADAPTOR_INCOMING", "").split(",")):
            account, _, value = item.strip().partition(":")
            if not contract.is_account_id(account):
                raise ValueError(f"ILP_ADAPTOR_INCOMING: bad account id in {item!r}")
            paid = amount.parse_unsigned(value, scale, "ILP_ADAPTOR_INCOMING")
            if paid == 0:
                raise ValueError(f"ILP_ADAPTOR_INCOMING: zero amount in {item!r}")
            incoming.append((account, paid))
        return cls(code, scale, liquidity, tuple(incoming))


@dataclass(frozen=True)
class Payment:
    """An outgoing settlement, remembered under its idempotency key."""

    account_id: str
    value: int
    settlement_id: str


class MemoryAdaptor(sdk.Adaptor):
    """The adaptor; its ledger is a balance and a set of accounts in memory."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        self.liquidity = config.liquidity
        self.accounts: set[str] = set()
        self.payments: dict[str, Payment] = {}
        self.events = sdk.EventHub()
        self.connections = sdk.Connections(self.events)

    async def start(self) -> None:
        # A real adaptor connects to its ledger here, before the host sees the handshake.
        self.connections.add("ledger", "settlement-system")
        self.connections.move("ledger", Connectivity.CONNECTING)
        self.connections.move("ledger", Connectivity.READY)
        for number, (account, value) in enumerate(self.config.incoming, start=1):
            self.receive(f"memory-in-{number}", account, value)
        self.log.info("memory ledger ready", liquidity=str(self.liquidity))

    async def stop(self) -> None:
        self.connections.move("ledger", Connectivity.SHUTDOWN)
        self.events.close()

    def receive(self, settlement_id: str, account_id: str, value: int) -> None:
        """The ledger saw the peer pay us: more liquidity, and an event for the engine."""
        incoming = sdk.Incoming(settlement_id, account_id, value, self.config.asset_scale)
        if self.events.report_incoming(incoming):
            self.liquidity += value

    def _amount(self, value: int) -> types_pb2.Amount:
        return types_pb2.Amount(value=str(value), scale=self.config.asset_scale)

    async def _check_account_id(self, account_id: str, context: sdk.Context) -> None:
        if not contract.is_account_id(account_id):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"account_id must be {contract.ACCOUNT_ID_RULE}, got {account_id[:40]!r}",
            )

    async def GetInfo(
        self, request: adaptor_pb2.GetInfoRequest, context: sdk.Context
    ) -> adaptor_pb2.GetInfoResponse:
        return adaptor_pb2.GetInfoResponse(
            name=NAME,
            version=VERSION,
            ledger="memory",
            asset_code=self.config.asset_code,
            asset_scale=self.config.asset_scale,
            capabilities=CAPABILITIES,
            contract_versions=self.contract_versions,
        )

    async def Probe(
        self, request: adaptor_pb2.ProbeRequest, context: sdk.Context
    ) -> adaptor_pb2.ProbeResponse:
        return self.connections.probe()

    async def SetupAccount(
        self, request: adaptor_pb2.SetupAccountRequest, context: sdk.Context
    ) -> adaptor_pb2.SetupAccountResponse:
        await self._check_account_id(request.account_id, context)
        self.accounts.add(request.account_id)
        return adaptor_pb2.SetupAccountResponse()

    async def DeleteAccount(
        self, request: adaptor_pb2.DeleteAccountRequest, context: sdk.Context
    ) -> adaptor_pb2.DeleteAccountResponse:
        await self._check_account_id(request.account_id, context)
        self.accounts.discard(request.account_id)
        return adaptor_pb2.DeleteAccountResponse()

    async def SendMoney(
        self, request: adaptor_pb2.SendMoneyRequest, context: sdk.Context
    ) -> adaptor_pb2.SendMoneyResponse:
        # Every check before any change: a refused request leaves the ledger untouched. No
        # await between the checks and the debit, so concurrent calls cannot interleave.
        await self._check_account_id(request.account_id, context)
        key = request.idempotency_key
        if not contract.is_idempotency_key(key):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"idempotency_key must be {contract.IDEMPOTENCY_KEY_RULE}",
            )
        try:
            value = amount.unsigned_of(request.amount)
        except amount.AmountError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if request.amount.scale != self.config.asset_scale:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"amount.scale must be the ledger's scale {self.config.asset_scale}, "
                f"got {request.amount.scale}",
            )
        if value == 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "amount must be greater than 0")
        done = self.payments.get(key)
        if done is not None:
            if (done.account_id, done.value) != (request.account_id, value):
                await context.abort(
                    grpc.StatusCode.ALREADY_EXISTS,
                    f"idempotency_key {key!r} was used for {done.value} to {done.account_id!r}",
                )
            return self._sent(done)
        if request.account_id not in self.accounts:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"account {request.account_id!r} is not set up (call SetupAccount first)",
            )
        if value > self.liquidity:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"insufficient liquidity: {value} asked, {self.liquidity} available",
            )
        self.liquidity -= value
        payment = Payment(request.account_id, value, f"memory-out-{uuid.uuid4().hex}")
        self.payments[key] = payment
        self.log.info("paid", account=payment.account_id, amount=str(value), key=key)
        return self._sent(payment)

    @staticmethod
    def _sent(payment: Payment) -> adaptor_pb2.SendMoneyResponse:
        return adaptor_pb2.SendMoneyResponse(
            settlement_id=payment.settlement_id,
            status=adaptor_pb2.SETTLEMENT_STATUS_COMPLETED,
        )

    async def ReceiveMoney(
        self, request: adaptor_pb2.ReceiveMoneyRequest, context: sdk.Context
    ) -> adaptor_pb2.ReceiveMoneyResponse:
        if not request.settlement_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "settlement_id is empty")
        try:
            self.events.settlements.acknowledge(request.settlement_id)
        except sdk.UnknownSettlement as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        return adaptor_pb2.ReceiveMoneyResponse()

    async def GetBalance(
        self, request: adaptor_pb2.GetBalanceRequest, context: sdk.Context
    ) -> adaptor_pb2.GetBalanceResponse:
        return adaptor_pb2.GetBalanceResponse(balance=self._amount(self.liquidity))

    async def WatchEvents(
        self, request: adaptor_pb2.WatchEventsRequest, context: sdk.Context
    ) -> AsyncIterator[adaptor_pb2.WatchEventsResponse]:
        async for event in self.events.watch(context):
            yield event


def main() -> None:
    """Configure from the environment and serve."""
    try:
        config = Config.from_environ(os.environ)
    except ValueError as exc:
        print(f"{NAME}: {exc}", file=sys.stderr)
        sys.exit(1)
    sdk.serve(MemoryAdaptor(config))


if __name__ == "__main__":
    main()
