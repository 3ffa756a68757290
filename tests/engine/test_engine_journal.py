"""The clearing-effect journal (proposal 2): every change the engine makes to a balance itself is
journaled in the same transaction, so that a connector keeping its own copy of the balances can
be brought in step; packets' changes are not (they come from the connector)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path

import pytest
from engine_fakes import POLICY, FakeClock, FakeLedger, add_account

from host.engine import Engine, FailedPrecondition, Policy, SettlementPort
from host.store.sqlite import SqliteStore


async def _journaled_engine(
    path: Path,
    ledger: FakeLedger,
    clock: FakeClock,
    *,
    journal: bool = True,
    on_effect: Callable[[], None] | None = None,
) -> tuple[SqliteStore, Engine]:
    store = await SqliteStore.open(path)
    ports: dict[str, SettlementPort] = {"sim": ledger}
    engine = Engine(
        store,
        ports,
        clock=clock,
        rng=random.Random(1),
        journal_clearing=journal,
        on_clearing_effect=on_effect,
    )
    return store, engine


def test_settlement_debits_and_credits_are_journaled_with_their_balance_change(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        ledger, clock = FakeLedger(), FakeClock()
        woken: list[int] = []
        store, engine = await _journaled_engine(
            tmp_path / "e.db", ledger, clock, on_effect=lambda: woken.append(1)
        )
        try:
            await add_account(engine)
            # A packet's change: not journaled (the connector made it).
            assert await engine.apply_balance_change("alice", -500, "p1") == -500
            assert await store.clearing_effects(10) == []
            # Crossing the threshold (-1000) settles back up to settle_to (-200): +1000.
            assert await engine.apply_balance_change("alice", -700, "p2") == -200
            effects = await store.clearing_effects(10)
            assert [(e.account_id, e.delta) for e in effects] == [("alice", 1000)]
            settlement = (await engine.list_settlements("alice"))[0]
            assert effects[0].key == f"engine/debit/{settlement.id}"
            # A replayed packet change journals nothing more.
            assert await engine.apply_balance_change("alice", -700, "p2") == -200
            # A manual settlement and an incoming credit.
            await engine.settle("alice", 150)
            await engine.receive_settlement("L1", "alice", 400)
            effects = await store.clearing_effects(10)
            assert [e.delta for e in effects] == [1000, 150, -400]
            assert effects[2].key.startswith("engine/credit/")
            assert all(len(e.key) <= 128 for e in effects)
            assert len(woken) == 3
            # The engine's balance is the packets' changes plus the journal's effects.
            account = (await engine.get_account("alice")).account
            assert account.balance == -500 - 700 + sum(e.delta for e in effects)
            # Re-delivery of the incoming settlement journals nothing.
            await engine.receive_settlement("L1", "alice", 400)
            assert len(await store.clearing_effects(10)) == 3
            await store.forget_clearing_effect(effects[0].key)
            await store.forget_clearing_effect(effects[0].key)  # gone already: no error
            assert [e.delta for e in await store.clearing_effects(10)] == [150, -400]
        finally:
            await store.close()
        # Durable: a restart finds what was not forgotten.
        store, engine = await _journaled_engine(tmp_path / "e.db", ledger, clock)
        try:
            assert [e.delta for e in await store.clearing_effects(10)] == [150, -400]
        finally:
            await store.close()

    asyncio.run(main())


def test_a_debit_that_goes_wholly_to_the_leftover_is_journaled_too(tmp_path: Path) -> None:
    async def main() -> None:
        ledger, clock = FakeLedger(), FakeClock()
        store, engine = await _journaled_engine(tmp_path / "e.db", ledger, clock)
        try:
            # The account counts in 1/10000, the ledger in 1/100: a debit below 100 units has
            # no settlement row (nothing to pay yet), but the balance went up all the same.
            policy = Policy(settle_threshold=-100, settle_to=-50, min_balance=-5000, max_balance=0)
            await add_account(engine, asset_scale=4, ledger_scale=2, policy=policy)
            assert await engine.apply_balance_change("alice", -120, "p1") == -50
            assert await engine.list_settlements("alice") == []
            effects = await store.clearing_effects(10)
            assert [e.delta for e in effects] == [70]
            assert effects[0].key.startswith("engine/leftover/")
        finally:
            await store.close()

    asyncio.run(main())


def test_refused_operations_journal_nothing_and_proposal_1_journals_nothing(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        ledger, clock = FakeLedger(), FakeClock()
        store, engine = await _journaled_engine(tmp_path / "a.db", ledger, clock)
        try:
            await add_account(engine)
            with pytest.raises(FailedPrecondition):
                await engine.settle("alice", 10)  # nothing is owed
            assert await store.clearing_effects(10) == []
        finally:
            await store.close()
        store, engine = await _journaled_engine(tmp_path / "b.db", ledger, clock, journal=False)
        try:
            await add_account(engine)
            await engine.apply_balance_change("alice", POLICY.settle_threshold - 1, "p1")
            await engine.receive_settlement("L9", "alice", 10)
            assert len(await engine.list_settlements("alice")) == 2
            assert await store.clearing_effects(10) == []
        finally:
            await store.close()

    asyncio.run(main())
