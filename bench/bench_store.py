"""Balance updates per second through the SQLite store: group commit against the alternatives.

Prints figures only (no assertions). In one run, on fresh databases with the same pragmas (WAL,
synchronous=FULL: every acknowledged update is durable):

* ``bare sqlite3``: a plain loop in one thread, one transaction per update (BEGIN IMMEDIATE,
  SELECT, UPDATE, COMMIT): the floor cost of a durable update without any asyncio front.
* ``store, 1 caller``: the store with one caller at a time, so one commit per update.
* ``store, N callers``: N concurrent callers; group commit shares each commit among them.
* ``engine, N callers``: the same through Engine.apply_balance_change (idempotency key recorded,
  settlement decision), the path the connector's balance middleware takes.
* ``packet, N callers``: the store's part of a forwarded packet, through the engine as the
  connector calls it: the in-flight journal's record (one durable transaction, before the
  Prepare goes out), then the resolution with the two balance changes (one more, before the
  Fulfill goes back); packets per second and the median latency of the two together. At one
  caller that latency is what the store adds to a packet at concurrency 1.
* ``bare sqlite3, packet``: the floor of that: the same statements in a plain loop.

Each figure is the median of several rounds. The closing lines give the two ratios the store is
judged by (N callers against one commit per update, one caller against the bare loop) and a
packet's latency at one caller against its bare statements.
``--before DIR`` (another checkout of the repository, e.g. ``git worktree add ../before main``)
runs every case of each round a second time on that checkout's store, right after this
checkout's (each in a child process then), and adds its figures and the ratio of this
checkout's to them.
Run: ``.venv/bin/python bench/bench_store.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path


def _tree() -> Path:
    """The checkout whose store is measured: ``--tree DIR`` (the child of ``--before``), or
    this one. Read before ``host`` is imported, which it decides."""
    if "--tree" in sys.argv:
        return Path(sys.argv[sys.argv.index("--tree") + 1]).resolve()
    return Path(__file__).resolve().parents[1]


sys.path.insert(0, str(_tree()))

from host.clearing_records import BalanceChange, InFlight, Resolution  # noqa: E402
from host.engine import Engine, Policy  # noqa: E402
from host.store import sqlite_packets  # noqa: E402
from host.store.sqlite import SqliteStore  # noqa: E402

ACCOUNTS = 64
NO_SETTLING = Policy(-(10**30), 0, -(10**30), 10**30)
#: (per second, per commit, median latency in ms or None) of one case in one round.
Figures = tuple[float, float, float | None]


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


def bare_packets(path: Path, count: int) -> Figures:
    """The floor of ``packet, 1 caller``: its statements (the store's own, from
    host.store.sqlite_packets) in a plain loop on the store's schema, two durable transactions
    per packet, no asyncio, no engine."""
    store, _ = asyncio.run(open_with_accounts(path))
    asyncio.run(store.close())
    conn = sqlite3.connect(path, isolation_level=None)
    latencies: list[float] = []
    try:
        conn.execute("PRAGMA synchronous = FULL")
        balances = {"a0": 0, "a1": 0}
        begin = time.perf_counter()
        for n in range(count):
            packet = _packet(n)
            start = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            sqlite_packets.journal(conn, packet, time.time())
            conn.execute("COMMIT")
            conn.execute("BEGIN IMMEDIATE")
            sqlite_packets.resolution_of(conn, packet.key)
            for account, delta in (("a0", 10), ("a1", -10)):
                balances[account] += delta
                conn.execute(
                    "UPDATE accounts SET balance = ?, updated_at = ? WHERE id = ?",
                    (str(balances[account]), time.time(), account),
                )
            sqlite_packets.resolve(conn, packet, Resolution.FULFILLED, bytes(32), time.time())
            conn.execute("COMMIT")
            latencies.append(time.perf_counter() - start)
        rate = count / (time.perf_counter() - begin)
        return rate, 0.5, statistics.median(latencies) * 1e3
    finally:
        conn.close()


def _packet(n: int) -> InFlight:
    return InFlight(
        f"{n:032x}", "a0", n.to_bytes(8), "a1", n.to_bytes(8), 10, time.time() + 30, bytes(32)
    )


async def packets(path: Path, callers: int, count: int) -> Figures:
    """Packets per second, commits per packet and the median latency of a packet's two
    transactions, with ``callers`` tasks forwarding ``count`` packets between two accounts."""
    store, engine = await open_with_accounts(path)
    latencies: list[float] = []
    try:

        async def forward(n: int) -> None:
            packet = _packet(n)
            key = packet.key
            changes = [BalanceChange("a0", 10, f"{key}:a0"), BalanceChange("a1", -10, f"{key}:a1")]
            start = time.perf_counter()
            await engine.journal_packet(packet)
            await engine.resolve_packet(packet, Resolution.FULFILLED, bytes(32), changes)
            latencies.append(time.perf_counter() - start)

        commits = store.commits
        rate = await concurrently(callers, count, forward)
        return rate, count / max(1, store.commits - commits), statistics.median(latencies) * 1e3
    finally:
        await store.close()


def cases(args: argparse.Namespace) -> dict[str, Callable[[Path], Figures]]:
    """Every case by name: what a round runs, in this order."""
    updates = args.updates
    table: dict[str, Callable[[Path], Figures]] = {
        "bare sqlite3, 1 txn/update": lambda p: (bare_sqlite(p, updates), 1.0, None),
        "store, 1 caller": lambda p: (*asyncio.run(through_store(p, 1, updates)), None),
    }
    for c in args.callers:
        table[f"store, {c} callers"] = lambda p, c=c: (
            *asyncio.run(through_store(p, c, updates)),
            None,
        )
    for c in args.callers:
        table[f"engine, {c} callers"] = lambda p, c=c: (
            *asyncio.run(through_engine(p, c, updates)),
            None,
        )
    if args.packet_callers:
        table["bare sqlite3, packet"] = lambda p: bare_packets(p, updates)
    for c in args.packet_callers:
        table[f"packet, {c} caller{'s' * (c > 1)}"] = lambda p, c=c: asyncio.run(
            packets(p, c, updates)
        )
    return table


def in_child(args: argparse.Namespace, tree: Path, name: str, path: Path) -> Figures:
    """One case on the store of checkout ``tree``, in a child process (its own ``host``)."""
    command = [sys.executable, __file__, "--tree", str(tree), "--case", name]
    command += ["--updates", str(args.updates), "--callers", *map(str, args.callers)]
    command += ["--packet-callers", *map(str, args.packet_callers), "--db", str(path)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    rate, per_commit, latency = json.loads(out.splitlines()[-1])
    return rate, per_commit, latency


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--updates", type=int, default=1500, help="updates (packets) per round")
    parser.add_argument("--callers", type=int, nargs="*", default=[8, 64])
    parser.add_argument("--packet-callers", type=int, nargs="*", default=[1, 16])
    parser.add_argument(
        "--before", type=Path, help="another checkout: its store measured beside this one"
    )
    # The child of --before: one case on one database, its figures as JSON.
    parser.add_argument("--tree", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    table = cases(args)
    if args.case is not None:
        print(json.dumps(table[args.case](args.db)))
        return
    if args.before is not None:
        args.before = args.before.resolve()

    results: dict[tuple[str, str], list[Figures]] = {}
    trees = ["this"] + (["before"] if args.before is not None else [])
    with tempfile.TemporaryDirectory(prefix="ilpbench") as directory:
        for round_number in range(args.rounds):
            # Interleave the cases (and the checkouts) so that a noisy neighbour hurts them
            # all alike.
            for index, (name, case) in enumerate(table.items()):
                # Either checkout first, by turns: whatever the first of a pair pays (the
                # previous case's files leaving the page cache) is paid by both alike.
                for tree in trees if round_number % 2 == 0 else trees[::-1]:
                    path = Path(directory) / f"r{round_number}-c{index}-{tree}.db"
                    if args.before is None:
                        figures = case(path)
                    else:  # both in a child process, alike
                        checkout = _tree() if tree == "this" else args.before
                        figures = in_child(args, checkout, name, path)
                    results.setdefault((name, tree), []).append(figures)
                    for suffix in ("", "-wal", "-shm", ".lock"):
                        Path(f"{path}{suffix}").unlink(missing_ok=True)

    def median(name: str, tree: str, field: int) -> float:
        values = [f[field] for f in results[(name, tree)] if f[field] is not None]
        return statistics.median(values) if values else float("nan")

    names = list(table)
    print(
        f"SQLite {sqlite3.sqlite_version}, {args.rounds} rounds x {args.updates} updates, "
        f"medians; every update durable (WAL, synchronous=FULL); load average at the end "
        f"{os.getloadavg()[0]:.1f}"
    )
    for tree in trees:
        if len(trees) > 1:
            print(f"\n{'this checkout' if tree == 'this' else f'before: {args.before}'}")
        bare, single = median(names[0], tree, 0), median(names[1], tree, 0)
        # A packet's cases are compared with the packet's own floor and single caller.
        alone = 1 in args.packet_callers
        references = {
            "update": (bare, single),
            "packet": (median("bare sqlite3, packet", tree, 0), median("packet, 1 caller", tree, 0))
            if alone
            else (bare, single),
        }
        print(
            f"{'case':<30}{'per second':>12}{'per commit':>12}{'vs bare':>10}"
            f"{'vs 1 caller':>13}{'p50 ms':>9}"
        )
        for name in names:
            rate, per_commit = median(name, tree, 0), median(name, tree, 1)
            latency = median(name, tree, 2)
            floor, one = references["packet" if "packet" in name else "update"]
            print(
                f"{name:<30}{rate:>12.0f}{per_commit:>12.1f}{rate / floor:>9.2f}x"
                f"{rate / one:>12.2f}x{'' if math.isnan(latency) else f'{latency:>9.3f}'}"
            )
        most = max(args.callers, default=None)
        if most is not None:
            grouped = median(f"store, {most} callers", tree, 0)
            print(f"group commit, {most} callers vs one commit per update: {grouped / single:.2f}x")
        print(f"store, 1 caller vs the bare sqlite3 loop: {single / bare:.2f}x")
        if alone:
            ratio = median("packet, 1 caller", tree, 2) / median("bare sqlite3, packet", tree, 2)
            print(f"a packet's store latency at 1 caller vs its bare statements: {ratio:.2f}x")
    if len(trees) > 1:
        print("\nthis checkout / before, per case (per second; p50 latency)")
        for name in names:
            ratio = median(name, "this", 0) / median(name, "before", 0)
            latency = median(name, "this", 2) / median(name, "before", 2)
            shown = "" if math.isnan(latency) else f"; {latency:.2f}x"
            print(f"{name:<30}{ratio:>9.2f}x{shown}")


if __name__ == "__main__":
    main()
