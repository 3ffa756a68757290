"""Rows of the engine's tables as both stores write and read them: the columns, in order, and the
conversions between model objects and rows.

Amounts go out through ``amount`` (SQLite stores decimal text, PostgreSQL ``numeric``, given
ints) and come back as whatever the database returns that ``int()`` reads exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from host.clearing_records import STATUS_OF_RESOLUTION, InFlight, Resolution
from host.engine.model import Account, Direction, Policy, Settlement, SettlementState
from host.ilp.outcome import Outcome, Status

ACCOUNT_COLUMNS = (
    "id, adaptor, asset_code, asset_scale, ledger_scale, settle_threshold, settle_to, "
    "min_balance, max_balance, balance, outgoing_leftover, incoming_leftover, liquidity, "
    "created_at, updated_at"
)
SETTLEMENT_COLUMNS = (
    "id, account_id, adaptor, direction, state, amount, ledger_amount, ledger_settlement_id, "
    "attempts, last_error, next_attempt_at, lease_until, created_at, updated_at"
)
#: Settlement states with work left for the outbox (host.engine.model.OUTBOX_STATES), as SQL.
OUTBOX = "('pending', 'submitted', 'credited')"
#: Outgoing settlements debited and not paid (host.engine.model.UNFINISHED_OUTGOING), as SQL.
UNFINISHED_OUTGOING = "direction = 'outgoing' AND state IN ('pending', 'submitted', 'failed')"

Amount = Callable[[int], object]


def account_from_row(row: Sequence[Any]) -> Account:
    """An Account from a row of ACCOUNT_COLUMNS."""
    return Account(
        id=row[0],
        adaptor=row[1],
        asset_code=row[2],
        asset_scale=row[3],
        ledger_scale=row[4],
        policy=Policy(int(row[5]), int(row[6]), int(row[7]), int(row[8])),
        balance=int(row[9]),
        outgoing_leftover=int(row[10]),
        incoming_leftover=int(row[11]),
        liquidity=None if row[12] is None else int(row[12]),
        created_at=row[13],
        updated_at=row[14],
    )


def account_values(a: Account, amount: Amount) -> tuple[object, ...]:
    """The values of ACCOUNT_COLUMNS for ``a``."""
    p = a.policy
    return (
        a.id,
        a.adaptor,
        a.asset_code,
        a.asset_scale,
        a.ledger_scale,
        amount(p.settle_threshold),
        amount(p.settle_to),
        amount(p.min_balance),
        amount(p.max_balance),
        amount(a.balance),
        amount(a.outgoing_leftover),
        amount(a.incoming_leftover),
        None if a.liquidity is None else amount(a.liquidity),
        a.created_at,
        a.updated_at,
    )


def settlement_from_row(row: Sequence[Any]) -> Settlement:
    """A Settlement from a row of SETTLEMENT_COLUMNS."""
    return Settlement(
        id=row[0],
        account_id=row[1],
        adaptor=row[2],
        direction=Direction(row[3]),
        state=SettlementState(row[4]),
        amount=int(row[5]),
        ledger_amount=int(row[6]),
        ledger_settlement_id=row[7],
        attempts=row[8],
        last_error=row[9],
        next_attempt_at=row[10],
        lease_until=row[11],
        created_at=row[12],
        updated_at=row[13],
    )


def settlement_values(s: Settlement, amount: Amount) -> tuple[object, ...]:
    """The values of SETTLEMENT_COLUMNS for ``s``."""
    return (
        s.id,
        s.account_id,
        s.adaptor,
        s.direction.value,
        s.state.value,
        amount(s.amount),
        amount(s.ledger_amount),
        s.ledger_settlement_id,
        s.attempts,
        s.last_error,
        s.next_attempt_at,
        s.lease_until,
        s.created_at,
        s.updated_at,
    )


#: The columns of a journaled packet (host.connector.ports.InFlight), in its field order.
PACKET_COLUMNS = "key, source, source_id, target, target_id, amount, expires_at, condition"


def packet_values(p: InFlight, amount: Amount) -> tuple[object, ...]:
    """The values of PACKET_COLUMNS for ``p``."""
    return (
        p.key,
        p.source,
        p.source_id,
        p.target,
        p.target_id,
        amount(p.amount),
        p.expires_at,
        p.condition,
    )


def packet_from_row(row: Sequence[Any]) -> InFlight:
    """An InFlight from a row of PACKET_COLUMNS."""
    key, source, source_id, target, target_id, amount, expires_at, condition = row
    return InFlight(
        key,
        source,
        bytes(source_id),
        target,
        bytes(target_id),
        int(amount),
        float(expires_at),
        bytes(condition),
    )


def outcome_from_row(row: Sequence[Any] | None) -> Outcome:
    """What a packet's source is told, from its (resolution, fulfillment) row, or no row."""
    if row is None:
        return Outcome(Status.UNKNOWN)
    if row[0] is None:
        return Outcome(Status.PENDING)
    status = STATUS_OF_RESOLUTION[Resolution(row[0])]
    return Outcome(status, bytes(row[1]) if status == Status.FULFILLED else b"")
