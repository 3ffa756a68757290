"""The engine's decisions, as pure functions: when to settle, how much credit, scale conversion.

Everything follows the sign convention of host.engine.model (balance = what the peer owes us).
Nothing here does I/O; the engine applies the results inside one store transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from host.engine.errors import FailedPrecondition, InvalidArgument
from host.engine.model import Account, Policy, check_amount
from sdk.amount import MAX_DIGITS, fits, rescale

#: Largest gap between an account's scale and its ledger's. It keeps a leftover (always below
#: one unit of the coarser scale) and one unit of the finer scale far inside a 78-digit amount.
MAX_SCALE_GAP = 36


def check_policy(policy: Policy) -> Policy:
    """The policy if it is coherent, else InvalidArgument naming the rule it breaks."""
    for field in ("settle_threshold", "settle_to", "min_balance", "max_balance"):
        check_amount(getattr(policy, field), f"policy.{field}")
    p = policy
    if p.settle_threshold > 0:
        raise InvalidArgument(
            f"policy.settle_threshold must be <= 0 (we settle when we owe the peer), "
            f"got {p.settle_threshold}"
        )
    if not p.settle_threshold <= p.settle_to <= 0:
        raise InvalidArgument(
            f"policy.settle_to must be between settle_threshold ({p.settle_threshold}) and 0, "
            f"got {p.settle_to}"
        )
    if p.min_balance > 0:
        raise InvalidArgument(f"policy.min_balance must be <= 0, got {p.min_balance}")
    if p.max_balance < 0:
        raise InvalidArgument(f"policy.max_balance must be >= 0, got {p.max_balance}")
    if p.min_balance > p.settle_threshold:
        # Packets stop at min_balance, so a lower threshold would never be reached.
        raise InvalidArgument(
            f"policy.settle_threshold ({p.settle_threshold}) must be >= min_balance "
            f"({p.min_balance}), or the account would never settle"
        )
    return policy


def check_scales(asset_scale: int, ledger_scale: int) -> None:
    """Raise InvalidArgument when the two scales are too far apart to convert sensibly."""
    if abs(asset_scale - ledger_scale) > MAX_SCALE_GAP:
        raise InvalidArgument(
            f"asset_scale {asset_scale} and ledger_scale {ledger_scale} differ by more than "
            f"{MAX_SCALE_GAP}"
        )


def settlement_amount(balance: int, policy: Policy) -> int | None:
    """How much to settle now (> 0), or None: settle when balance <= threshold, up to settle_to."""
    if balance > policy.settle_threshold:
        return None
    amount = policy.settle_to - balance
    return amount if amount > 0 else None


def credit_allows(balance: int, delta: int, policy: Policy) -> bool:
    """Whether a balance change stays within the credit limits.

    A change that moves the balance toward the allowed range is always allowed, even if it does
    not reach it (after an operator lowered a limit, the way back must stay open).
    """
    new = balance + delta
    if delta > 0:
        return new <= policy.max_balance
    if delta < 0:
        return new >= policy.min_balance
    return True


def new_balance(account: Account, delta: int) -> int:
    """The balance after a change, or FailedPrecondition if it no longer fits an amount."""
    balance = account.balance + delta
    if not fits(balance):
        raise FailedPrecondition(
            f"account {account.id}: the clearing balance would exceed {MAX_DIGITS} digits"
        )
    return balance


@dataclass(frozen=True, slots=True)
class OutgoingPlan:
    """The effect of settling ``debited`` (account scale) from an account."""

    #: The account with its balance raised and its new outgoing leftover.
    account: Account
    #: What to pay, at the ledger's scale; 0 means nothing to send (all went to the leftover).
    ledger_amount: int
    #: ``ledger_amount`` at the account's scale (exact).
    amount: int


def plan_outgoing(account: Account, debited: int) -> OutgoingPlan:
    """Raise the balance by ``debited`` and convert it, with the leftover, to the ledger's scale.

    What does not make a whole ledger unit stays in ``outgoing_leftover`` for a later settlement,
    so the ledger amount may be 0: the caller must then not send anything.
    """
    total = debited + account.outgoing_leftover
    ledger_amount, leftover = rescale(total, account.asset_scale, account.ledger_scale)
    if not fits(ledger_amount):
        raise FailedPrecondition(
            f"account {account.id}: settling {debited} would exceed {MAX_DIGITS} digits at the "
            f"ledger's scale {account.ledger_scale}"
        )
    raised = replace(account, balance=new_balance(account, debited), outgoing_leftover=leftover)
    return OutgoingPlan(account=raised, ledger_amount=ledger_amount, amount=total - leftover)


@dataclass(frozen=True, slots=True)
class IncomingPlan:
    """The effect of crediting an incoming ledger payment to an account."""

    #: The account with its balance lowered and its new incoming leftover.
    account: Account
    #: What was credited, at the account's scale (0 if it all went to the leftover).
    amount: int


def plan_incoming(account: Account, ledger_amount: int) -> IncomingPlan:
    """Lower the balance by ``ledger_amount`` plus the incoming leftover, at the account's scale."""
    total = ledger_amount + account.incoming_leftover
    credited, leftover = rescale(total, account.ledger_scale, account.asset_scale)
    lowered = replace(account, balance=new_balance(account, -credited), incoming_leftover=leftover)
    return IncomingPlan(account=lowered, amount=credited)
