"""Benchmark: ILP packets per second through one connector host, with the balance middleware.

Three parties, each its own process, on 127.0.0.1:

    client (this process) --HTTP--> host B (measured) --HTTP--> host C (local receiver)

The client plays peer A: it POSTs exercise Prepares for ``test.c.x`` to B with A's token,
``--concurrency`` at a time. B authenticates A, routes to its peer C, reserves credit on both
accounts, forwards with a reduced expiry, and on C's Fulfill books A +amount and C -amount on
its clearing port before answering. The client times each exchange (send to reply).

Prints, per concurrency level: packets per second, median and p99 latency, and what B booked
(read from B when it stops, so a wrong balance shows up here). No assertions; about 30 s with
the defaults. B's clearing port is in memory (``--clearing memory``), or the engine on a durable
store: ``--clearing sqlite`` (a file, group commit) or ``--clearing postgres`` (a PostgreSQL
server this benchmark starts, data on disk, durable commits: tests/postgres_server.py); C, which
is not measured, then books in memory.

B journals each forwarded packet before it goes out (the in-flight journal,
host.connector.inflight) when its clearing port keeps one, as the engine's stores do.
``--journal off`` runs B without it (the connector before the journal); ``--journal compare``
runs both at each level, in ``--rounds`` alternating rounds, and prints the medians and the ratio.

    .venv/bin/python bench/bench_connector.py [--seconds 8] [--concurrency 1,16,64]
        [--clearing memory|sqlite|postgres] [--journal on|off|compare] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from host.connector import (
    ClearingPort,
    Connector,
    InMemoryClearing,
    PeerConfig,
)
from host.connector.local import exercise_prepare, nearest_rank
from host.connector.ports import WithoutJournal
from host.engine import Engine, Policy
from host.ilp import Fulfill, parse_reply, serialize
from host.store.opening import is_database_url, open_store
from tests.postgres_server import PostgresServer, postgres_server

#: Durable, as a production server would run (bench/bench_postgres.py measures the same way).
DURABLE = ("fsync=on", "synchronous_commit=on")

TOKEN_A_TO_B = "bench-token-a-to-b"
TOKEN_B_TO_C = "bench-token-b-to-c"


class NoMessages:
    """The benchmark sends no settlement messages."""

    async def receive(self, account_id: str, data: bytes) -> bytes:
        return b""


async def make_clearing(
    kind: str, accounts: list[str]
) -> tuple[ClearingPort, Callable[[], Awaitable[None]]]:
    """The clearing port a host books on, and how to close it. ``kind``: "memory", or the
    engine's database (an SQLite path or a PostgreSQL URL) for an engine with ``accounts``."""
    if kind == "memory":
        clearing = InMemoryClearing()

        async def nothing() -> None:
            return None

        return clearing, nothing
    store = await open_store(kind if is_database_url(kind) else Path(kind))
    engine = Engine(store, {})
    for account in accounts:
        await engine.create_account(
            account, adaptor="none", asset_code="USD", asset_scale=9, ledger_scale=9,
            policy=Policy(-(10**30), 0, -(10**30), 10**30),
        )  # fmt: skip
    return engine, store.close


async def booked(clearing: ClearingPort, accounts: list[str]) -> dict[str, int]:
    if isinstance(clearing, InMemoryClearing):
        return dict(clearing.balances)
    if isinstance(clearing, Engine):
        return {a: (await clearing.get_account(a)).account.balance for a in accounts}
    return {}


# -- the hosts (child processes) -------------------------------------------------------------


async def serve(role: str, peer_url: str, clearing_kind: str, journal: bool) -> None:
    """Run host B or C until stdin closes; print the port first and the balances last."""
    accounts = ["b"] if role == "c" else ["a", "c"]
    clearing, close = await make_clearing(clearing_kind, accounts)
    port: ClearingPort = clearing if journal else WithoutJournal(clearing)
    if role == "c":
        peers = [PeerConfig("b", "http://127.0.0.1:9/", "test.b", TOKEN_B_TO_C, "unused-token")]
        connector = Connector("test.c", peers, [], port, NoMessages())
    else:
        peers = [
            PeerConfig("a", "http://127.0.0.1:9/", "test.a", TOKEN_A_TO_B, "unused-token"),
            PeerConfig("c", peer_url, "test.c", "unused-token-c", TOKEN_B_TO_C),
        ]
        connector = Connector("test.b", peers, [], port, NoMessages())
    try:
        async with connector:
            print(json.dumps({"port": connector.port}), flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        print(json.dumps({"balances": await booked(clearing, accounts)}), flush=True)
    finally:
        await close()


class Child:
    """A host process: started with a role, stopped by closing its stdin."""

    def __init__(self, process: asyncio.subprocess.Process, port: int) -> None:
        self.process = process
        self.port = port

    @classmethod
    async def start(cls, role: str, peer_url: str, clearing: str, journal: bool = True) -> Child:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--serve",
            role,
            "--peer-url",
            peer_url,
            "--clearing",
            clearing,
            "--journal",
            "on" if journal else "off",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 60)
        if not line:
            await process.wait()
            raise SystemExit(f"host {role} exited with {process.returncode} before listening")
        return cls(process, json.loads(line)["port"])

    async def stop(self) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.close()
        out = await asyncio.wait_for(self.process.stdout.read(), 60)
        await self.process.wait()
        lines = out.decode().strip().splitlines()
        return json.loads(lines[-1]) if lines else {}


# -- the client (this process) ---------------------------------------------------------------


