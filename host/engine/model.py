"""The settlement engine's data: accounts, policies, settlements, idempotency records.

Sign convention (the one place it is written; everything else follows it)
--------------------------------------------------------------------------
The **clearing balance** of a peer account is what the peer owes us, an ``int`` in the account's
asset at the account's scale (``asset_scale``).

* Positive: the peer owes us. Negative: we owe the peer.
* A packet we forward to the peer that is fulfilled *lowers* it (the peer paid out for us);
  a packet the peer sends us that we fulfill *raises* it. A balance delta is therefore
  positive when the peer owes us more.
* An **outgoing settlement** (we pay the peer on the ledger) *raises* it by the amount;
  an **incoming settlement** (the peer paid us) *lowers* it.
* Policy: ``min_balance <= 0`` is how far we may owe the peer, ``max_balance >= 0`` the credit we
  extend to the peer. We settle when ``balance <= settle_threshold`` (``<= 0``), by
  ``settle_to - balance`` so that the balance comes back up to ``settle_to``
  (``settle_threshold <= settle_to <= 0``).

Scales: the account counts at ``asset_scale``, its adaptor's ledger at ``ledger_scale``. Whatever
does not convert exactly is a **leftover**, persisted: ``outgoing_leftover`` at the account's scale
(debited from the clearing balance, not yet paid) and ``incoming_leftover`` at the ledger's scale
(received on the ledger, not yet credited). Both are always ``>= 0``.

Money conservation, per account, for outgoing settlements: the sum of every amount the clearing
balance was raised by equals the amounts of the completed settlements plus those of the unfinished
ones (pending, submitted or failed) plus ``outgoing_leftover``. ``Settlement.amount`` is the
settlement's ledger amount expressed exactly at the account's scale, so the sums are exact.

All amounts are Python ints (arbitrary precision); timestamps are seconds since the epoch.
Input validation lives here too, as pure functions raising InvalidArgument.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields
from operator import attrgetter
from typing import Final

from host.clearing_rules import ASSET_CODE_RULE, is_asset_code
from host.clearing_rules import Policy as Policy
from host.engine.errors import InvalidArgument
from sdk import contract
from sdk.amount import MAX_DIGITS, MAX_SCALE, fits


class Direction(enum.StrEnum):
    """Who paid: we paid the peer (OUTGOING) or the peer paid us (INCOMING)."""

    OUTGOING = "outgoing"
    INCOMING = "incoming"


class SettlementState(enum.StrEnum):
    """Where a settlement is in its life.

    Outgoing: PENDING (debited, in the outbox) -> SUBMITTED (accepted, not final) -> COMPLETED;
    FAILED when the adaptor refused for good (the money stays debited until an operator acts).
    Incoming: CREDITED (clearing balance lowered, acknowledgement pending) -> COMPLETED.
    """

    PENDING = "pending"
    SUBMITTED = "submitted"
    COMPLETED = "completed"
    FAILED = "failed"
    CREDITED = "credited"


#: Outgoing states whose amount is debited but not paid yet.
UNFINISHED_OUTGOING = frozenset(
    {SettlementState.PENDING, SettlementState.SUBMITTED, SettlementState.FAILED}
)
#: States with work left for the outbox worker (FAILED waits for an operator).
OUTBOX_STATES = frozenset(
    {SettlementState.PENDING, SettlementState.SUBMITTED, SettlementState.CREDITED}
)


@dataclass(frozen=True, slots=True)
class Account:
    """A peer account: its clearing balance, policy and settlement bookkeeping."""

    id: str
    adaptor: str
    asset_code: str
    asset_scale: int
    ledger_scale: int
    policy: Policy
    balance: int = 0
    outgoing_leftover: int = 0
    incoming_leftover: int = 0
    #: The adaptor's settlement-account liquidity at ``ledger_scale``; None until reported.
    liquidity: int | None = None
    created_at: float = 0.0
    updated_at: float = 0.0

    def with_balance(self, balance: int, updated_at: float) -> Account:
        """This account with ``balance``, changed at ``updated_at``: ``dataclasses.replace``
        for the one change made per packet, at half its cost (no per-field checks)."""
        values = list(_account_values(self))
        values[_BALANCE] = balance
        values[_UPDATED_AT] = updated_at
        return Account(*values)


_ACCOUNT_FIELDS: Final = tuple(field.name for field in fields(Account))
_account_values: Final = attrgetter(*_ACCOUNT_FIELDS)
_BALANCE: Final = _ACCOUNT_FIELDS.index("balance")
_UPDATED_AT: Final = _ACCOUNT_FIELDS.index("updated_at")


@dataclass(frozen=True, slots=True)
class Settlement:
    """One settlement, either way; for outgoing ones also the outbox row.

    ``id`` is the host's id. Outgoing: a random hex id made once, which is also the idempotency
    key of every SendMoney attempt. Incoming: ``incoming_id(adaptor, ledger id)``, so a
    re-delivered ledger settlement finds its row.
    """

    id: str
    account_id: str
    adaptor: str
    direction: Direction
    state: SettlementState
    #: At the account's scale: exactly ``ledger_amount`` converted to it.
    amount: int
    #: At the ledger's scale.
    ledger_amount: int
    #: The ledger's id once known ("" before).
    ledger_settlement_id: str = ""
    attempts: int = 0
    last_error: str = ""
    #: When the outbox worker may next try it (None: nothing to do).
    next_attempt_at: float | None = None
    #: Until when a worker holds it (None: free).
    lease_until: float | None = None
    created_at: float = 0.0
    updated_at: float = 0.0


@dataclass(frozen=True, slots=True)
class AccountView:
    """An account as the admin API shows it: with the total of its unfinished settlements."""

    account: Account
    #: Sum of ``amount`` over unfinished outgoing settlements (pending, submitted, failed).
    pending_settlement: int


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """A request made under an idempotency key, and the result to replay for it."""

    scope: str
    key: str
    account_id: str
    #: A canonical text of the request's content; a reuse with another text is refused.
    request: str
    #: A canonical text of the result.
    result: str
    created_at: float


@dataclass(frozen=True, slots=True)
class ClearingEffect:
    """A change the engine made to a clearing balance itself (a settlement), for a connector
    that keeps its own copy of the balances (proposal 2: the external engine).

    Journaled in the transaction that made the change, and pushed to the connector under
    ``key`` (idempotent there) until it confirmed: the connector's balance then agrees.
    """

    #: "engine/debit/<settlement id>", "engine/leftover/<uuid>" or "engine/credit/<digest>"
    #: (host.clearing_rules.DEBIT_EFFECT and its siblings): 1 to 128 characters.
    key: str
    account_id: str
    #: Positive for an outgoing settlement's debit, negative for an incoming credit.
    delta: int
    created_at: float


def incoming_id(adaptor: str, ledger_settlement_id: str) -> str:
    """The host's id of an incoming settlement: ledger ids are unique per ledger only."""
    return f"in:{adaptor}:{ledger_settlement_id}"


