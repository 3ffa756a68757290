"""A SettlementPort over a running adaptor's LedgerAdaptor gRPC service.

gRPC statuses become the engine's two failure kinds at this one boundary:

* **transient** (retry later with the same idempotency key): UNAVAILABLE, DEADLINE_EXCEEDED,
  RESOURCE_EXHAUSTED, ABORTED, INTERNAL, UNKNOWN, CANCELLED, DATA_LOSS, and FAILED_PRECONDITION.
  For most of these the outcome is unknown (the adaptor may have paid before the reply was lost),
  so only a retry with the same key can find out. FAILED_PRECONDITION is a definite refusal, but
  of a kind that passes by itself (insufficient liquidity gets topped up; the peer's ledger
  account becomes known once the peers exchanged it), so it is retried with backoff too, and
  stays visible as the settlement's ``last_error`` meanwhile.
* **permanent** (park the settlement as FAILED for an operator, never refund):
  INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS, OUT_OF_RANGE, PERMISSION_DENIED,
  UNAUTHENTICATED, UNIMPLEMENTED. The adaptor refused without paying, and asking again
  unchanged would be refused again.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Final, NoReturn

import grpc

from host.engine.errors import (
    PermanentSettlementError,
    SettlementError,
    TransientSettlementError,
)
from host.engine.ports import SendResult
from sdk.pb.ilphost.adaptor.v1 import adaptor_pb2
from sdk.pb.ilphost.types.v1 import types_pb2

if TYPE_CHECKING:
    from sdk.pb.ilphost.adaptor.v1.adaptor_pb2_grpc import LedgerAdaptorAsyncStub

_PERMANENT = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)

_log = logging.getLogger("ilp_host.engine")


def classify(code: grpc.StatusCode, details: str, what: str) -> SettlementError:
    """The engine's error for a failed call (see the module docstring for the mapping)."""
    message = f"{what}: {code.name}: {details or 'no details'}"
    if code in _PERMANENT:
        return PermanentSettlementError(message)
    return TransientSettlementError(message)


def _channel_closed(exc: asyncio.CancelledError, what: str) -> NoReturn:
    """A call cut short: by our own cancellation (re-raised), or by its channel closing under it
    (the adaptor died and the supervisor closed the channel): the outcome is unknown, so it is
    transient, and the outbox retries with the same key instead of waiting out its lease."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise exc
    raise TransientSettlementError(f"{what}: the channel to the adaptor closed mid-call") from exc


#: The deadline of each call the host makes to an adaptor, seconds (this port's, unless made
#: with another, and host.binding's); the outbox lease (``[engine] outbox_lease``) must exceed it.
CALL_DEADLINE: Final = 10.0


class GrpcSettlementPort:
    """The SettlementPort of one adaptor, given its stub and its ledger's scale (from GetInfo)."""

    def __init__(
        self, stub: LedgerAdaptorAsyncStub, ledger_scale: int, *, timeout: float = CALL_DEADLINE
    ) -> None:
        """``timeout`` is each call's deadline; keep it below the outbox lease."""
        self._stub = stub
        self._scale = ledger_scale
        self._timeout = timeout

    async def send_money(
        self, account_id: str, ledger_amount: int, idempotency_key: str
    ) -> SendResult:
        """SendMoney; COMPLETED means final, PENDING (or unset) means ask again later."""
        request = adaptor_pb2.SendMoneyRequest(
            account_id=account_id,
            amount=types_pb2.Amount(value=str(ledger_amount), scale=self._scale),
            idempotency_key=idempotency_key,
        )
        try:
            response = await self._stub.SendMoney(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            raise classify(exc.code(), exc.details() or "", "SendMoney") from exc
        except asyncio.CancelledError as exc:
            _channel_closed(exc, "SendMoney")
        if not response.settlement_id:
            # Accepted all the same: refusing a payment the ledger made would leave it unrecorded;
            # but without the ledger's id nobody can match it, so say so.
            _log.warning(
                "SendMoney %s: the adaptor answered %s without a settlement_id (required by the "
                "contract): the payment cannot be matched on the ledger",
                idempotency_key,
                adaptor_pb2.SettlementStatus.Name(response.status),
            )
        return SendResult(
            settlement_id=response.settlement_id,
            completed=response.status == adaptor_pb2.SETTLEMENT_STATUS_COMPLETED,
        )

    async def acknowledge_incoming(self, settlement_id: str) -> None:
        """ReceiveMoney for an incoming settlement the engine has credited."""
        request = adaptor_pb2.ReceiveMoneyRequest(settlement_id=settlement_id)
        try:
            await self._stub.ReceiveMoney(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            raise classify(exc.code(), exc.details() or "", "ReceiveMoney") from exc
        except asyncio.CancelledError as exc:
            _channel_closed(exc, "ReceiveMoney")