async def load(url: str, amount: int, concurrency: int, seconds: float) -> dict[str, Any]:
    """POST Prepares to ``url`` for ``seconds``; counts and latencies."""
    latencies: list[float] = []
    codes: dict[str, int] = {}
    headers = {
        "Authorization": f"Bearer {TOKEN_A_TO_B}",
        "Content-Type": "application/octet-stream",
    }
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:
        stop_at = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < stop_at:
                expires = datetime.now(UTC) + timedelta(seconds=30)
                body = serialize(exercise_prepare("test.c.x", amount, expires))
                started = time.perf_counter()
                async with http.post(url, data=body, headers=headers) as response:
                    reply = parse_reply(await response.read())
                latencies.append(time.perf_counter() - started)
                code = "fulfilled" if isinstance(reply, Fulfill) else reply.code
                codes[code] = codes.get(code, 0) + 1

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    return {"latencies": latencies, "codes": codes, "elapsed": elapsed}


async def run_level(
    args: argparse.Namespace,
    directory: str,
    server: PostgresServer | None,
    name: str,
    concurrency: int,
    journal: bool,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One measurement: fresh hosts C and B (B's database new), warm-up, load; the load's
    result and what B booked."""
    c = await Child.start("c", "", "memory" if args.database else args.clearing)
    b = None
    try:
        database = args.clearing
        if args.database == "postgres":
            assert server is not None
            database = server.new_schema()
        elif args.database == "sqlite":
            database = str(Path(directory) / f"b-{name}.db")
        b = await Child.start("b", f"http://127.0.0.1:{c.port}/", database, journal)
        url = f"http://127.0.0.1:{b.port}/"
        await load(url, args.amount, concurrency, min(1.0, args.seconds))  # warm-up
        result = await load(url, args.amount, concurrency, args.seconds)
    finally:
        booked = await b.stop() if b is not None else {}
        await c.stop()
    return result, booked


async def bench(
    args: argparse.Namespace, directory: str, server: PostgresServer | None = None
) -> None:
    levels = [int(level) for level in args.concurrency.split(",")]
    print(
        f"connector benchmark: client -> B -> C over ILP-over-HTTP on 127.0.0.1, "
        f"clearing={args.clearing}, journal={args.journal}, amount={args.amount}, "
        f"{args.seconds:g} s per level"
    )
    if args.journal == "compare":
        await compare(args, directory, server, levels)
        return
    print(f"{'concurrency':>11} {'packets':>8} {'pkt/s':>8} {'median ms':>10} {'p99 ms':>8}  codes")
    for number, concurrency in enumerate(levels):
        result, booked = await run_level(
            args, directory, server, str(number), concurrency, args.journal == "on"
        )
        latencies = result["latencies"]
        count = len(latencies)
        print(
            f"{concurrency:>11} {count:>8} {count / result['elapsed']:>8.0f} "
            f"{nearest_rank(latencies, 0.5) * 1000:>10.2f} "
            f"{nearest_rank(latencies, 0.99) * 1000:>8.2f}  {result['codes']}"
        )
        print(f"{'':>11} B booked (incl. warm-up): {booked.get('balances')}")


async def compare(
    args: argparse.Namespace, directory: str, server: PostgresServer | None, levels: list[int]
) -> None:
    """B with and without the journal, alternating, ``args.rounds`` times per level."""
    print(
        f"{'concurrency':>11} {'journal pkt/s':>14} {'without pkt/s':>14} {'ratio':>6} "
        f"{'journal ms':>11} {'without ms':>11}  (medians of {args.rounds} rounds)"
    )
    for concurrency in levels:
        rates: dict[bool, list[float]] = {True: [], False: []}
        medians: dict[bool, list[float]] = {True: [], False: []}
        for round_number in range(args.rounds):
            # Alternate which goes first: a machine that gets busier mid-round hurts both.
            order = (True, False) if round_number % 2 == 0 else (False, True)
            for journal in order:
                name = f"{concurrency}-{round_number}-{'on' if journal else 'off'}"
                result, booked = await run_level(
                    args, directory, server, name, concurrency, journal
                )
                balances = booked.get("balances") or {}
                if set(result["codes"]) != {"fulfilled"} or sum(balances.values()) != 0:
                    print(f"  round {name}: codes {result['codes']}, B booked {balances}")
                rates[journal].append(len(result["latencies"]) / result["elapsed"])
                medians[journal].append(nearest_rank(result["latencies"], 0.5) * 1000)
        on, off = statistics.median(rates[True]), statistics.median(rates[False])
        print(
            f"{concurrency:>11} {on:>14.0f} {off:>14.0f} {on / off:>6.2f} "
            f"{statistics.median(medians[True]):>11.2f} {statistics.median(medians[False]):>11.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="measured time per level")
    parser.add_argument("--concurrency", default="1,16,64", help="comma-separated levels")
    parser.add_argument("--amount", type=int, default=10)
    parser.add_argument(
        "--clearing", default="memory", help="B's clearing port: memory, sqlite or postgres"
    )
    parser.add_argument(
        "--journal",
        choices=("on", "off", "compare"),
        default="on",
        help="B's in-flight journal: on, off, or both at each level (compare)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds per level with compare")
    parser.add_argument("--serve", choices=("b", "c"), help=argparse.SUPPRESS)
    parser.add_argument("--peer-url", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve, args.peer_url, args.clearing, args.journal != "off"))
        return
    if args.clearing not in ("memory", "sqlite", "postgres"):
        raise SystemExit(f"unknown clearing port {args.clearing!r}: memory, sqlite or postgres")
    args.database = None if args.clearing == "memory" else args.clearing
    with tempfile.TemporaryDirectory(prefix="ilpbench") as directory:
        if args.clearing != "postgres":
            asyncio.run(bench(args, directory))
            return
        with postgres_server(DURABLE, directory=tempfile.gettempdir()) as server:
            asyncio.run(bench(args, directory, server))


if __name__ == "__main__":
    main()