def check_account_id(account_id: str) -> str:
    """The account id, or InvalidArgument."""
    if not contract.is_account_id(account_id):
        raise InvalidArgument(
            f"account id {account_id[:40]!r} is invalid: use {contract.ACCOUNT_ID_RULE}"
        )
    return account_id


def check_adaptor_name(name: str) -> str:
    """The adaptor name, or InvalidArgument."""
    if not contract.is_adaptor_name(name):
        raise InvalidArgument(
            f"adaptor name {name[:40]!r} is invalid: use {contract.ADAPTOR_NAME_RULE}"
        )
    return name


def check_asset(asset_code: str, asset_scale: int, ledger_scale: int) -> None:
    """Raise InvalidArgument unless the asset code and both scales are well-formed."""
    if not is_asset_code(asset_code):
        raise InvalidArgument(f"asset code {asset_code[:40]!r} is invalid: use {ASSET_CODE_RULE}")
    for name, scale in (("asset_scale", asset_scale), ("ledger_scale", ledger_scale)):
        if not 0 <= scale <= MAX_SCALE:
            raise InvalidArgument(f"{name} must be 0..{MAX_SCALE}, got {scale}")


def check_idempotency_key(key: str) -> str:
    """The idempotency key, or InvalidArgument."""
    if not contract.is_idempotency_key(key):
        raise InvalidArgument(
            f"idempotency key {key[:40]!r} is invalid: use {contract.IDEMPOTENCY_KEY_RULE}"
        )
    return key


def check_ledger_settlement_id(settlement_id: str) -> str:
    """A ledger's settlement id, or InvalidArgument."""
    if not contract.is_settlement_id(settlement_id):
        raise InvalidArgument(
            f"settlement id {settlement_id[:40]!r} is invalid: use {contract.SETTLEMENT_ID_RULE}"
        )
    return settlement_id


def check_amount(value: int, field: str, *, positive: bool = False) -> int:
    """An amount that can be written on the wire (and, if asked, is > 0), or InvalidArgument."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{field} must be an integer, got {type(value).__name__}")
    if not fits(value):
        raise InvalidArgument(f"{field} has more than {MAX_DIGITS} digits")
    if positive and value <= 0:
        raise InvalidArgument(f"{field} must be greater than zero, got {value}")
    return value
