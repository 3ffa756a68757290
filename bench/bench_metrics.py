"""Benchmark: what the metrics cost on the packet path, packets/s with and without them.

The set-up of ``bench_connector.py`` (client -> host B -> host C over ILP-over-HTTP on
127.0.0.1, in-memory clearing), run in rounds that alternate host B without metrics and host B
with them: the connector's PacketRecorder counting every packet (host.metrics) and the
``/metrics`` listener scraped by the client once a second while the load runs (Prometheus'
default is every 15 s: this is the heavier case). Alternating rounds in one run keeps the
machine's other load the same for both.

Prints each round, then the medians per variant and their ratio. First, since packets/s of
processes on a busy machine move a lot, it times the recorder alone in this process: the
microseconds the connector spends per packet on metrics (one incoming and one outgoing record,
as a forwarded packet makes), next to the no-op observer. No assertions.

    .venv/bin/python bench/bench_metrics.py [--rounds 5] [--seconds 4] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_connector import TOKEN_A_TO_B, TOKEN_B_TO_C, NoMessages, load

from host.config import AccountSpec
from host.connector import Connector, InMemoryClearing, PeerConfig
from host.connector.local import nearest_rank
from host.connector.observer import NoObserver, PacketObserver
from host.engine import Policy
from host.ilp import Fulfill, Reject
from host.metrics import HostMetrics, MetricsServer


async def serve(role: str, peer_url: str, metrics: bool) -> None:
    """Run host B (with or without metrics) or C until stdin closes; print its ports first."""
    clearing = InMemoryClearing()
    if role == "c":
        peers = [PeerConfig("b", "http://127.0.0.1:9/", "test.b", TOKEN_B_TO_C, "unused-token")]
        connector = Connector("test.c", peers, [], clearing, NoMessages())
    else:
        peers = [
            PeerConfig("a", "http://127.0.0.1:9/", "test.a", TOKEN_A_TO_B, "unused-token"),
            PeerConfig("c", peer_url, "test.c", "unused-token-c", TOKEN_B_TO_C),
        ]
        connector = Connector("test.b", peers, [], clearing, NoMessages())
    server = None
    if metrics:
        host_metrics = HostMetrics(_accounts([peer.id for peer in peers]))
        host_metrics.attach(connector=connector)
        server = MetricsServer(host_metrics.scrape, "127.0.0.1", 0)
        await server.start()
    async with connector:
        ports = {"port": connector.port, "metrics": server.port if server else None}
        print(json.dumps(ports), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    if server is not None:
        await server.stop()


async def start(
    role: str, peer_url: str, metrics: bool
) -> tuple[asyncio.subprocess.Process, dict[str, int]]:
    command = [sys.executable, __file__, "--serve", role, "--peer-url", peer_url]
    process = await asyncio.create_subprocess_exec(
        *command,
        *(["--metrics"] if metrics else []),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 60)
    if not line:
        raise SystemExit(f"host {role} exited before listening")
    return process, json.loads(line)


async def stop(process: asyncio.subprocess.Process) -> None:
    assert process.stdin is not None
    process.stdin.close()
    await process.wait()


async def scraper(url: str, scrapes: list[int]) -> None:
    """GET ``url`` once a second until cancelled; the sizes of the answers."""
    async with aiohttp.ClientSession() as http:
        while True:
            async with http.get(url) as response:
                scrapes.append(len(await response.read()))
            await asyncio.sleep(1.0)


async def one_round(metrics: bool, args: argparse.Namespace) -> tuple[float, float, int]:
    """Packets/s, median latency (ms), and the number of scrapes of one round."""
    c, c_ports = await start("c", "", False)
    b = None
    scrapes: list[int] = []
    try:
        b, ports = await start("b", f"http://127.0.0.1:{c_ports['port']}/", metrics)
        url = f"http://127.0.0.1:{ports['port']}/"
        await load(url, args.amount, args.concurrency, 1.0)  # warm-up
        task = None
        if metrics:
            task = asyncio.create_task(
                scraper(f"http://127.0.0.1:{ports['metrics']}/metrics", scrapes)
            )
        result = await load(url, args.amount, args.concurrency, args.seconds)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    finally:
        if b is not None:
            await stop(b)
        await stop(c)
    count = len(result["latencies"])
    return count / result["elapsed"], nearest_rank(result["latencies"], 0.5) * 1000, len(scrapes)


def _accounts(ids: list[str]) -> list[AccountSpec]:
    policy = Policy(-1000, 0, -(10**15), 10**15)
    return [AccountSpec(account, "sim", "USD", 6, policy) for account in ids]


def per_packet(observer: PacketObserver, packets: int) -> float:
    """Microseconds per forwarded packet spent in ``observer`` (1 in 10 rejected)."""
    fulfill, reject = Fulfill(b"\0" * 32), Reject("T04", "test.b")
    began = time.perf_counter()
    for index in range(packets):
        reply = reject if index % 10 == 0 else fulfill
        observer.incoming("a", 10, reply, 0.001)
        observer.outgoing("c", 10, reply)
    return (time.perf_counter() - began) / packets * 1e6


def micro(rounds: int, packets: int = 100_000) -> None:
    metrics = HostMetrics(_accounts(["a", "c"]))
    metrics.packets.bind()
    timings: dict[str, list[float]] = {"no-op observer": [], "metrics": []}
    for _ in range(rounds):
        timings["no-op observer"].append(per_packet(NoObserver(), packets))
        timings["metrics"].append(per_packet(metrics.packets, packets))
    print(f"recorder alone, {packets} packets x {rounds} rounds, medians:")
    for name, values in timings.items():
        print(f"  {name:>15}: {statistics.median(values):.2f} µs per forwarded packet")


async def bench(args: argparse.Namespace) -> None:
    micro(args.rounds)
    print(
        f"metrics cost: client -> B -> C on 127.0.0.1, concurrency {args.concurrency}, "
        f"{args.seconds:g} s per round, {args.rounds} rounds per variant, alternating"
    )
    rates: dict[bool, list[float]] = {False: [], True: []}
    medians: dict[bool, list[float]] = {False: [], True: []}
    for index in range(args.rounds):
        for metrics in (False, True):
            rate, median, scraped = await one_round(metrics, args)
            rates[metrics].append(rate)
            medians[metrics].append(median)
            name = "with metrics" if metrics else "without"
            extra = f", {scraped} scrapes" if metrics else ""
            print(f"round {index + 1} {name:>12}: {rate:8.0f} pkt/s, median {median:.2f} ms{extra}")
    off, on = statistics.median(rates[False]), statistics.median(rates[True])
    print(f"median without metrics: {off:.0f} pkt/s ({statistics.median(medians[False]):.2f} ms)")
    print(f"median with metrics:    {on:.0f} pkt/s ({statistics.median(medians[True]):.2f} ms)")
    print(f"ratio with/without: {on / off:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=4.0, help="measured time per round")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--amount", type=int, default=10)
    parser.add_argument("--serve", choices=("b", "c"), help=argparse.SUPPRESS)
    parser.add_argument("--peer-url", default="", help=argparse.SUPPRESS)
    parser.add_argument("--metrics", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve, args.peer_url, args.metrics))
    else:
        asyncio.run(bench(args))


if __name__ == "__main__":
    main()
