"""The requests and replies of ``LedgerAdaptor``, typed and checked.

The checks every adaptor makes of a request (account id, idempotency key, amount and scale,
acknowledged settlement id, message size), written once against the grammar of
``sdk.contract``: each returns the checked value or raises ``sdk.errors.InvalidRequest``
(INVALID_ARGUMENT) naming the field. The dataclasses are what ``sdk.LedgerAdaptor``'s methods
take and return; ``from_proto`` and ``to_proto`` convert at the wire. Pure: no I/O, no gRPC
calls.
"""

from __future__ import annotations

from dataclasses import dataclass

from sdk import amount, contract
from sdk.errors import InvalidRequest
from sdk.pb.ilphost.adaptor.v1 import adaptor_pb2
from sdk.pb.ilphost.types.v1 import types_pb2

#: How much of a refused value a message quotes.
_QUOTE = 40


# --- the checks --------------------------------------------------------------------------------


def check_account_id(value: str, field: str = "account_id") -> str:
    """A host account id, or InvalidRequest."""
    if not contract.is_account_id(value):
        raise InvalidRequest(f"{field} must be {contract.ACCOUNT_ID_RULE}, got {value[:_QUOTE]!r}")
    return value


def check_idempotency_key(value: str, field: str = "idempotency_key") -> str:
    """An idempotency key, or InvalidRequest."""
    if not contract.is_idempotency_key(value):
        raise InvalidRequest(
            f"{field} must be {contract.IDEMPOTENCY_KEY_RULE}, got {value[:_QUOTE]!r}"
        )
    return value


def check_acknowledged_id(value: str, field: str = "settlement_id") -> str:
    """The id ReceiveMoney acknowledges: not empty (a non-empty id the adaptor never reported
    is NOT_FOUND, the adaptor's to answer)."""
    if not value:
        raise InvalidRequest(f"{field} is empty")
    return value


def check_payment(message: amount.AmountMessage, scale: int, field: str = "amount") -> int:
    """The value of an amount to pay: well-formed, greater than zero, at the ledger's ``scale``."""
    value = amount.unsigned_of(message, field)
    if message.scale != scale:
        raise InvalidRequest(
            f"{field}.scale must be the ledger's scale {scale}, got {message.scale}"
        )
    if value == 0:
        raise InvalidRequest(f"{field} must be greater than zero")
    return value


def check_data(data: bytes, field: str = "data") -> bytes:
    """A message between peer adaptors: at most the data limit of an ILP packet."""
    if len(data) > contract.MAX_DATA_BYTES:
        raise InvalidRequest(
            f"{field} has {len(data)} bytes, at most {contract.MAX_DATA_BYTES} allowed"
        )
    return data


# --- the typed requests and replies ------------------------------------------------------------


@dataclass(frozen=True)
class Info:
    """What GetInfo answers; the contract versions are added from the adaptor's class."""

    name: str
    version: str
    #: The settlement system, e.g. "simledger", "ethereum".
    ledger: str
    asset_code: str
    #: The scale the ledger counts in: every amount to and from the adaptor uses it.
    asset_scale: int
    #: Declared capabilities ("send_money", "receive_money", "data", "balance", "accounts").
    capabilities: tuple[str, ...] = ()

    def to_proto(self, contract_versions: tuple[int, ...]) -> adaptor_pb2.GetInfoResponse:
        """The wire form."""
        return adaptor_pb2.GetInfoResponse(
            name=self.name,
            version=self.version,
            ledger=self.ledger,
            asset_code=self.asset_code,
            asset_scale=self.asset_scale,
            capabilities=self.capabilities,
            contract_versions=contract_versions,
        )


@dataclass(frozen=True)
class SendMoney:
    """One settlement payment, checked: ``amount`` > 0 at the ledger's ``scale``."""

    account_id: str
    amount: int
    scale: int
    idempotency_key: str

    @classmethod
    def from_proto(cls, request: adaptor_pb2.SendMoneyRequest, scale: int) -> SendMoney:
        """Check a SendMoneyRequest against the ledger's scale; InvalidRequest if malformed."""
        return cls(
            account_id=check_account_id(request.account_id),
            idempotency_key=check_idempotency_key(request.idempotency_key),
            amount=check_payment(request.amount, scale),
            scale=scale,
        )

    def to_proto(self) -> adaptor_pb2.SendMoneyRequest:
        """The wire form."""
        return adaptor_pb2.SendMoneyRequest(
            account_id=self.account_id,
            amount=types_pb2.Amount(value=str(self.amount), scale=self.scale),
            idempotency_key=self.idempotency_key,
        )


@dataclass(frozen=True)
class Sent:
    """The answer to SendMoney: the ledger's id of the payment, and whether it is final."""

    settlement_id: str
    #: False: submitted, not final yet; the engine asks again with the same key.
    completed: bool = True

    def to_proto(self) -> adaptor_pb2.SendMoneyResponse:
        """The wire form."""
        return adaptor_pb2.SendMoneyResponse(
            settlement_id=self.settlement_id,
            status=(
                adaptor_pb2.SETTLEMENT_STATUS_COMPLETED
                if self.completed
                else adaptor_pb2.SETTLEMENT_STATUS_PENDING
            ),
        )


@dataclass(frozen=True)
class PeerMessage:
    """A message from the peer's adaptor (ReceiveData), checked."""

    account_id: str
    data: bytes

    @classmethod
    def from_proto(cls, request: adaptor_pb2.ReceiveDataRequest) -> PeerMessage:
        """Check a ReceiveDataRequest; InvalidRequest if malformed."""
        return cls(check_account_id(request.account_id), check_data(request.data))


@dataclass(frozen=True)
class Balance:
    """The settlement account's liquidity (GetBalance), at the ledger's scale."""

    value: int
    scale: int

    def to_proto(self) -> adaptor_pb2.GetBalanceResponse:
        """The wire form."""
        return adaptor_pb2.GetBalanceResponse(
            balance=types_pb2.Amount(value=str(self.value), scale=self.scale)
        )
