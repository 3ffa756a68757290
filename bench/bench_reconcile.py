"""What a reconciliation reads as the history grows: an account's book on a SQLite store holding N
settlements.

Fills a store at the schema before the running settled totals (version 3) with N completed
settlements of one account (half outgoing, half incoming), through plain sqlite3; then measures,
interleaved, in rounds:

- the scan the running totals replaced: every settlement of the account read and summed in
  Python (what ``Store.settled_totals`` did up to schema version 3);
- ``Engine.clearing_book`` on the migrated store (the account row twice and its totals row),
  which is what each ``Reconcile`` takes three times (ours before and after, the peer's).

And once: opening the filled store, which migrates it to the running totals (one pass over the
settlements). Prints Markdown; asserts nothing.

    .venv/bin/python bench/bench_reconcile.py [--settlements 1000000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from host.engine import Engine  # noqa: E402
from host.engine.model import (  # noqa: E402
    Account,
    Direction,
    Policy,
    Settlement,
    SettlementState,
)
from host.store.rows import (  # noqa: E402
    ACCOUNT_COLUMNS,
    SETTLEMENT_COLUMNS,
    account_values,
    settlement_values,
)
from host.store.sqlite import SqliteStore  # noqa: E402
from host.store.sqlite_schema import MIGRATIONS, migrate  # noqa: E402

BATCH = 100_000
AMOUNT = 10_000


def fill(path: Path, count: int) -> None:
    """A version-3 database with one account and ``count`` completed settlements of it."""
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        migrate(conn, MIGRATIONS[:3])
        account = Account(
            id="bob",
            adaptor="simledger",
            asset_code="USD",
            asset_scale=6,
            ledger_scale=2,
            policy=Policy(-(10**9), 0, -(10**12), 10**12),
            created_at=0.0,
            updated_at=0.0,
        )
        conn.execute(
            f"INSERT INTO accounts ({ACCOUNT_COLUMNS}) VALUES ({', '.join('?' * 15)})",
            account_values(account, str),
        )
        insert = f"INSERT INTO settlements ({SETTLEMENT_COLUMNS}) VALUES ({', '.join('?' * 14)})"
        for start in range(0, count, BATCH):
            rows = [
                settlement_values(
                    Settlement(
                        id=f"s{i}",
                        account_id="bob",
                        adaptor="simledger",
                        direction=Direction.OUTGOING if i % 2 else Direction.INCOMING,
                        state=SettlementState.COMPLETED,
                        amount=AMOUNT,
                        ledger_amount=AMOUNT // 10_000,
                        ledger_settlement_id=f"ledger-{i}",
                        created_at=float(i),
                        updated_at=float(i),
                    ),
                    str,
                )
                for i in range(start, min(count, start + BATCH))
            ]
            conn.execute("BEGIN")
            conn.executemany(insert, rows)
            conn.execute("COMMIT")


def scan(path: Path) -> float:
    """The summing scan of schema version 3, ms."""
    with closing(sqlite3.connect(path)) as conn:
        began = time.perf_counter()
        totals = {"outgoing": 0, "incoming": 0}
        for direction, amount in conn.execute(
            "SELECT direction, amount FROM settlements WHERE account_id = ?", ("bob",)
        ):
            totals[direction] += int(amount)
        return (time.perf_counter() - began) * 1000


async def measure(path: Path, rounds: int) -> tuple[float, list[float], list[float]]:
    began = time.perf_counter()
    store = await SqliteStore.open(path)
    opened = (time.perf_counter() - began) * 1000
    try:
        engine = Engine(store, {})
        scans, books = [], []
        for _ in range(rounds):
            scans.append(scan(path))
            began = time.perf_counter()
            await engine.clearing_book("bob")
            books.append((time.perf_counter() - began) * 1000)
        return opened, scans, books
    finally:
        await store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settlements", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="ilpbench"))
    try:
        path = directory / "host.db"
        fill(path, args.settlements)
        opened, scans, books = asyncio.run(measure(path, args.rounds))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    scan_ms, book_ms = statistics.median(scans), statistics.median(books)
    print(f"{args.settlements:,} settlements of one account, medians of {args.rounds} rounds\n")
    print("| measure | ms |\n|---|---:|")
    print(f"| the scan of schema version 3 (every settlement summed) | {scan_ms:.1f} |")
    print(f"| Engine.clearing_book with the running totals | {book_ms:.3f} |")
    print(f"| scan / clearing_book | {scan_ms / book_ms:.0f}x |")
    print(f"| opening the store once: migration to the running totals | {opened:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
