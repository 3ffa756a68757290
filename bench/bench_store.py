"""Balance updates per second through the SQLite store: group commit against the alternatives.

Prints figures only (no assertions). In one run, on fresh databases with the same pragmas (WAL,
synchronous=FULL: every acknowledged update is durable):

* ``bare sqlite3``: a plain loop in one thread, one transaction per update (BEGIN IMMEDIATE,
  SELECT, UPDATE, COMMIT): the floor cost of a durable update without any asyncio front.
* ``store, 1 caller``: the store with one caller at a time, so one commit per update.
* ``store, N callers``: N concurrent callers; group commit shares each commit among them.
* ``engine, N callers``: the same through Engine.apply_balance_change (idempotency key recorded,
  settlement decision), the path the connector's balance middleware takes.

Each figure is the median of several rounds; the last two lines are the two ratios the store is
judged by: N callers against one commit per update, and one caller against the bare loop.
Run: ``.venv/bin/python bench/bench_store.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from host.engine import Engine, Policy
from host.store.sqlite import SqliteStore

ACCOUNTS = 64
NO_SETTLING = Policy(-(10**30), 0, -(10**30), 10**30)


def bare_sqlite(path: Path, updates: int) -> float:
    """Updates per second of a plain sqlite3 loop, one durable transaction per update."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute("CREATE TABLE IF NOT EXISTS accounts (id TEXT PRIMARY KEY, balance TEXT)")
        conn.executemany(
            "INSERT OR IGNORE INTO accounts VALUES (?, '0')", [(f"a{i}",) for i in range(ACCOUNTS)]
        )
        start = time.perf_counter()
        for n in range(updates):
            account = f"a{n % ACCOUNTS}"
            conn.execute("BEGIN IMMEDIATE")
            (balance,) = conn.execute(
                "SELECT balance FROM accounts WHERE id = ?", (account,)
            ).fetchone()
            conn.execute(
                "UPDATE accounts SET balance = ? WHERE id = ?", (str(int(balance) + 1), account)
            )
            conn.execute("COMMIT")
        return updates / (time.perf_counter() - start)
    finally:
        conn.close()


async def open_with_accounts(path: Path) -> tuple[SqliteStore, Engine]:
    store = await SqliteStore.open(path)
    engine = Engine(store, {})
    for i in range(ACCOUNTS):
        await engine.create_account(
            f"a{i}",
            adaptor="sim",
            asset_code="USD",
            asset_scale=2,
            ledger_scale=2,
            policy=NO_SETTLING,
        )
    return store, engine


async def concurrently(
    callers: int, updates: int, update: Callable[[int], Awaitable[object]]
) -> float:
    """Updates per second with ``callers`` tasks sharing ``updates`` updates."""
    counter = iter(range(updates))

    async def caller() -> None:
        for n in counter:
            await update(n)

    start = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    return updates / (time.perf_counter() - start)


async def through_store(path: Path, callers: int, updates: int) -> tuple[float, float]:
    """(updates per second, updates per commit) with raw store transactions."""
    store, _ = await open_with_accounts(path)
    try:

        async def update(n: int) -> None:
            async with store.transaction() as tx:
                account = await tx.lock_account(f"a{n % ACCOUNTS}")
                assert account is not None
                await tx.update_account(replace(account, balance=account.balance + 1))

        commits = store.commits
        rate = await concurrently(callers, updates, update)
        return rate, updates / max(1, store.commits - commits)
    finally:
        await store.close()


async def through_engine(path: Path, callers: int, updates: int) -> tuple[float, float]:
    """(updates per second, updates per commit) with Engine.apply_balance_change."""
    store, engine = await open_with_accounts(path)
    try:

        async def update(n: int) -> None:
            await engine.apply_balance_change(f"a{n % ACCOUNTS}", 1, f"{path.name}-{n}")

        commits = store.commits
        rate = await concurrently(callers, updates, update)
        return rate, updates / max(1, store.commits - commits)
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--updates", type=int, default=1500, help="updates per round")
    parser.add_argument("--callers", type=int, nargs="*", default=[8, 64])
    args = parser.parse_args()

    results: dict[str, list[float]] = {}
    batching: dict[str, list[float]] = {}
    cases: list[tuple[str, Callable[[Path], float | tuple[float, float]]]] = [
        ("bare sqlite3, 1 txn/update", lambda p: bare_sqlite(p, args.updates)),
        ("store, 1 caller", lambda p: asyncio.run(through_store(p, 1, args.updates))),
    ]
    for c in args.callers:
        cases.append(
            (f"store, {c} callers", lambda p, c=c: asyncio.run(through_store(p, c, args.updates)))
        )
    for c in args.callers:
        cases.append(
            (f"engine, {c} callers", lambda p, c=c: asyncio.run(through_engine(p, c, args.updates)))
        )
    with tempfile.TemporaryDirectory(prefix="ilpbench") as directory:
        for round_number in range(args.rounds):
            # Interleave the cases so that a noisy neighbour hurts them all alike.
            for index, (name, case) in enumerate(cases):
                outcome = case(Path(directory) / f"r{round_number}-c{index}.db")
                rate, per_commit = outcome if isinstance(outcome, tuple) else (outcome, 1.0)
                results.setdefault(name, []).append(rate)
                batching.setdefault(name, []).append(per_commit)

    bare = statistics.median(results[cases[0][0]])
    single = statistics.median(results[cases[1][0]])
    print(
        f"SQLite {sqlite3.sqlite_version}, {args.rounds} rounds x {args.updates} updates, "
        f"medians; every update durable (WAL, synchronous=FULL)"
    )
    print(f"{'case':<30}{'updates/s':>12}{'per commit':>12}{'vs bare':>10}{'vs 1 caller':>13}")
    for name, _ in cases:
        rate = statistics.median(results[name])
        per_commit = statistics.median(batching[name])
        print(
            f"{name:<30}{rate:>12.0f}{per_commit:>12.1f}{rate / bare:>9.2f}x{rate / single:>12.2f}x"
        )
    most = max(args.callers, default=None)
    if most is not None:
        grouped = statistics.median(results[f"store, {most} callers"])
        print(f"group commit, {most} callers vs one commit per update: {grouped / single:.2f}x")
    print(f"store, 1 caller vs the bare sqlite3 loop: {single / bare:.2f}x")


if __name__ == "__main__":
    main()
