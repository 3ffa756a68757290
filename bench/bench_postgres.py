"""Balance updates and settlements per second on PostgreSQL with 1, 2 and 4 host instances, next to
SQLite and a bare psycopg loop, all in one run.

Prints figures only (no assertions). It starts its own PostgreSQL server (tests/postgres_server.py)
with the data directory on disk and durable commits (``fsync=on``, ``synchronous_commit=on``), and
compares, as medians of several rounds:

* ``bare psycopg``: one connection, one transaction per update (BEGIN, SELECT ... FOR UPDATE,
  UPDATE, COMMIT): the floor cost of a durable row-locked update from Python.
* ``engine on SQLite``: Engine.apply_balance_change (idempotency key, settlement decision) with
  CALLERS concurrent callers on the SQLite store (group commit), in this process.
* ``engine on PostgreSQL, N instances``: N processes, each an engine on one shared database with
  CALLERS concurrent callers; the figure is all their updates over the wall time from the first
  start to the last finish.

Settlements: the same setups, but every balance change crosses the threshold, so each one is a
debit, an outbox row claimed (SKIP LOCKED on PostgreSQL), a payment and its record; the payment
is an in-process ledger that answers at once, so the figure is the store's. A settlement counts
once it is recorded as completed.

    .venv/bin/python bench/bench_postgres.py [--rounds 3] [--updates 2000] [--instances 1 2 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg

from host.engine import Engine, Policy
from host.engine.ports import SendResult
from host.engine.store import Store
from host.store.opening import open_store
from tests.postgres_server import postgres_server

ACCOUNTS = 64
CALLERS = 16
NO_SETTLING = Policy(-(10**30), 0, -(10**30), 10**30)
#: Every change of -1 crosses the threshold and settles it back to 0.
ALWAYS_SETTLING = Policy(-1, 0, -(10**30), 10**30)
#: Durable, as a production server would run.
DURABLE = ("fsync=on", "synchronous_commit=on", "max_connections=200")


class InstantLedger:
    """Pays at once: the settlement figures measure the store, not a ledger."""

    async def send_money(self, account_id: str, ledger_amount: int, key: str) -> SendResult:
        return SendResult(f"paid-{key}", completed=True)

    async def acknowledge_incoming(self, settlement_id: str) -> None:
        return None


async def open_engine(database: Path | str, policy: Policy) -> tuple[Store, Engine]:
    store = await open_store(database)
    engine = Engine(store, {"sim": InstantLedger()}, outbox_batch=64)
    for i in range(ACCOUNTS):
        await engine.create_account(
            f"a{i}", adaptor="sim", asset_code="USD", asset_scale=2, ledger_scale=2,
            policy=policy,
        )  # fmt: skip
    return store, engine


async def work(database: Path | str, kind: str, updates: int, tag: str) -> tuple[float, float]:
    """Run ``updates`` balance changes (kind "updates") or settlements; (start, end) times."""
    policy = NO_SETTLING if kind == "updates" else ALWAYS_SETTLING
    store, engine = await open_engine(database, policy)
    outbox = asyncio.create_task(engine.run_outbox())
    try:
        counter = iter(range(updates))
        delta = 1 if kind == "updates" else -1

        async def caller() -> None:
            for n in counter:
                await engine.apply_balance_change(f"a{n % ACCOUNTS}", delta, f"{tag}-{n}")

        start = time.time()
        await asyncio.gather(*(caller() for _ in range(CALLERS)))
        if kind == "settlements":
            # Until every settlement is recorded as paid (those of other instances too).
            while await store.next_outbox_due() is not None:
                engine.outbox.wake()
                await asyncio.sleep(0.005)
        return start, time.time()
    finally:
        outbox.cancel()
        await asyncio.gather(outbox, return_exceptions=True)
        await store.close()


def bare_psycopg(url: str, updates: int) -> float:
    """Updates per second of a plain psycopg loop, one durable transaction per update."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE bare (id text PRIMARY KEY, balance numeric NOT NULL)")
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO bare VALUES (%s, 0)", [(f"a{i}",) for i in range(ACCOUNTS)]
            )
        start = time.perf_counter()
        for n in range(updates):
            with conn.transaction():
                (balance,) = conn.execute(  # type: ignore[misc]
                    "SELECT balance FROM bare WHERE id = %s FOR UPDATE", (f"a{n % ACCOUNTS}",)
                ).fetchone()
                conn.execute(
                    "UPDATE bare SET balance = %s WHERE id = %s", (balance + 1, f"a{n % ACCOUNTS}")
                )
        return updates / (time.perf_counter() - start)


