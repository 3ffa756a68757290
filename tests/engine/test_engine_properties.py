"""Property: over any sequence of balance changes, settlements, ledger faults and restarts, money
is conserved and no settlement is paid twice.

Each example drives a real engine on a real SQLite file (and, fewer examples, on a schema of a
real PostgreSQL server: tests/conftest.py) against FakeLedger, an in-memory ledger
with its own idempotency that counts payments per key. After every step, per account:

    debited for outgoing settlements == completed + unfinished (pending/submitted/failed)
                                        + outgoing leftover
    received on the ledger            == credited (converted back) + incoming leftover

where "debited" is derived from the balance itself (balance = applied deltas + debited -
credited), so a lost or doubled debit shows. The ledger never holds a payment under a key the
engine does not know, nor for another amount. At the end the faults stop, the outbox is drained,
and every settlement must be completed and paid exactly once.
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine_fakes import FakeClock, FakeLedger, open_engine
from hypothesis import event, given, settings
from hypothesis import strategies as st

from host.engine import (
    AdaptorRegistry,
    AlreadyExists,
    Direction,
    Engine,
    FailedPrecondition,
    Policy,
    SettlementState,
)
from host.engine.store import Store
from sdk.amount import rescale
from tests.postgres_server import PostgresServer

# Account "a" counts finer than its ledger (outgoing leftovers); "b" coarser (incoming ones).
ACCOUNTS = {
    "a": (4, 2, Policy(settle_threshold=-1000, settle_to=-250, min_balance=-50_000, max_balance=0)),
    "b": (2, 6, Policy(settle_threshold=-300, settle_to=0, min_balance=-50_000, max_balance=0)),
}
UNFINISHED = {SettlementState.PENDING, SettlementState.SUBMITTED, SettlementState.FAILED}
OUTCOMES = st.sampled_from(["ok", "ok", "pending", "transient", "lost", "permanent"])

account_ids = st.sampled_from(sorted(ACCOUNTS))
change = st.tuples(st.just("change"), account_ids, st.integers(-2500, 500))
settle = st.tuples(
    st.just("settle"),
    account_ids,
    st.none() | st.integers(1, 3000),
    st.none() | st.sampled_from(["m1", "m2"]),
)
faults = st.tuples(st.just("faults"), st.lists(OUTCOMES, min_size=1, max_size=4))
outbox = st.tuples(st.just("outbox"), st.integers(0, 300))
KINDS = {
    "change": change,
    "faults": faults,
    "outbox": outbox,
    "settle": settle,
    "replay": st.tuples(st.just("replay"), st.integers(0, 50)),
    "incoming": st.tuples(st.just("incoming"), account_ids, st.integers(0, 3)),
    "ack_faults": st.tuples(
        st.just("ack_faults"), st.lists(st.sampled_from(["transient", "permanent"]), max_size=2)
    ),
    "restart": st.just(("restart",)),
    "retry_failed": st.just(("retry_failed",)),
    "adaptor": st.tuples(st.just("adaptor"), st.booleans()),
}
# Weighted: mostly balance changes, faults and outbox passes.
WEIGHTS = ["change"] * 6 + ["faults"] * 3 + ["outbox"] * 3 + ["settle"] * 2 + sorted(KINDS)
steps = st.sampled_from(WEIGHTS).flatmap(lambda kind: KINDS[kind])


def incoming_amount(account_id: str, n: int) -> int:
    """A ledger settlement's amount is fixed by its id, so re-deliveries carry the same content."""
    return (n + 1) * (7_654_321 if account_id == "b" else 37)


@dataclass
class Model:
    """What the test itself knows, independently of the engine's books."""

    applied: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ACCOUNTS, 0))
    changes: list[tuple[str, str, int, int]] = field(
        default_factory=list
    )  # key, account, delta, result
    received: dict[str, dict[str, int]] = field(default_factory=lambda: {a: {} for a in ACCOUNTS})


