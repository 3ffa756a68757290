"""The clearing rules both sides of a host apply: settlement policy, credit limits, asset codes.

The settlement engine and the connector keep clearing balances of the same peer accounts (one
process, or two in a split host), and the configuration file sets their policies: all three
apply the rules written here, so that what the config accepts the engine accepts, and a packet
the connector lets through is one the engine would have let through.

Sign convention: host.engine.model's (a balance is what the peer owes us). Pure: the rules say
what is wrong as text, and each caller raises its own error with it (the engine
InvalidArgument, the config file ConfigError naming the key). The grammar of the adaptor
contract's ids (account ids, idempotency keys) is ``sdk.contract``'s, not repeated here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal, NamedTuple, Protocol

#: An asset code: what the account counts in ("USD", "XRP", "ETH").
ASSET_CODE: Final = re.compile(r"[\x21-\x7e]{1,32}")
ASSET_CODE_RULE: Final = "1 to 32 printable ASCII characters without the space"


@dataclass(frozen=True, slots=True)
class Policy:
    """When to settle and how much credit to extend, at the account's scale.

    ``min_balance <= settle_threshold <= settle_to <= 0 <= max_balance``: we may owe the peer
    down to ``min_balance``, the peer may owe us up to ``max_balance``, and once we owe it
    ``settle_threshold`` or more we settle back up to ``settle_to``.
    """

    settle_threshold: int
    settle_to: int
    min_balance: int
    max_balance: int


class CreditLimits(Protocol):
    """The two limits of an account a packet must stay within (a Policy has them)."""

    @property
    def min_balance(self) -> int: ...

    @property
    def max_balance(self) -> int: ...


class PolicyProblem(NamedTuple):
    """A rule a policy breaks: the field at fault and what is wrong with it."""

    field: str
    problem: str


def policy_problem(policy: Policy) -> PolicyProblem | None:
    """The first rule of the sign convention that ``policy`` breaks, or None."""
    p = policy
    if p.settle_threshold > 0:
        return PolicyProblem(
            "settle_threshold",
            f"must be <= 0 (we settle when we owe the peer; min_balance <= settle_threshold "
            f"<= settle_to <= 0), got {p.settle_threshold}",
        )
    if not p.settle_threshold <= p.settle_to <= 0:
        return PolicyProblem(
            "settle_to",
            f"must be between settle_threshold ({p.settle_threshold}) and 0 (min_balance <= "
            f"settle_threshold <= settle_to <= 0), got {p.settle_to}",
        )
    if p.min_balance > 0:
        return PolicyProblem(
            "min_balance", f"must be <= 0 (how far we may owe the peer), got {p.min_balance}"
        )
    if p.max_balance < 0:
        return PolicyProblem(
            "max_balance",
            f"must be >= 0 (the credit we extend to the peer), got {p.max_balance}",
        )
    if p.min_balance > p.settle_threshold:
        # Packets stop at min_balance, so a lower threshold would never be reached.
        return PolicyProblem(
            "settle_threshold",
            f"must be >= min_balance ({p.min_balance}), or the account would never settle "
            f"(min_balance <= settle_threshold <= settle_to <= 0), got {p.settle_threshold}",
        )
    return None


def settlement_amount(balance: int, policy: Policy) -> int | None:
    """How much to settle now (> 0), or None: settle when balance <= threshold, up to settle_to."""
    if balance > policy.settle_threshold:
        return None
    amount = policy.settle_to - balance
    return amount if amount > 0 else None


def credit_allows(balance: int, delta: int, limits: CreditLimits) -> bool:
    """Whether a balance change stays within the credit limits.

    A change that moves the balance toward the allowed range is always allowed, even if it does
    not reach it (after an operator lowered a limit, the way back must stay open).
    """
    new = balance + delta
    if delta > 0:
        return new <= limits.max_balance
    if delta < 0:
        return new >= limits.min_balance
    return True


def is_asset_code(value: str) -> bool:
    """Whether ``value`` is an asset code (:data:`ASSET_CODE_RULE`)."""
    return ASSET_CODE.fullmatch(value) is not None


# -- reconciliation: what the two sides of a host (and two peers) compare --------------------

#: The key prefixes of the engine's own balance changes (host.engine.model.ClearingEffect): a
#: settlement's debit (outgoing), a debit that went wholly to the leftover, an incoming
#: settlement's credit. A connector that keeps its own copy of the balances tells settlements
#: from packets by them.
DEBIT_EFFECT: Final = "engine/debit/"
LEFTOVER_EFFECT: Final = "engine/leftover/"
CREDIT_EFFECT: Final = "engine/credit/"


def settlement_side(key: str) -> Literal["out", "in"] | None:
    """Whether a balance change under ``key`` is for a settlement we paid ("out") or one the
    peer paid us ("in"); None for any other change (a packet's, an operator's)."""
    if key.startswith((DEBIT_EFFECT, LEFTOVER_EFFECT)):
        return "out"
    if key.startswith(CREDIT_EFFECT):
        return "in"
    return None


@dataclass(frozen=True, slots=True)
class ClearingBook:
    """An account's clearing balance with the running totals of its settlements, at the
    account's scale: what two peers compare (host.connector.reconciliation)."""

    asset_scale: int
    balance: int
    #: Everything the balance was raised by for settlements we paid. The engine keeps an
    #: outgoing leftover (not paid yet) in ``balance`` instead; a split host's connector cannot
    #: tell it from the settlement it was debited with, and counts it here.
    settled_out: int
    #: Everything it was lowered by for the peer's settlements credited here.
    settled_in: int
