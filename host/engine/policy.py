"""The engine's decisions, as pure functions: policy checks, balance changes, scale conversion.

Everything follows the sign convention of host.engine.model (balance = what the peer owes us).
The rules the connector applies too (when to settle, credit limits, what a coherent policy is)
are host.clearing_rules'; this module turns them into the engine's errors and adds what only
the engine does. Nothing here does I/O; the engine applies the results inside one store
transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from host.clearing_rules import policy_problem
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
    broken = policy_problem(policy)
    if broken is not None:
        raise InvalidArgument(f"policy.{broken.field} {broken.problem}")
    return policy


def check_scales(asset_scale: int, ledger_scale: int) -> None:
    """Raise InvalidArgument when the two scales are too far apart to convert sensibly."""
    if abs(asset_scale - ledger_scale) > MAX_SCALE_GAP:
        raise InvalidArgument(
            f"asset_scale {asset_scale} and ledger_scale {ledger_scale} differ by more than "
            f"{MAX_SCALE_GAP}"
        )


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
