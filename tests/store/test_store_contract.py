"""The Store contract (host.store.base), one suite for every implementation: SQLite and
PostgreSQL (a real server, started once per session by tests/conftest.py).

What differs between them is tested beside each: test_store_sqlite.py (the file, its lock, its
pragmas), test_store_postgres.py (several instances on one database).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import pytest

from host.clearing_records import InFlight, Resolution
from host.engine.model import (
    Account,
    ClearingEffect,
    Direction,
    IdempotencyRecord,
    Policy,
    Settlement,
    SettlementState,
)
from host.engine.store import Store
from host.ilp.outcome import Status
from host.store import StoreError
from host.store.opening import open_store
from tests.postgres_server import PostgresServer

T = TypeVar("T")
BIG = 10**70  # far beyond a 64-bit integer


@dataclass(frozen=True)
class Backend:
    """Where a test's database is: reopening it gives the same data."""

    name: str
    database: Path | str

    async def open(self) -> Store:
        return await open_store(self.database)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return Backend("sqlite", tmp_path / "host.db")
    server: PostgresServer = request.getfixturevalue("postgres")
    return Backend("postgres", server.new_schema())


def run(coro: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await coro()

    return asyncio.run(main())


def account(account_id: str = "alice", balance: int = 0, adaptor: str = "sim") -> Account:
    return Account(
        id=account_id,
        adaptor=adaptor,
        asset_code="ETH",
        asset_scale=18,
        ledger_scale=18,
        policy=Policy(-BIG, -BIG // 2, -2 * BIG, BIG),
        balance=balance,
        outgoing_leftover=BIG + 1,
        incoming_leftover=3,
        liquidity=BIG * 7,
        created_at=1.5,
        updated_at=2.5,
    )


def outgoing(
    settlement_id: str, next_attempt_at: float | None = 0.0, account_id: str = "alice"
) -> Settlement:
    return Settlement(
        id=settlement_id,
        account_id=account_id,
        adaptor="sim",
        direction=Direction.OUTGOING,
        state=SettlementState.PENDING,
        amount=BIG,
        ledger_amount=BIG * 10,
        next_attempt_at=next_attempt_at,
        created_at=1.0,
        updated_at=1.0,
    )


def test_data_survives_reopening_with_amounts_beyond_64_bits(backend: Backend) -> None:
    async def main() -> None:
        store = await backend.open()
        async with store.transaction() as tx:
            await tx.insert_account(account(balance=-BIG))
            await tx.insert_settlement(outgoing("s1"))
        await store.close()
        store = await backend.open()
        try:
            assert await store.get_account("alice") == account(balance=-BIG)
            assert await store.get_settlement("s1") == outgoing("s1")
            assert await store.pending_settlement_totals(None) == {"alice": BIG}
            assert await store.list_settlements("alice", 10) == [outgoing("s1")]
            assert await store.get_account("bob") is None
            assert await store.get_settlement("s2") is None
        finally:
            await store.close()

    run(main)


def test_settlements_list_newest_first_and_unfinished_ones_add_up(backend: Backend) -> None:
    async def main() -> None:
        store = await backend.open()
        try:
            async with store.transaction() as tx:
                await tx.insert_account(account())
                await tx.insert_account(account("bob"))
                await tx.insert_settlement(outgoing("a1"))
                await tx.insert_settlement(outgoing("b1", account_id="bob"))
                await tx.insert_settlement(
                    replace(outgoing("a2"), state=SettlementState.FAILED, amount=5)
                )
                await tx.insert_settlement(
                    replace(outgoing("a3"), state=SettlementState.COMPLETED, amount=7)
                )
                assert await tx.has_failed_settlement("alice")
                assert not await tx.has_failed_settlement("bob")
            assert [s.id for s in await store.list_settlements(None, 10)] == [
                "a3", "a2", "b1", "a1",
            ]  # fmt: skip
            assert [s.id for s in await store.list_settlements("alice", 2)] == ["a3", "a2"]
            assert await store.pending_settlement_totals(None) == {"alice": BIG + 5, "bob": BIG}
            assert await store.pending_settlement_totals("bob") == {"bob": BIG}
            assert [a.id for a in await store.list_accounts()] == ["alice", "bob"]
        finally:
            await store.close()

    run(main)


def test_claiming_leases_due_rows_to_one_worker(backend: Backend) -> None:
    async def main() -> None:
        store = await backend.open()
        try:
            async with store.transaction() as tx:
                await tx.insert_account(account())
                await tx.insert_settlement(outgoing("due-2", 20.0))
                await tx.insert_settlement(outgoing("due-1", 10.0))
                await tx.insert_settlement(outgoing("later", 500.0))
                completed = replace(
                    outgoing("done", 0.0), state=SettlementState.COMPLETED, next_attempt_at=None
                )
                await tx.insert_settlement(completed)
            assert await store.next_outbox_due() == 10.0
            first = await store.claim_outbox(10, now=100.0, lease=30.0)
            assert [(r.id, r.lease_until) for r in first] == [("due-1", 130.0), ("due-2", 130.0)]
            assert await store.claim_outbox(10, now=110.0, lease=30.0) == []  # leased
            assert await store.next_outbox_due() == 130.0
            again = await store.claim_outbox(1, now=131.0, lease=30.0)  # lease expired
            assert [r.id for r in again] == ["due-1"]
            assert await store.resume_outbox(now=140.0) == 3
            assert [r.id for r in await store.claim_outbox(10, 140.0, 30.0)] == ["due-2", "later"]
            assert (await store.get_settlement("due-1")).lease_until == 161.0  # type: ignore[union-attr]
        finally:
            await store.close()

    run(main)


def test_concurrent_claims_never_share_a_row(backend: Backend) -> None:
    async def main() -> None:
        store = await backend.open()
        try:
            async with store.transaction() as tx:
                await tx.insert_account(account())
                for n in range(60):
                    await tx.insert_settlement(outgoing(f"s{n:02}", float(n)))
            batches = await asyncio.gather(
                *(store.claim_outbox(7, now=100.0, lease=30.0) for _ in range(12))
            )
            claimed = [row.id for batch in batches for row in batch]
            assert sorted(claimed) == [f"s{n:02}" for n in range(60)]  # each once, none left
        finally:
            await store.close()

    run(main)


def test_reads_outside_a_transaction_see_committed_data_only(backend: Backend) -> None:
    async def main() -> None:
        store = await backend.open()
        try:
            async with store.transaction() as tx:
                await tx.insert_account(account(balance=1))
            async with store.transaction() as tx:
                await tx.update_account(account(balance=2))
                assert (await tx.lock_account("alice")) == account(balance=2)
                assert (await store.get_account("alice")) == account(balance=1)
            assert (await store.get_account("alice")) == account(balance=2)
        finally:
            await store.close()

    run(main)


def test_a_failed_transaction_changes_nothing(backend: Backend) -> None:
    async def main() -> None:
        store = await backend.open()
        try:
            async with store.transaction() as tx:
                await tx.insert_account(account(balance=1))
            with pytest.raises(ZeroDivisionError):
                async with store.transaction() as tx:
                    await tx.update_account(account(balance=5))
                    await tx.insert_settlement(outgoing("s1"))
                    assert (await tx.lock_account("alice")) == account(balance=5)
                    _ = 1 / 0
            with pytest.raises(StoreError, match=r"(?i)unique"):
                async with store.transaction() as tx:
                    await tx.update_account(account(balance=6))
                    await tx.insert_account(account())  # a duplicate id
            with pytest.raises(StoreError, match="does not exist"):
                async with store.transaction() as tx:
                    await tx.update_account(account(balance=7))
                    await tx.update_account(account("nobody"))
            assert await store.get_account("alice") == account(balance=1)
            assert await store.get_settlement("s1") is None
        finally:
            await store.close()

    run(main)


def test_locked_read_modify_writes_of_one_account_serialize(backend: Backend) -> None:
    async def main() -> None:
        store = await backend.open()
        try:
            async with store.transaction() as tx:
                await tx.insert_account(account(balance=0))

            async def add_one() -> None:
                async with store.transaction() as tx:
                    current = await tx.lock_account("alice")
                    assert current is not None
                    await asyncio.sleep(0)  # let the others try meanwhile
                    await tx.update_account(replace(current, balance=current.balance + 1))

            await asyncio.gather(*(add_one() for _ in range(40)))
            assert (await store.get_account("alice")).balance == 40  # type: ignore[union-attr]
        finally:
            await store.close()

    run(main)


def test_concurrent_creators_of_one_account_see_one_row(backend: Backend) -> None:
    async def main() -> None:
        store = await backend.open()
        try:

            async def create(n: int) -> bool:
                async with store.transaction() as tx:
                    if await tx.lock_account("carol") is not None:
                        return False
                    await asyncio.sleep(0)
                    await tx.insert_account(account("carol", balance=n))
                    return True

            created = await asyncio.gather(*(create(n) for n in range(10)))
            assert created.count(True) == 1
            assert (await store.get_account("carol")).balance == created.index(True)  # type: ignore[union-attr]
        finally:
            await store.close()

    run(main)


def test_idempotency_records_are_kept_until_forgotten(backend: Backend) -> None:
    async def main() -> None:
        store = await backend.open()
        try:
            old = IdempotencyRecord("balance", "k1", "alice", "alice 5", "5", 10.0)
            new = IdempotencyRecord("balance", "k2", "alice", "alice 6", "11", 20.0)
            other_scope = IdempotencyRecord("settle", "k1", "alice", "alice ", "s1", 10.0)
            async with store.transaction() as tx:
                await tx.insert_account(account())
                for record in (old, new, other_scope):
                    await tx.record_idempotency(record)
            with pytest.raises(StoreError):
                async with store.transaction() as tx:
                    await tx.record_idempotency(replace(old, result="6"))
            async with store.transaction() as tx:
                assert await tx.get_idempotency("balance", "k1") == old
                assert await tx.get_idempotency("settle", "k1") == other_scope
                assert await tx.get_idempotency("balance", "k3") is None
            assert await store.forget_idempotency(created_before=15.0) == 2
            async with store.transaction() as tx:
                assert await tx.get_idempotency("balance", "k1") is None
                assert await tx.get_idempotency("balance", "k2") == new
        finally:
            await store.close()

    run(main)


def test_clearing_effects_wait_in_order_until_confirmed(backend: Backend) -> None:
    async def main() -> None:
        store = await backend.open()
        try:
            effects = [
                ClearingEffect("e/2", "alice", -BIG, 1.0),
                ClearingEffect("e/1", "alice", BIG, 2.0),
                ClearingEffect("e/3", "alice", 1, 3.0),
            ]
            async with store.transaction() as tx:
                await tx.insert_account(account())
                for effect in effects:
                    await tx.record_clearing_effect(effect)
            assert await store.clearing_effects(2) == effects[:2]
            assert await store.count_clearing_effects() == 3
            await store.forget_clearing_effect("e/2")
            await store.forget_clearing_effect("e/2")  # gone already: no error
            assert await store.clearing_effects(10) == effects[1:]
            assert await store.count_clearing_effects() == 2
        finally:
            await store.close()

    run(main)


def test_journaled_packets_wait_until_resolved_and_answer_their_source(backend: Backend) -> None:
    fulfillment = bytes(range(32))
    packet = InFlight(
        "ab" * 32, "alice", b"\x01" * 32, "bob", b"\x02" * 32, BIG, 1234.5, b"\x03" * 32
    )
    here = InFlight("cd" * 32, "alice", b"\x04" * 32, None, b"", 7, 99.0, b"\x05" * 32)

    async def main() -> None:
        store = await backend.open()
        try:
            async with store.transaction() as tx:
                await tx.journal_packet(packet, 10.0)
                await tx.journal_packet(packet, 11.0)  # a replay: nothing
            assert await store.unresolved_packets() == [packet]
            assert (await store.packet_outcome("alice", packet.source_id)).status == Status.PENDING
            # A failed transaction resolves nothing.
            with pytest.raises(StoreError):
                async with store.transaction() as tx:
                    assert await tx.packet_resolution(packet.key) is None
                    await tx.resolve_packet(packet, Resolution.FULFILLED, fulfillment, 12.0)
                    await tx.update_account(account("nobody"))
            assert await store.unresolved_packets() == [packet]
            async with store.transaction() as tx:
                await tx.resolve_packet(packet, Resolution.FULFILLED, fulfillment, 12.0)
                await tx.resolve_packet(here, Resolution.FULFILLED, fulfillment, 30.0)
            async with store.transaction() as tx:
                # Resolved stays resolved.
                await tx.resolve_packet(packet, Resolution.REJECTED, b"", 13.0)
                assert await tx.packet_resolution(packet.key) == Resolution.FULFILLED
            assert await store.unresolved_packets() == []
            answer = await store.packet_outcome("alice", packet.source_id)
            assert (answer.status, answer.fulfillment) == (Status.FULFILLED, fulfillment)
            assert (await store.packet_outcome("bob", packet.source_id)).status == Status.UNKNOWN
            # Forgotten with the idempotency keys of their time.
            await store.forget_idempotency(created_before=20.0)
            assert (await store.packet_outcome("alice", packet.source_id)).status == Status.UNKNOWN
            assert (await store.packet_outcome("alice", here.source_id)).status == Status.FULFILLED
        finally:
            await store.close()

    run(main)


def test_liquidity_is_recorded_on_every_account_of_an_adaptor(backend: Backend) -> None:
    async def main() -> None:
        store = await backend.open()
        try:
            async with store.transaction() as tx:
                await tx.insert_account(account("a1"))
                await tx.insert_account(account("a2"))
                await tx.insert_account(account("b1", adaptor="other"))
            assert await store.set_liquidity("sim", BIG * 3, now=9.0) == 2
            a1 = await store.get_account("a1")
            assert a1 is not None and (a1.liquidity, a1.updated_at) == (BIG * 3, 9.0)
            assert await store.set_liquidity("sim", None, now=10.0) == 2
            assert (await store.get_account("a2")).liquidity is None  # type: ignore[union-attr]
            assert (await store.get_account("b1")).liquidity == BIG * 7  # type: ignore[union-attr]
        finally:
            await store.close()

    run(main)


def test_a_closed_store_refuses_work_and_closes_twice(backend: Backend) -> None:
    async def main() -> None:
        store = await backend.open()
        assert await store.try_lead()  # alone on its database
        await store.close()
        await store.close()
        with pytest.raises(StoreError, match="closed"):
            await store.get_account("alice")
        with pytest.raises(StoreError, match="closed"):
            async with store.transaction():
                pass

    run(main)


def test_settled_totals_sum_every_settlement_of_an_account_by_direction(backend: Backend) -> None:
    async def main() -> None:
        store = await backend.open()
        try:
            assert await store.settled_totals("alice") == (0, 0)
            incoming = replace(
                outgoing("in1"), direction=Direction.INCOMING, state=SettlementState.CREDITED
            )
            async with store.transaction() as tx:
                await tx.insert_account(account())
                await tx.insert_account(account("bob"))
                await tx.insert_settlement(outgoing("a1"))
                await tx.insert_settlement(
                    replace(outgoing("a2"), state=SettlementState.FAILED, amount=5)
                )
                await tx.insert_settlement(replace(incoming, amount=BIG * 3))
                await tx.insert_settlement(outgoing("b1", account_id="bob"))
            assert await store.settled_totals("alice") == (BIG + 5, BIG * 3)
            assert await store.settled_totals("bob") == (BIG, 0)
            # Running totals: a later transaction adds to them, a failed one leaves them be,
            # a state change (the outbox's) adds nothing, and they survive reopening.
            async with store.transaction() as tx:
                await tx.insert_settlement(replace(outgoing("a3"), amount=7))
                await tx.update_settlement(
                    replace(outgoing("a1"), state=SettlementState.COMPLETED, attempts=1)
                )
            with pytest.raises(ZeroDivisionError):
                async with store.transaction() as tx:
                    await tx.insert_settlement(replace(outgoing("a4"), amount=11))
                    _ = 1 / 0
        finally:
            await store.close()
        store = await backend.open()
        try:
            assert await store.settled_totals("alice") == (BIG + 12, BIG * 3)
            assert await store.settled_totals("bob") == (BIG, 0)
        finally:
            await store.close()

    run(main)
