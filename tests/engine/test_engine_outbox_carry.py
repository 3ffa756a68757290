"""The running outbox worker carries a new settlement straight after the debit's commit (no
claim), the row durable before SendMoney; a batch at a time; claims the rest as before."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from engine_fakes import FakeLedger, add_account

from host.engine import Engine, SendResult, Settlement, SettlementState
from host.store.sqlite import SqliteStore
from tests.polling import wait_until_async


class HeldLedger(FakeLedger):
    """A FakeLedger whose payments wait until released; each call first reads the row that
    asks for it through the store's reader (committed data only)."""

    def __init__(self, store: SqliteStore) -> None:
        super().__init__()
        self.store = store
        self.release = asyncio.Event()
        self.seen: dict[str, Settlement | None] = {}

    async def send_money(
        self, account_id: str, ledger_amount: int, idempotency_key: str
    ) -> SendResult:
        self.seen[idempotency_key] = await self.store.get_settlement(idempotency_key)
        await self.release.wait()
        return await super().send_money(account_id, ledger_amount, idempotency_key)


def test_a_settlement_is_carried_at_once_durable_and_a_batch_at_a_time(tmp_path: Path) -> None:
    async def main() -> None:
        path = tmp_path / "host.db"
        store = await SqliteStore.open(path)
        ledger = HeldLedger(store)
        engine = Engine(store, {"sim": ledger}, outbox_batch=2)
        await add_account(engine)
        await engine.apply_balance_change("alice", -4000)  # owes 4000: settled down to -200
        ledger.release.set()
        [claimed] = await engine.list_settlements()
        assert claimed.lease_until is None  # the worker does not run: it waits for a claim
        assert await engine.outbox.run_once() == 1 and len(ledger.paid) == 1
        worker = asyncio.create_task(engine.run_outbox())
        try:
            await asyncio.sleep(0)  # the worker runs
            ledger.release.clear()
            rows = [await engine.settle("alice", 10) for _ in range(3)]
            # The first two are leased to the worker by their own transaction, the third
            # waits to be claimed: two are carried already.
            assert [row.lease_until is not None for row in rows] == [True, True, False]
            # Three: the claimed settlement paid above, and the two carried ones.
            await wait_until_async(lambda: len(ledger.seen) >= 3, "two payments asked")
            for row in rows[:2]:
                seen = ledger.seen[row.id]
                assert seen is not None and seen.state is SettlementState.PENDING  # committed
            ledger.release.set()

            async def all_paid() -> bool:
                listed = await engine.list_settlements()
                return all(s.state is SettlementState.COMPLETED for s in listed)

            await wait_until_async(all_paid, "every settlement completed")
            assert all(ledger.paid[row.id] == 1 for row in rows)
        finally:
            worker.cancel()
            with pytest.raises(asyncio.CancelledError):
                await worker
            await store.close()

    asyncio.run(main())


def test_a_carried_settlement_left_by_a_stopped_worker_is_resumed_at_start_up(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        path = tmp_path / "host.db"
        store = await SqliteStore.open(path)
        ledger = HeldLedger(store)
        engine = Engine(store, {"sim": ledger})
        await add_account(engine)
        await engine.apply_balance_change("alice", -1000)
        ledger.release.set()
        assert await engine.outbox.run_once() == 1 and len(ledger.paid) == 1
        ledger.release.clear()
        worker = asyncio.create_task(engine.run_outbox())
        await asyncio.sleep(0)
        row = await engine.settle("alice", 10)
        await wait_until_async(lambda: row.id in ledger.seen, "the payment asked")
        worker.cancel()  # the host stops mid-call: the row keeps its lease
        with pytest.raises(asyncio.CancelledError):
            await worker
        await store.close()

        store = await SqliteStore.open(path)  # a restart clears the lease
        ledger.store = store
        engine = Engine(store, {"sim": ledger})
        ledger.release.set()
        try:
            assert await engine.reconcile() == 1
            [resumed] = [s for s in await engine.list_settlements() if s.id == row.id]
            assert resumed.state is SettlementState.COMPLETED and ledger.paid[row.id] == 1
        finally:
            await store.close()

    asyncio.run(main())