def instances(url: str, count: int, kind: str, updates: int, tag: str) -> float:
    """Per second over ``count`` instance processes, ``updates`` each; wall time first to last."""
    command = [sys.executable, __file__, "--worker", url, kind, str(updates)]
    processes = [
        subprocess.Popen([*command, f"{tag}-i{i}"], stdout=subprocess.PIPE, text=True)
        for i in range(count)
    ]
    spans = []
    for process in processes:
        out, _ = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"an instance failed with status {process.returncode}")
        spans.append(json.loads(out))
    return count * updates / (max(end for _, end in spans) - min(start for start, _ in spans))


def in_process(database: Path | str, kind: str, updates: int, tag: str) -> float:
    start, end = asyncio.run(work(database, kind, updates, tag))
    return updates / (end - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--updates", type=int, default=2000, help="per instance and round")
    parser.add_argument("--instances", type=int, nargs="*", default=[1, 2, 4])
    parser.add_argument("--worker", nargs=4, metavar=("URL", "KIND", "UPDATES", "TAG"))
    args = parser.parse_args()
    if args.worker:
        url, kind, updates, tag = args.worker
        print(json.dumps(asyncio.run(work(url, kind, int(updates), tag))))
        return

    results: dict[str, list[float]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="ilpbench") as directory,
        postgres_server(DURABLE, directory=tempfile.gettempdir()) as server,
    ):
        version = server.psql("SHOW server_version")
        n = args.updates
        for r in range(args.rounds):
            # Interleave the cases so that a noisy neighbour hurts them all alike.
            cases = {"bare psycopg, 1 txn/update": lambda: bare_psycopg(server.new_schema(), n)}
            for kind in ("updates", "settlements"):
                cases[f"{kind}: engine on SQLite"] = lambda k=kind, r=r: in_process(
                    Path(directory) / f"{k}-{r}.db", k, n, f"s{r}"
                )
                for count in args.instances:
                    cases[f"{kind}: engine on PostgreSQL, {count} instance(s)"] = (
                        lambda k=kind, c=count, r=r: instances(
                            server.new_schema(), c, k, n, f"p{r}"
                        )
                    )
            for name, case in cases.items():
                results.setdefault(name, []).append(case())

    print(
        f"PostgreSQL {version} (fsync on, synchronous_commit on) and SQLite (WAL, "
        f"synchronous=FULL) on the same disk; {args.rounds} rounds x {args.updates} per "
        f"instance, {CALLERS} callers per instance, medians"
    )
    bare = statistics.median(results["bare psycopg, 1 txn/update"])
    baselines = {
        kind: statistics.median(results[f"{kind}: engine on SQLite"])
        for kind in ("updates", "settlements")
    }
    print(f"{'case':<52}{'per s':>9}{'vs bare':>10}{'vs SQLite':>11}")
    for name, rates in results.items():
        rate = statistics.median(rates)
        kind = name.split(":")[0]
        vs_sqlite = f"{rate / baselines[kind]:>10.2f}x" if kind in baselines else f"{'':>11}"
        print(f"{name:<52}{rate:>9.0f}{rate / bare:>9.2f}x{vs_sqlite}")


if __name__ == "__main__":
    main()
