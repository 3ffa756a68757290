"""CPU per forwarded packet of the connector core and the engine, in one process, no Node.

A :class:`Connector` with two child peers forwards Prepares from ``s`` to ``r``: each body goes
straight to ``Connector.handle_http`` (what the ILP-over-HTTP server calls once a request is
read), the connector forwards it over its HTTP client to an in-process ``IlpHttpServer`` that
fulfils it, and the Fulfill comes back; ``--count`` packets one at a time, then 16 at once. Two
clearings behind the balance middleware, each in its own round:

- ``memory``: host.connector.ports.InMemoryClearing (the in-flight journal in a dict): the
  Python of the packet path without a store: parse, route, expiry, reservations, the HTTP
  client, and the receiver's side of that exchange;
- ``sqlite``: the engine on its SQLite store, as ``ilp-host run`` has it: the credit checks,
  the journal record and the resolution, each durable (group commit) before the packet moves on.

The figure is the process's CPU time per packet (every thread, so the store's writer thread
too), steadier than packets/s on a shared machine. With ``--before DIR`` (another checkout of
this repository) each round runs again in a child process with that checkout's packages first
on the Python path, interleaved, so that a change is compared with the code before it in one
run. Medians of the rounds.

    .venv/bin/python bench/bench_packet_path.py [--rounds 5] [--count 3000] [--before DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Far beyond what a run moves: no packet is refused for credit, no settlement starts.
LIMIT = 10**15


class _NoMessages:
    async def receive(self, account_id: str, data: bytes) -> bytes:
        raise AssertionError("no settlement messages in this benchmark")


async def measure(count: int, clearing_kind: str) -> dict[str, float]:
    from host.binding import EngineClearing
    from host.clearing_rules import Policy
    from host.connector import Connector
    from host.connector.config import PeerConfig
    from host.connector.http import IlpHttpServer
    from host.connector.ports import ClearingPort, InMemoryClearing
    from host.engine.engine import Engine
    from host.ilp import Fulfill, Prepare, parse_prepare, serialize
    from host.store.sqlite import SqliteStore

    async def fulfil(peer_id: str, body: bytes) -> bytes:
        return serialize(Fulfill(parse_prepare(body).data[:32]))

    receiver = IlpHttpServer(fulfil, {"connector": "token-to-r"})
    await receiver.start()
    workdir = Path(tempfile.mkdtemp(prefix="bench-packet-path-"))
    store = None
    clearing: ClearingPort
    if clearing_kind == "sqlite":
        store = await SqliteStore.open(workdir / "engine.db")
        engine = Engine(store, {})
        for account in ("s", "r"):
            await engine.create_account(
                account,
                adaptor="memory",
                asset_code="USD",
                asset_scale=6,
                ledger_scale=6,
                policy=Policy(-LIMIT, 0, -LIMIT, LIMIT),
            )
        clearing = EngineClearing(engine)
    else:
        clearing = InMemoryClearing()
    peers = [
        PeerConfig(
            peer_id, url, None, incoming, outgoing, "child", send_routes=False, receive_routes=False
        )
        for peer_id, url, incoming, outgoing in (
            ("s", "http://127.0.0.1:9/", "token-from-s", "unused"),  # handle_http is its server
            ("r", receiver.url, "unused", "token-to-r"),
        )
    ]
    connector = Connector("test.me", peers, [], clearing, _NoMessages())

    def body() -> bytes:
        preimage = os.urandom(32)
        return serialize(
            Prepare(
                100,
                datetime.now(UTC) + timedelta(seconds=60),
                hashlib.sha256(preimage).digest(),
                "test.me.r.bench",
                preimage,
            )
        )

    figures: dict[str, float] = {}
    try:
        await connector.start()
        for _ in range(200):  # connections, caches, the store's pages: warm
            reply = await connector.handle_http("s", body())
            assert reply[0] == 13, reply  # a Fulfill

        async def worker(bodies: Iterator[bytes]) -> None:
            for prepare in bodies:
                reply = await connector.handle_http("s", prepare)
                assert reply[0] == 13, reply

        for concurrency in (1, 16):
            bodies = iter([body() for _ in range(count)])
            cpu = time.process_time()
            await asyncio.gather(*(worker(bodies) for _ in range(concurrency)))
            figures[f"cpu_us_c{concurrency}"] = 1e6 * (time.process_time() - cpu) / count
    finally:
        await connector.stop()
        await receiver.stop()
        if store is not None:
            await store.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--before", type=Path, help="another checkout: measured beside this one")
    parser.add_argument("--once", help=argparse.SUPPRESS)  # one child round: its clearing
    args = parser.parse_args()
    if args.once:
        print(json.dumps(asyncio.run(measure(args.count, args.once))))
        return 0
    sides = {"this checkout": str(ROOT)}
    if args.before is not None:
        sides["before"] = str(args.before.resolve())
    kinds = ("memory", "sqlite")
    results: dict[tuple[str, str], list[dict[str, float]]] = {
        (name, kind): [] for kind in kinds for name in sides
    }
    for _ in range(args.rounds):
        for kind in kinds:
            for name, code in sides.items():
                out = subprocess.run(
                    [sys.executable, __file__, f"--once={kind}", f"--count={args.count}"],
                    env={**os.environ, "PYTHONPATH": code},
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                results[(name, kind)].append(json.loads(out))
    print(
        f"{args.count} packets per round at each concurrency; medians of {args.rounds} rounds; "
        f"load {os.getloadavg()[0]:.2f}\n"
    )
    print("| clearing | code | CPU µs/packet c=1 | c=16 |")
    print("|---|---|---:|---:|")
    for (name, kind), rounds in results.items():
        med = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
        print(f"| {kind} | {name} | {med['cpu_us_c1']:.0f} | {med['cpu_us_c16']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