class World:
    def __init__(self, database: Path | str) -> None:
        self.database = database
        self.ledger = FakeLedger()
        self.clock = FakeClock()
        self.adaptors = AdaptorRegistry({"sim": self.ledger})
        self.model = Model()
        self.store: Store
        self.engine: Engine

    async def start(self) -> None:
        self.store, self.engine = await open_engine(self.database, self.adaptors, self.clock)

    async def restart(self) -> None:
        await self.store.close()
        await self.start()
        await self.engine.reconcile()

    async def step(self, step: tuple[Any, ...]) -> None:
        engine, kind = self.engine, step[0]
        if kind == "change":
            _, account, delta = step
            key = f"c{len(self.model.changes)}"
            result = await engine.apply_balance_change(account, delta, key)
            self.model.applied[account] += delta
            self.model.changes.append((key, account, delta, result))
        elif kind == "replay" and self.model.changes:
            key, account, delta, result = self.model.changes[step[1] % len(self.model.changes)]
            before = await self.snapshot(account)
            assert await engine.apply_balance_change(account, delta, key) == result
            assert await self.snapshot(account) == before
        elif kind == "settle":
            _, account, amount, key = step
            before = await self.snapshot(account)
            try:
                await engine.settle(account, amount, key)
            except (FailedPrecondition, AlreadyExists):
                assert await self.snapshot(account) == before  # refused: nothing changed
        elif kind == "incoming":
            _, account, n = step
            settlement_id, amount = f"{account}-t{n}", incoming_amount(account, n)
            await engine.receive_settlement(settlement_id, account, amount)
            self.model.received[account][settlement_id] = amount
        elif kind == "faults":
            self.ledger.script.extend(step[1])
        elif kind == "ack_faults":
            self.ledger.ack_script.extend(step[1])
        elif kind == "outbox":
            self.clock.advance(step[1])
            await engine.outbox.run_once()
        elif kind == "restart":
            await self.restart()
        elif kind == "retry_failed":
            for row in await engine.list_settlements(limit=10_000):
                if row.state is SettlementState.FAILED:
                    await engine.retry_settlement(row.id)
        elif kind == "adaptor":
            if step[1]:
                self.adaptors.bind("sim", self.ledger)
            else:
                self.adaptors.unbind("sim")

    async def snapshot(self, account: str) -> tuple[object, ...]:
        view = await self.engine.get_account(account)
        rows = await self.engine.list_settlements(account, 10_000)
        return view, [(r.id, r.state, r.amount) for r in rows]

    async def check(self) -> None:
        ledger = self.ledger
        known: dict[str, tuple[str, int]] = {}
        for account, (asset_scale, ledger_scale, _) in ACCOUNTS.items():
            view = await self.engine.get_account(account)
            a = view.account
            rows = await self.engine.list_settlements(account, 10_000)
            outgoing = [r for r in rows if r.direction is Direction.OUTGOING]
            incoming = [r for r in rows if r.direction is Direction.INCOMING]
            credited = sum(r.amount for r in incoming)
            debited = a.balance - self.model.applied[account] + credited
            completed = sum(r.amount for r in outgoing if r.state is SettlementState.COMPLETED)
            unfinished = sum(r.amount for r in outgoing if r.state in UNFINISHED)
            assert debited == completed + unfinished + a.outgoing_leftover
            assert view.pending_settlement == unfinished
            assert a.outgoing_leftover >= 0 and a.incoming_leftover >= 0
            for r in outgoing:
                assert r.ledger_amount > 0  # never settle 0
                assert rescale(r.ledger_amount, ledger_scale, asset_scale) == (r.amount, 0)
                known[r.id] = (account, r.ledger_amount)
                if r.state is SettlementState.COMPLETED:
                    assert ledger.paid[r.id] == 1
                    assert r.ledger_settlement_id == ledger.payments[r.id].ledger_id
            back = sum(rescale(r.amount, asset_scale, ledger_scale)[0] for r in incoming)
            assert back + a.incoming_leftover == sum(self.model.received[account].values())
            assert len(incoming) == len(self.model.received[account])
        for key, payment in ledger.payments.items():
            assert ledger.paid[key] == 1
            assert known[key] == (payment.account_id, payment.amount)

    async def heal(self) -> None:
        self.ledger.script.clear()
        self.ledger.ack_script.clear()
        self.adaptors.bind("sim", self.ledger)
        await self.restart()
        for row in await self.engine.list_settlements(limit=10_000):
            if row.state is SettlementState.FAILED:
                await self.engine.retry_settlement(row.id)
        for _ in range(50):
            self.clock.advance(120)
            if not await self.engine.outbox.run_once():
                break
        rows = await self.engine.list_settlements(limit=10_000)
        assert all(r.state is SettlementState.COMPLETED for r in rows), rows
        outgoing = [r for r in rows if r.direction is Direction.OUTGOING]
        assert len(self.ledger.payments) == len(outgoing)  # one payment per settlement
        event(
            f"outgoing settlements: {'0' if not outgoing else '1-4' if len(outgoing) < 5 else '5+'}"
        )
        event(f"retried keys: {sum(1 for n in self.ledger.calls.values() if n > 1) > 0}")
        for account in ACCOUNTS:
            paid = sum(r.ledger_amount for r in outgoing if r.account_id == account)
            assert self.ledger.total_paid(account) == paid
        for r in rows:
            if r.direction is Direction.INCOMING:
                assert self.ledger.acks[r.ledger_settlement_id] >= 1


async def scenario(database: Path | str, plan: list[tuple[Any, ...]]) -> None:
    world = World(database)
    await world.start()
    try:
        for account, (asset_scale, ledger_scale, policy) in ACCOUNTS.items():
            await world.engine.create_account(
                account,
                adaptor="sim",
                asset_code="XYZ",
                asset_scale=asset_scale,
                ledger_scale=ledger_scale,
                policy=policy,
            )
        for step in plan:
            await world.step(step)
            await world.check()
        await world.heal()
        await world.check()
    finally:
        await world.store.close()


@given(plan=st.lists(steps, min_size=10, max_size=40))
@settings(max_examples=100, deadline=None)
def test_money_is_conserved_and_nothing_is_paid_twice(plan: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory(prefix="ilp") as directory:
        asyncio.run(scenario(Path(directory) / "host.db", plan))


@given(plan=st.lists(steps, min_size=10, max_size=40))
@settings(max_examples=25, deadline=None)
def test_money_is_conserved_and_nothing_is_paid_twice_on_postgresql(
    postgres: PostgresServer, plan: list[tuple[Any, ...]]
) -> None:
    # A restart here is an instance that stops while its leases run: they are not freed, they
    # run out (the heal advances the clock past them).
    asyncio.run(scenario(postgres.new_schema(), plan))
