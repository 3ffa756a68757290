"""What a packet costs the connector's clearing books (proposal 2): the SQLite file of one
``ilp-host connector`` next to PostgreSQL with 1 and 2 connector instances sharing the books,
all in one run.

Prints figures only (no assertions). It starts its own PostgreSQL server (tests/postgres_server.py)
with the data directory on disk and durable commits (``fsync=on``, ``synchronous_commit=on``).
Each instance is a process of its own with CALLERS concurrent packets in flight, and each packet
does on host.connector.durable_clearing.DurableClearing what the balance middleware
(host.connector.middleware) does for a packet forwarded between two peers and fulfilled: two
credit checks, the journal entry before it goes out, and the resolution with both balance
changes. The peers of each packet are drawn at random among PEERS accounts. The figure is all
instances' packets over the measured seconds (the instances run at the same time), with the
median time of one packet; medians of ``--rounds`` rounds.

    .venv/bin/python bench/bench_clearing_tier.py [--seconds 5] [--rounds 3] [--callers 16]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from host.clearing_records import InFlight, Resolution
from host.connector.durable_clearing import AccountLimits, DurableClearing
from host.connector.middleware import changes_of, packet_id
from tests.postgres_server import postgres_server

PEERS = 16
#: Durable, as a production server would run.
DURABLE = ("fsync=on", "synchronous_commit=on", "max_connections=200")
LIMITS = {f"peer{n}": AccountLimits(9, -(10**30), 10**30) for n in range(PEERS)}


async def _packets(database: str, name: str, seconds: float, callers: int) -> dict:
    """One instance: opens the books, says so, reads the start time (wall clock) from stdin,
    and sends packets until ``start + seconds``, counted from ``start``."""
    books = await DurableClearing.open(database, LIMITS)
    print("ready", flush=True)
    start = float(await asyncio.to_thread(sys.stdin.readline))
    times: list[float] = []
    count = 0
    rng = random.Random(name)

    async def caller(index: int) -> None:
        nonlocal count
        n = 0
        while time.time() < start + seconds:
            source, target = rng.sample(sorted(LIMITS), 2)
            prepare = f"{name} {index} {n}".encode()
            n += 1
            packet = InFlight(
                packet_id(source, prepare).hex(),
                source,
                hashlib.sha256(prepare).digest(),
                target,
                hashlib.sha256(prepare + b"out").digest(),
                10,
                time.time() + 30,
                hashlib.sha256(prepare + b"c").digest(),
            )
            began = time.perf_counter()
            assert await books.check_credit(source, packet.amount)
            assert await books.check_credit(target, -packet.amount)
            await books.journal_packet(packet)
            await books.resolve_packet(packet, Resolution.FULFILLED, bytes(32), changes_of(packet))
            if time.time() >= start:
                times.append(time.perf_counter() - began)
                count += 1

    try:
        await asyncio.sleep(max(0.0, start - 1.0 - time.time()))  # warm up for a second
        await asyncio.gather(*(caller(i) for i in range(callers)))
    finally:
        await books.close()
    return {"packets": count, "median_ms": statistics.median(times) * 1000 if times else 0.0}


def _run(databases: list[str], seconds: float, callers: int) -> tuple[float, float]:
    """The instances at once (one process each): packets/s, median ms of one packet."""
    tag = time.time()
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--worker",
                database,
                "--name",
                f"i{n}-{tag}",
                "--seconds",
                str(seconds),
                "--callers",
                str(callers),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n, database in enumerate(databases)
    ]
    for worker in workers:  # each has opened its books
        assert worker.stdout is not None
        if worker.stdout.readline().strip() != "ready":
            raise SystemExit("a worker could not open the books")
    start = time.time() + 1.5  # a second of warm-up
    results = []
    for worker in workers:
        out, _ = worker.communicate(f"{start}\n")
        if worker.returncode != 0:
            raise SystemExit(f"a worker failed (status {worker.returncode})")
        results.append(json.loads(out))
    total = sum(r["packets"] for r in results)
    return total / seconds, statistics.median(r["median_ms"] for r in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured time per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--callers", type=int, default=16, help="packets in flight per instance")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--name", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        result = asyncio.run(_packets(args.worker, args.name, args.seconds, args.callers))
        print(json.dumps(result))
        return

    with (
        tempfile.TemporaryDirectory() as directory,
        postgres_server(DURABLE, directory=tempfile.gettempdir()) as server,
    ):
        setups = {
            "SQLite file, 1 instance": lambda r: [str(Path(directory) / f"books{r}.db")],
            "PostgreSQL, 1 instance": lambda r: [server.new_schema()],
            "PostgreSQL, 2 instances": lambda r: [server.new_schema()] * 2,
        }
        figures: dict[str, list[tuple[float, float]]] = {name: [] for name in setups}
        for round_ in range(args.rounds):
            for name, databases in setups.items():  # interleaved: the load drifts alike
                figures[name].append(_run(databases(round_), args.seconds, args.callers))
        baseline = statistics.median(rate for rate, _ in figures["SQLite file, 1 instance"])
        print(
            f"{args.callers} packets in flight per instance, {args.rounds} rounds of "
            f"{args.seconds:g} s, medians"
        )
        print("| clearing books | packets/s | median per packet | vs SQLite |")
        print("|---|---:|---:|---:|")
        for name, runs in figures.items():
            rate = statistics.median(r for r, _ in runs)
            latency = statistics.median(m for _, m in runs)
            print(f"| {name} | {rate:.0f} | {latency:.1f} ms | {rate / baseline:.2f} |")


if __name__ == "__main__":
    main()
