"""The settlement engine behind HostAdmin: requests validated, results in their wire form.

Amounts cross here as decimal strings with their scale (sdk.amount); engine refusals
(host.engine.EngineError) become AdminError with the status each one names.
"""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import TypeVar

import grpc

from host.admin.server import AdminError
from host.engine import AccountView, Direction, Engine, EngineError, Settlement, SettlementState
from host.pb.ilphost.admin.v1 import admin_pb2
from sdk.amount import AmountError, parse_unsigned
from sdk.pb.ilphost.types.v1 import types_pb2

_T = TypeVar("_T")

_STATES = {
    SettlementState.PENDING: admin_pb2.SETTLEMENT_STATE_PENDING,
    SettlementState.SUBMITTED: admin_pb2.SETTLEMENT_STATE_SUBMITTED,
    SettlementState.COMPLETED: admin_pb2.SETTLEMENT_STATE_COMPLETED,
    SettlementState.CREDITED: admin_pb2.SETTLEMENT_STATE_CREDITED,
    SettlementState.FAILED: admin_pb2.SETTLEMENT_STATE_FAILED,
}
_DIRECTIONS = {
    Direction.OUTGOING: admin_pb2.SETTLEMENT_DIRECTION_OUTGOING,
    Direction.INCOMING: admin_pb2.SETTLEMENT_DIRECTION_INCOMING,
}


def _signed(value: int, scale: int) -> types_pb2.SignedAmount:
    return types_pb2.SignedAmount(value=str(value), scale=scale)


def _unsigned(value: int, scale: int) -> types_pb2.Amount:
    return types_pb2.Amount(value=str(value), scale=scale)


def _time(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def account_to_proto(view: AccountView) -> admin_pb2.Account:
    """One account with its balances and policy. Pure."""
    account, scale = view.account, view.account.asset_scale
    policy = account.policy
    message = admin_pb2.Account(
        account_id=account.id,
        adaptor=account.adaptor,
        asset_code=account.asset_code,
        asset_scale=scale,
        clearing_balance=_signed(account.balance, scale),
        settle_threshold=_signed(policy.settle_threshold, scale),
        settle_to=_signed(policy.settle_to, scale),
        min_balance=_signed(policy.min_balance, scale),
        max_balance=_signed(policy.max_balance, scale),
        pending_settlement=_unsigned(view.pending_settlement, scale),
        leftover=_unsigned(account.outgoing_leftover, scale),
    )
    if account.liquidity is not None:
        message.settlement_liquidity.CopyFrom(_unsigned(account.liquidity, account.ledger_scale))
    return message


def settlement_to_proto(
    row: Settlement, asset_scale: int, ledger_scale: int
) -> admin_pb2.Settlement:
    """One settlement, either way. Pure."""
    message = admin_pb2.Settlement(
        id=row.id,
        account_id=row.account_id,
        direction=_DIRECTIONS[row.direction],
        state=_STATES[row.state],
        amount=_unsigned(row.amount, asset_scale),
        ledger_amount=_unsigned(row.ledger_amount, ledger_scale),
        ledger_settlement_id=row.ledger_settlement_id,
        attempts=row.attempts,
        last_error=row.last_error,
    )
    message.created.FromDatetime(_time(row.created_at))
    message.updated.FromDatetime(_time(row.updated_at))
    return message


async def _refusals(call: Awaitable[_T]) -> _T:
    try:
        return await call
    except EngineError as exc:
        raise AdminError(grpc.StatusCode[exc.code], str(exc)) from exc


class EngineAdminService:
    """host.admin.server.EngineAdmin over an Engine."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def _settlement(self, row: Settlement) -> admin_pb2.Settlement:
        view = await _refusals(self._engine.get_account(row.account_id))
        return settlement_to_proto(row, view.account.asset_scale, view.account.ledger_scale)

    async def list_accounts(self) -> admin_pb2.ListAccountsResponse:
        views = await _refusals(self._engine.list_accounts())
        return admin_pb2.ListAccountsResponse(accounts=[account_to_proto(v) for v in views])

    async def get_account(self, account_id: str) -> admin_pb2.GetAccountResponse:
        view = await _refusals(self._engine.get_account(account_id))
        return admin_pb2.GetAccountResponse(account=account_to_proto(view))

    async def list_settlements(
        self, account_id: str, limit: int
    ) -> admin_pb2.ListSettlementsResponse:
        if account_id:  # an unknown account is NOT_FOUND here too, as in GetAccount
            await _refusals(self._engine.get_account(account_id))
        rows = await _refusals(self._engine.list_settlements(account_id or None, limit))
        scales = {
            v.account.id: (v.account.asset_scale, v.account.ledger_scale)
            for v in await _refusals(self._engine.list_accounts())
        }
        return admin_pb2.ListSettlementsResponse(
            settlements=[settlement_to_proto(row, *scales[row.account_id]) for row in rows]
        )

    async def settle(self, request: admin_pb2.SettleRequest) -> admin_pb2.SettleResponse:
        view = await _refusals(self._engine.get_account(request.account_id))
        amount: int | None = None
        if request.HasField("amount"):
            scale = view.account.asset_scale
            if request.amount.scale != scale:
                raise AdminError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"amount.scale must be the account's scale {scale}, got {request.amount.scale}",
                )
            try:
                amount = parse_unsigned(request.amount.value, request.amount.scale, "amount")
            except AmountError as exc:
                raise AdminError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from exc
            if amount == 0:
                raise AdminError(grpc.StatusCode.INVALID_ARGUMENT, "amount must be positive")
        row = await _refusals(
            self._engine.settle(request.account_id, amount, request.idempotency_key or None)
        )
        return admin_pb2.SettleResponse(settlement=await self._settlement(row))

    async def retry_settlement(self, settlement_id: str) -> admin_pb2.RetrySettlementResponse:
        row = await _refusals(self._engine.get_settlement(settlement_id))
        if row.state is SettlementState.FAILED:
            row = await _refusals(self._engine.retry_settlement(settlement_id))
        return admin_pb2.RetrySettlementResponse(settlement=await self._settlement(row))
