"""The engine's clearing book for reconciliation (Engine.clearing_book), on a real SQLite store:
derived from the balance, the leftover and the settlements, it leaves the packets' net."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from engine_fakes import FakeClock, FakeLedger, add_account, open_engine

from host.clearing_rules import ClearingBook
from host.engine import Direction, InvalidArgument, NotFound, Policy, SettlementPort


def test_the_book_separates_settlements_from_packets(tmp_path: Path) -> None:
    async def main() -> None:
        ledger, clock = FakeLedger(), FakeClock()
        ports: dict[str, SettlementPort] = {"sim": ledger}
        store, engine = await open_engine(tmp_path / "host.db", ports, clock)
        try:
            # Account in 1/10^4, ledger in 1/100: settlements leave a leftover behind.
            await add_account(
                engine, asset_scale=4, ledger_scale=2, policy=Policy(-100, -20, -500, 500)
            )
            assert await engine.clearing_book("alice") == ClearingBook(4, 0, 0, 0)
            packets = 0
            for delta in (-100, -80, 30, -95):  # packets both ways; settles when <= -100
                await engine.apply_balance_change("alice", delta)
                packets += delta
            await engine.receive_settlement("T1", "alice", 3)  # the peer paid us 300
            book = await engine.clearing_book("alice")
            view = await engine.get_account("alice")
            rows = await engine.list_settlements("alice")
            paid = sum(row.amount for row in rows if row.direction is Direction.OUTGOING)
            # The leftover is not paid: still owed to the peer, in the balance, not settled.
            leftover = view.account.outgoing_leftover
            assert leftover > 0
            assert book.balance == view.account.balance - leftover
            assert book.settled_out == paid > 0
            assert book.settled_in == 300
            assert book.balance - book.settled_out + book.settled_in == packets
            with pytest.raises(NotFound, match="bob"):
                await engine.clearing_book("bob")
            with pytest.raises(InvalidArgument):
                await engine.clearing_book("no spaces")
        finally:
            await store.close()

    asyncio.run(main())
