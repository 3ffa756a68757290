"""Benchmark: ILP packets per second through one connector host, with the balance middleware.

Three parties, each its own process, on 127.0.0.1:

    client (this process) --HTTP--> host B (measured) --HTTP--> host C (local receiver)

The client plays peer A: it POSTs exercise Prepares for ``test.c.x`` to B with A's token,
``--concurrency`` at a time. B authenticates A, routes to its peer C, reserves credit on both
accounts, forwards with a reduced expiry, and on C's Fulfill books A +amount and C -amount on
its clearing port before answering. The client times each exchange (send to reply).

Prints, per concurrency level: packets per second, median and p99 latency, and what B booked
(read from B when it stops, so a wrong balance shows up here). No assertions; about 30 s with
the defaults. The clearing port is in memory (``--clearing memory``); a durable store plugs
in at :func:`make_clearing`.

    .venv/bin/python bench/bench_connector.py [--seconds 8] [--concurrency 1,16,64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
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
from host.ilp import Fulfill, parse_reply, serialize

TOKEN_A_TO_B = "bench-token-a-to-b"
TOKEN_B_TO_C = "bench-token-b-to-c"


class NoMessages:
    """The benchmark sends no settlement messages."""

    async def receive(self, account_id: str, data: bytes) -> bytes:
        return b""


def make_clearing(kind: str) -> ClearingPort:
    """The clearing port host B books on."""
    if kind == "memory":
        return InMemoryClearing()
    raise SystemExit(f"unknown clearing port {kind!r} (this benchmark knows: memory)")


# -- the hosts (child processes) -------------------------------------------------------------


async def serve(role: str, peer_url: str, clearing_kind: str) -> None:
    """Run host B or C until stdin closes; print the port first and the balances last."""
    clearing = make_clearing(clearing_kind)
    if role == "c":
        peers = [PeerConfig("b", "http://127.0.0.1:9/", "test.b", TOKEN_B_TO_C, "unused-token")]
        connector = Connector("test.c", peers, [], clearing, NoMessages())
    else:
        peers = [
            PeerConfig("a", "http://127.0.0.1:9/", "test.a", TOKEN_A_TO_B, "unused-token"),
            PeerConfig("c", peer_url, "test.c", "unused-token-c", TOKEN_B_TO_C),
        ]
        connector = Connector("test.b", peers, [], clearing, NoMessages())
    async with connector:
        print(json.dumps({"port": connector.port}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    balances = clearing.balances if isinstance(clearing, InMemoryClearing) else {}
    print(json.dumps({"balances": balances}), flush=True)


class Child:
    """A host process: started with a role, stopped by closing its stdin."""

    def __init__(self, process: asyncio.subprocess.Process, port: int) -> None:
        self.process = process
        self.port = port

    @classmethod
    async def start(cls, role: str, peer_url: str, clearing: str) -> Child:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--serve",
            role,
            "--peer-url",
            peer_url,
            "--clearing",
            clearing,
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


async def bench(args: argparse.Namespace) -> None:
    levels = [int(level) for level in args.concurrency.split(",")]
    print(
        f"connector benchmark: client -> B -> C over ILP-over-HTTP on 127.0.0.1, "
        f"clearing={args.clearing}, amount={args.amount}, {args.seconds:g} s per level"
    )
    print(f"{'concurrency':>11} {'packets':>8} {'pkt/s':>8} {'median ms':>10} {'p99 ms':>8}  codes")
    for concurrency in levels:
        c = await Child.start("c", "", args.clearing)
        b = None
        try:
            b = await Child.start("b", f"http://127.0.0.1:{c.port}/", args.clearing)
            url = f"http://127.0.0.1:{b.port}/"
            await load(url, args.amount, concurrency, min(1.0, args.seconds))  # warm-up
            result = await load(url, args.amount, concurrency, args.seconds)
        finally:
            booked = await b.stop() if b is not None else {}
            await c.stop()
        latencies = result["latencies"]
        count = len(latencies)
        print(
            f"{concurrency:>11} {count:>8} {count / result['elapsed']:>8.0f} "
            f"{nearest_rank(latencies, 0.5) * 1000:>10.2f} "
            f"{nearest_rank(latencies, 0.99) * 1000:>8.2f}  {result['codes']}"
        )
        print(f"{'':>11} B booked (incl. warm-up): {booked.get('balances')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="measured time per level")
    parser.add_argument("--concurrency", default="1,16,64", help="comma-separated levels")
    parser.add_argument("--amount", type=int, default=10)
    parser.add_argument("--clearing", default="memory", help="clearing port of the hosts")
    parser.add_argument("--serve", choices=("b", "c"), help=argparse.SUPPRESS)
    parser.add_argument("--peer-url", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve, args.peer_url, args.clearing))
    else:
        asyncio.run(bench(args))


if __name__ == "__main__":
    main()
