"""The engine's pure decisions: policy checks, when and how much to settle, scale conversion with
leftovers, credit limits, backoff, and what each port outcome does to an outbox row."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from host.clearing_rules import credit_allows, settlement_amount
from host.engine import Account, Direction, Policy, SendResult, Settlement, SettlementState
from host.engine.errors import FailedPrecondition, InvalidArgument
from host.engine.model import check_account_id, check_amount, check_idempotency_key
from host.engine.outbox import Acknowledged, Paid, Refused, after_outcome
from host.engine.policy import check_policy, check_scales, plan_incoming, plan_outgoing
from sdk.amount import rescale
from sdk.backoff import Backoff

POLICY = Policy(settle_threshold=-1000, settle_to=-200, min_balance=-5000, max_balance=3000)


def account(asset_scale: int = 2, ledger_scale: int = 2, **fields: int) -> Account:
    return replace(Account("alice", "sim", "USD", asset_scale, ledger_scale, POLICY), **fields)


@pytest.mark.parametrize(
    ("policy", "rule"),
    [
        (Policy(1, 0, -10, 10), "settle_threshold must be <= 0"),
        (Policy(-10, -11, -20, 10), "settle_to must be between"),
        (Policy(-10, 1, -20, 10), "settle_to must be between"),
        (Policy(-10, -5, 1, 10), "min_balance must be <= 0"),
        (Policy(-10, -5, -20, -1), "max_balance must be >= 0"),
        (Policy(-30, -5, -20, 10), "never settle"),
        (Policy(-10, -5, -(10**78), 10), "more than 78 digits"),
    ],
)
def test_incoherent_policies_are_refused_with_the_rule(policy: Policy, rule: str) -> None:
    with pytest.raises(InvalidArgument, match=rule):
        check_policy(policy)


def test_coherent_policies_pass() -> None:
    assert check_policy(POLICY) is POLICY
    assert check_policy(Policy(0, 0, 0, 0))


def test_scales_too_far_apart_are_refused() -> None:
    check_scales(0, 36)
    with pytest.raises(InvalidArgument, match="differ by more than 36"):
        check_scales(0, 37)


def test_settles_at_and_below_the_threshold_back_up_to_settle_to() -> None:
    assert settlement_amount(-999, POLICY) is None
    assert settlement_amount(0, POLICY) is None
    assert settlement_amount(500, POLICY) is None
    assert settlement_amount(-1000, POLICY) == 800
    assert settlement_amount(-4321, POLICY) == 4121


def test_never_decides_to_settle_zero() -> None:
    flat = Policy(settle_threshold=0, settle_to=0, min_balance=-10, max_balance=10)
    assert settlement_amount(0, flat) is None
    assert settlement_amount(-1, flat) == 1


@given(
    balance=st.integers(-(10**30), 10**30),
    threshold=st.integers(-(10**6), 0),
    gap=st.integers(0, 10**6),
)
@settings(max_examples=100, deadline=None)
def test_a_settlement_always_lands_exactly_on_settle_to(
    balance: int, threshold: int, gap: int
) -> None:
    policy = Policy(threshold, min(0, threshold + gap), threshold, 0)
    amount = settlement_amount(balance, policy)
    if amount is None:
        assert balance > threshold or balance >= policy.settle_to
    else:
        assert amount > 0
        assert balance + amount == policy.settle_to


def test_credit_limits_bound_moves_away_from_the_range_only() -> None:
    assert credit_allows(0, 3000, POLICY)
    assert not credit_allows(0, 3001, POLICY)
    assert credit_allows(0, -5000, POLICY)
    assert not credit_allows(0, -5001, POLICY)
    assert credit_allows(-6000, 10, POLICY)  # back toward the range after a limit was lowered
    assert credit_allows(4000, -10, POLICY)
    assert not credit_allows(-6000, -1, POLICY)
    assert credit_allows(-6000, 0, POLICY)


def test_outgoing_conversion_to_a_coarser_ledger_keeps_the_leftover() -> None:
    # Account in 1/10000 units, ledger in 1/100: 12345 -> 1 ledger unit (0.01), 2345 left over.
    plan = plan_outgoing(account(asset_scale=4, ledger_scale=2, balance=-12345), 12345)
    assert plan.ledger_amount == 123
    assert plan.amount == 12300
    assert plan.account.outgoing_leftover == 45
    assert plan.account.balance == 0
    # The leftover joins the next settlement.
    later = plan_outgoing(replace(plan.account, balance=-55), 55)
    assert (later.ledger_amount, later.amount, later.account.outgoing_leftover) == (1, 100, 0)


def test_outgoing_below_one_ledger_unit_pays_nothing_and_keeps_it_all() -> None:
    plan = plan_outgoing(account(asset_scale=9, ledger_scale=2, balance=-5), 5)
    assert plan.ledger_amount == 0
    assert plan.amount == 0
    assert plan.account.outgoing_leftover == 5
    assert plan.account.balance == 0


def test_outgoing_conversion_to_a_finer_ledger_is_exact() -> None:
    plan = plan_outgoing(account(asset_scale=2, ledger_scale=18, balance=-7), 7)
    assert (plan.ledger_amount, plan.amount, plan.account.outgoing_leftover) == (7 * 10**16, 7, 0)


def test_incoming_conversion_keeps_the_leftover_at_the_ledger_scale() -> None:
    # Ledger in 1/10^6, account in 1/100: 1234567 -> 123 credited, 4567 kept.
    plan = plan_incoming(account(asset_scale=2, ledger_scale=6, balance=500), 1_234_567)
    assert plan.amount == 123
    assert plan.account.incoming_leftover == 4567
    assert plan.account.balance == 377
    again = plan_incoming(plan.account, 5433)
    assert (again.amount, again.account.incoming_leftover) == (1, 0)


@given(
    asset_scale=st.integers(0, 20),
    ledger_scale=st.integers(0, 20),
    debits=st.lists(st.integers(1, 10**25), min_size=1, max_size=20),
)
@settings(max_examples=100, deadline=None)
def test_outgoing_conversion_conserves_every_unit(
    asset_scale: int, ledger_scale: int, debits: list[int]
) -> None:
    current = account(asset_scale, ledger_scale)
    paid = 0
    for debit in debits:
        plan = plan_outgoing(current, debit)
        assert plan.account.outgoing_leftover >= 0
        assert rescale(plan.ledger_amount, ledger_scale, asset_scale) == (plan.amount, 0)
        paid += plan.amount
        current = plan.account
    assert current.balance == sum(debits)
    assert paid + current.outgoing_leftover == sum(debits)


def test_amounts_that_do_not_fit_are_refused() -> None:
    with pytest.raises(FailedPrecondition, match="78 digits"):
        plan_outgoing(account(asset_scale=0, ledger_scale=36, balance=-(10**50)), 10**50)
    with pytest.raises(InvalidArgument, match="78 digits"):
        check_amount(10**78, "delta")
    with pytest.raises(InvalidArgument, match="integer"):
        check_amount(True, "delta")
    with pytest.raises(InvalidArgument, match="greater than zero"):
        check_amount(0, "amount", positive=True)


@pytest.mark.parametrize("bad", ["", "a" * 129, "bob smith", "bob/1", "é"])
def test_malformed_account_ids_are_refused(bad: str) -> None:
    with pytest.raises(InvalidArgument, match="account id"):
        check_account_id(bad)


@pytest.mark.parametrize("bad", ["", "k" * 129, "tab\there", "ключ"])
def test_malformed_idempotency_keys_are_refused(bad: str) -> None:
    with pytest.raises(InvalidArgument, match="idempotency key"):
        check_idempotency_key(bad)


def test_outbox_backoff_grows_then_caps_and_jitter_stays_within_half() -> None:
    backoff = Backoff(initial=0.2, multiplier=2.0, cap=60.0, jitter=0.5)

    class Fixed:
        def __init__(self, value: float) -> None:
            self.value = value

        def random(self) -> float:
            return self.value

    middle = Fixed(0.5).random  # jitter factor 1
    assert [backoff.delay(n, middle) for n in (1, 2, 3, 4)] == [0.2, 0.4, 0.8, 1.6]
    assert backoff.delay(20, middle) == 60.0
    assert backoff.delay(10**6, middle) == 60.0  # no overflow
    rng = random.Random(7)
    for attempt in range(1, 40):
        delay = backoff.delay(attempt, rng.random)
        assert 0 < delay <= 60.0
        assert backoff.delay(attempt, middle) / 2 <= delay <= backoff.delay(attempt, middle) * 1.5
    with pytest.raises(ValueError, match="jitter"):
        Backoff(jitter=1.5)
    with pytest.raises(ValueError, match="initial"):
        Backoff(initial=0)


def outgoing_row(
    state: SettlementState = SettlementState.PENDING, lease: float | None = 30.0
) -> Settlement:
    return Settlement(
        id="k1",
        account_id="alice",
        adaptor="sim",
        direction=Direction.OUTGOING,
        state=state,
        amount=100,
        ledger_amount=100,
        next_attempt_at=0.0,
        lease_until=lease,
    )


def test_a_transient_failure_reschedules_with_the_same_row() -> None:
    row = after_outcome(
        outgoing_row(), Refused("down", transient=True), now=10.0, retry_delay=0.4, lease_until=30.0
    )
    assert row is not None
    assert (row.state, row.attempts, row.last_error) == (SettlementState.PENDING, 1, "down")
    assert (row.next_attempt_at, row.lease_until, row.id) == (10.4, None, "k1")


def test_a_permanent_refusal_parks_the_settlement_without_refunding() -> None:
    row = after_outcome(
        outgoing_row(), Refused("no", transient=False), now=10.0, retry_delay=0.4, lease_until=30.0
    )
    assert row is not None
    assert (row.state, row.next_attempt_at, row.amount) == (SettlementState.FAILED, None, 100)


def test_payment_results_move_the_row_forward_only() -> None:
    pending = Paid(SendResult("L1", completed=False))
    row = after_outcome(outgoing_row(), pending, now=5.0, retry_delay=1.0, lease_until=30.0)
    assert row is not None
    assert (row.state, row.ledger_settlement_id, row.next_attempt_at) == (
        SettlementState.SUBMITTED,
        "L1",
        6.0,
    )
    done = after_outcome(
        row, Paid(SendResult("L1", True)), now=7.0, retry_delay=1.0, lease_until=None
    )
    assert done is not None
    assert (done.state, done.next_attempt_at, done.attempts) == (SettlementState.COMPLETED, None, 2)
    # Late outcomes never undo a final state.
    for late in (pending, Refused("x", transient=True), Refused("x", transient=False)):
        assert after_outcome(done, late, now=8.0, retry_delay=1.0, lease_until=None) is None


def test_a_failure_under_an_expired_lease_changes_nothing() -> None:
    row = outgoing_row(lease=99.0)  # another worker holds the row now
    assert (
        after_outcome(row, Refused("x", True), now=50.0, retry_delay=1.0, lease_until=30.0) is None
    )


def test_incoming_acknowledgement_outcomes() -> None:
    credited = replace(outgoing_row(), direction=Direction.INCOMING, state=SettlementState.CREDITED)
    acked = after_outcome(credited, Acknowledged(), now=1.0, retry_delay=1.0, lease_until=30.0)
    assert acked is not None and acked.state is SettlementState.COMPLETED
    refused = after_outcome(
        credited, Refused("unknown", transient=False), now=1.0, retry_delay=1.0, lease_until=30.0
    )
    # Still credited (the money is ours), parked until the next start-up re-acknowledges it.
    assert refused is not None
    assert (refused.state, refused.next_attempt_at) == (SettlementState.CREDITED, None)


def test_with_balance_is_replace_of_the_balance_and_its_time() -> None:
    before = account(balance=5, outgoing_leftover=3, incoming_leftover=4, liquidity=7)
    before = replace(before, created_at=1.5, updated_at=2.5)
    after = before.with_balance(-9, 3.5)
    assert after == replace(before, balance=-9, updated_at=3.5)
    assert before.balance == 5  # the original is unchanged
