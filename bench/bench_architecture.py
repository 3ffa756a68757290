"""The two proposals side by side, measured in one run on one machine (docs/architecture.md).

Two peered hosts settle on the simulated ledger, as in ``ilp-host demo``, in two deployments:

- **proposal 1**: each host is one ``ilp-host run`` process (engine inside the connector);
- **proposal 2**: each host is ``ilp-host connector`` + ``ilp-host engine`` (engine outside,
  behind the Connector API on a unix socket).

Per deployment:

1. Packets per second through Alice's connector (her SendPackets -> ILP-over-HTTP -> Bob's
   local receiver), at concurrency 1 and 16, settling every 81 packets (threshold one dollar,
   as bench_e2e.py): what the engine's place costs the packet path.
2. Settlement latency, one at a time: a single packet that crosses Alice's threshold, from the
   moment it is sent until Bob's engine has credited (and acknowledged) her ledger payment.
   In proposal 2 this includes the connector's event log and the engine following it.
3. Settlements per second under load: every packet settles (threshold of one micro-dollar).
4. Resident memory of the host's own processes (not the adaptors): what an operator runs.

Prints Markdown with the ratios of proposal 2 to proposal 1; asserts nothing. ``--quick`` for a
short run.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from bench_e2e import cpu_name, credited, packet_rounds, pair, send, workdir

from host.demo.scenario import PACKET_AMOUNT
from host.demo.twohost import ENGINE_PLACES, Host, running
from host.pb.ilphost.admin.v1 import admin_pb2

_OUT = admin_pb2.SETTLEMENT_DIRECTION_OUTGOING
_IN = admin_pb2.SETTLEMENT_DIRECTION_INCOMING
_DONE = admin_pb2.SETTLEMENT_STATE_COMPLETED
DEPLOYMENTS = {"proposal 1 (engine inside)": "internal", "proposal 2 (engine outside)": "external"}


def rss_mib(host: Host) -> tuple[int, float]:
    """How many processes the host runs and their summed VmRSS (adaptors excluded)."""
    total = 0
    for process in host.processes.values():
        for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return len(host.processes), total / 1024


def wait(what: str, check: Callable[[], bool], limit: float = 120.0) -> None:
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.002)


def packet_path(engine: str, count: int, rounds: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    with (
        workdir() as directory,
        running(pair(directory, -1_000_000, engine)) as hosts,
    ):
        alice = hosts.alice
        send(alice, 50, 4)  # warm-up
        for concurrency in (1, 16):
            rate, median, p99 = packet_rounds(alice, count, rounds, concurrency)
            figures[f"packets/s, concurrency {concurrency}"] = rate
            figures[f"packet latency median, concurrency {concurrency} (ms)"] = median
            figures[f"packet latency p99, concurrency {concurrency} (ms)"] = p99
        processes, mib = rss_mib(alice)
        figures["host processes per side"] = processes
        figures["host RSS per side, adaptors excluded (MiB)"] = mib
    return figures


def settlement_latency(engine: str, times: int) -> list[float]:
    """One packet crossing the threshold at a time: sent -> Bob's credit acknowledged (ms)."""
    trips = []
    # Each packet (12 345 micro-dollars) takes Alice past the threshold and settles in full.
    with (
        workdir() as directory,
        running(pair(directory, -1, engine)) as hosts,
    ):
        alice, bob = hosts.alice, hosts.bob
        send(alice, 1, 1)  # warm-up, and the first settlement
        wait("the warm-up settlement", lambda: credited(bob) == 1)
        for _ in range(times):
            before = credited(bob)
            began = time.perf_counter()
            send(alice, 1, 1)
            wait("Bob's credit", lambda before=before: credited(bob) > before)  # type: ignore[misc]
            trips.append((time.perf_counter() - began) * 1000)
    return trips


def settling(engine: str, count: int) -> tuple[float, int]:
    """Every packet settles: settlements per second end to end, and how many."""
    with (
        workdir() as directory,
        running(pair(directory, -1, engine)) as hosts,
    ):
        alice, bob = hosts.alice, hosts.bob
        began = time.perf_counter()
        send(alice, count, 8)

        def quiet() -> bool:
            out = [s for s in alice.settlements() if s.direction == _OUT]
            incoming = [s for s in bob.settlements() if s.direction == _IN]
            done = all(s.state == _DONE for s in out + incoming)
            return bool(out) and done and len(incoming) == len(out)

        wait("every settlement paid and credited", quiet, 600)
        elapsed = time.perf_counter() - began
        paid = len([s for s in alice.settlements() if s.direction == _OUT])
    return paid / elapsed, paid


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer packets and rounds")
    args = parser.parse_args()
    count, rounds, times, settle_count = (300, 2, 8, 100) if args.quick else (1000, 3, 20, 300)
    assert set(DEPLOYMENTS.values()) == set(ENGINE_PLACES)
    cpu = cpu_name()
    print(
        f"# Proposal 1 and proposal 2 ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
        f"{cpu}, Python {platform.python_version()}, load {os.getloadavg()[0]:.2f})\n"
    )
    results: dict[str, dict[str, float]] = {}
    for label, engine in DEPLOYMENTS.items():
        print(f"measuring {label}...", file=sys.stderr, flush=True)
        figures = packet_path(engine, count, rounds)
        trips = settlement_latency(engine, times)
        figures["settlement latency median, packet sent -> credited (ms)"] = statistics.median(
            trips
        )
        figures["settlement latency p90 (ms)"] = statistics.quantiles(trips, n=10)[-1]
        rate, paid = settling(engine, settle_count)
        figures["settlements/s, every packet settles"] = rate
        # One per fulfilled packet; the rest were refused T04 (Bob's credit limit) because
        # packets outran the settlements.
        figures["settlements paid and credited in that test"] = paid
        results[label] = figures
    first, second = DEPLOYMENTS
    print(f"| measure | {first} | {second} | ratio 2/1 |")
    print("|---|---:|---:|---:|")
    for measure in results[first]:
        a, b = results[first][measure], results[second].get(measure, float("nan"))
        fmt = "{:.0f}" if max(a, b) >= 100 else "{:.2f}"
        print(f"| {measure} | {fmt.format(a)} | {fmt.format(b)} | {b / a:.2f}x |")
    print(
        f"\n{count} packets per round, median of {rounds} rounds; settlement latency over "
        f"{times} single packets; packet amount {PACKET_AMOUNT} micro-dollars."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
