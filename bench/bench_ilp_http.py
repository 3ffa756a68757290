"""CPU per ILP-over-HTTP exchange of the host's own server and client, in one process.

An ``IlpHttpServer`` whose handler answers a fixed Fulfill and an ``IlpHttpClient`` that sends
it ``--count`` Prepare-sized bodies, one at a time and then 16 at once: the process's CPU time
per exchange (both sides, their socket calls included) and the median round trip. With
``--before DIR`` (another checkout of this repository) the same measure runs again in a child
process with that checkout's packages first on the Python path, rounds interleaved, so that a
change of the HTTP path can be compared with the code before it in one run.

    .venv/bin/python bench/bench_ilp_http.py [--rounds 3] [--count 2000] [--before DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-token-0123456789"


async def measure(count: int) -> dict[str, float]:
    from host.connector.http import IlpHttpClient, IlpHttpServer
    from host.ilp import Fulfill, serialize

    fulfill = serialize(Fulfill(bytes(32)))

    async def handler(peer_id: str, body: bytes) -> bytes:
        return fulfill

    server = IlpHttpServer(handler, {"p": TOKEN})
    await server.start()
    client = IlpHttpClient()
    await client.start()
    figures: dict[str, float] = {}
    try:
        await client.send(server.url, TOKEN, b"\x0c" * 100, 10)  # the connection, warm
        for concurrency in (1, 16):
            latencies: list[float] = []

            async def worker(n: int, latencies: list[float] = latencies) -> None:
                for _ in range(n):
                    start = time.perf_counter()
                    await client.send(server.url, TOKEN, b"\x0c" * 100, 10)
                    latencies.append(time.perf_counter() - start)

            cpu = time.process_time()
            await asyncio.gather(*(worker(count // concurrency) for _ in range(concurrency)))
            cpu = time.process_time() - cpu
            figures[f"cpu_us_c{concurrency}"] = 1e6 * cpu / len(latencies)
            figures[f"p50_ms_c{concurrency}"] = 1e3 * statistics.median(latencies)
    finally:
        await client.close()
        await server.stop()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--before", type=Path, help="another checkout: measured beside this one")
    parser.add_argument("--once", action="store_true", help=argparse.SUPPRESS)  # one child round
    args = parser.parse_args()
    if args.once:
        print(json.dumps(asyncio.run(measure(args.count))))
        return 0
    sides = {"this checkout": str(ROOT)}
    if args.before is not None:
        sides["before"] = str(args.before.resolve())
    results: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
    for _ in range(args.rounds):
        for name, code in sides.items():
            env = {**os.environ, "PYTHONPATH": code}
            out = subprocess.run(
                [sys.executable, __file__, "--once", f"--count={args.count}"],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            results[name].append(json.loads(out))
    print(
        f"{args.count} exchanges per round at each concurrency; medians of {args.rounds} rounds\n"
    )
    print("| code | CPU µs/exchange c=1 | c=16 | p50 ms c=1 | c=16 |")
    print("|---|---:|---:|---:|---:|")
    for name, rounds in results.items():
        med = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
        print(
            f"| {name} | {med['cpu_us_c1']:.0f} | {med['cpu_us_c16']:.0f} "
            f"| {med['p50_ms_c1']:.3f} | {med['p50_ms_c16']:.3f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
