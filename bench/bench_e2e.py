"""End-to-end figures on the simulated ledger with two peered hosts (real processes).

1. Packets per second through Alice's host with the balance middleware on SQLite: Alice's
   SendPackets (a local source in her host) -> her connector -> ILP-over-HTTP -> Bob's host ->
   his local receiver, and the Fulfill back; both clearing balances written durably (group
   commit) before the Fulfill passes. Medians and p99 as SendPackets reports them.
2. Settlements per second end to end: a settle threshold of one micro-dollar makes every packet
   settle; time from the first packet until every settlement is paid by Alice AND credited and
   acknowledged by Bob.
3. The cost of one settlement round trip: per settlement, from Alice's debit (the outbox row's
   creation) to Bob's credit being acknowledged (his incoming row COMPLETED), matched by the
   ledger's transfer id.

Prints Markdown; asserts nothing. ``--quick`` for a short run.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from host.demo.scenario import PACKET_AMOUNT
from host.demo.twohost import Host, Pair, Side, running
from host.pb.ilphost.admin.v1 import admin_pb2

_OUT = admin_pb2.SETTLEMENT_DIRECTION_OUTGOING
_IN = admin_pb2.SETTLEMENT_DIRECTION_INCOMING
_DONE = admin_pb2.SETTLEMENT_STATE_COMPLETED


@contextmanager
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ilpbench"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def pair(directory: Path, threshold: int, engine: str = "internal") -> Pair:
    """Alice and Bob as the demo runs them, with this settle threshold and engine place."""
    side = Side(engine=engine, threshold=threshold)
    return Pair(directory, (side, side))


def send(alice: Host, count: int, concurrency: int) -> tuple[float, admin_pb2.SendPacketsResponse]:
    request = admin_pb2.SendPacketsRequest(
        destination="test.bob.bench", amount=PACKET_AMOUNT, count=count, concurrency=concurrency
    )
    began = time.perf_counter()
    replies = list(alice.connector.SendPackets(request, timeout=600))
    return time.perf_counter() - began, replies[-1]


def credited(bob: Host) -> int:
    return sum(1 for s in bob.settlements() if s.direction == _IN and s.state == _DONE)


def round_trips(alice: Host, bob: Host, times: int) -> list[float]:
    """One settlement at a time (admin Settle of one cent): wall time until Bob acknowledged."""
    trips = []
    for _ in range(times):
        before = credited(bob)
        began = time.perf_counter()
        alice.admin.Settle(
            admin_pb2.SettleRequest(account_id="bob", amount={"value": "10000", "scale": 6}),
            timeout=30,
        )
        deadline = time.monotonic() + 30
        while credited(bob) == before and time.monotonic() < deadline:
            time.sleep(0.002)
        trips.append((time.perf_counter() - began) * 1000)
    return trips


def packet_rounds(
    alice: Host, count: int, rounds: int, concurrency: int
) -> tuple[float, float, float]:
    """Medians over ``rounds`` of packets/s, median latency and p99 latency (ms)."""
    rates, medians, p99s = [], [], []
    for _ in range(rounds):
        elapsed, last = send(alice, count, concurrency)
        rates.append(last.fulfilled / elapsed)
        medians.append(last.median_latency_ms)
        p99s.append(last.p99_latency_ms)
    return statistics.median(rates), statistics.median(medians), statistics.median(p99s)


def packets(count: int, rounds: int) -> list[str]:
    rows = [
        "| concurrency | packets/s (median of rounds) | median latency | p99 latency |",
        "|---:|---:|---:|---:|",
    ]
    with workdir() as directory, running(pair(directory, -1_000_000)) as hosts:
        alice, bob = hosts.alice, hosts.bob
        send(alice, 50, 4)  # warm-up
        for concurrency in (1, 16):
            rate, median, p99 = packet_rounds(alice, count, rounds, concurrency)
            rows.append(f"| {concurrency} | {rate:.0f} | {median:.2f} ms | {p99:.2f} ms |")
        trips = round_trips(alice, bob, 15)
    rows += [
        "",
        "One settlement alone (admin Settle of one cent, 15 in a row): from the request on "
        "Alice's admin API to Bob's incoming settlement COMPLETED, polled every 2 ms: median "
        f"{statistics.median(trips):.1f} ms, max {max(trips):.1f} ms.",
    ]
    return rows


def settling(count: int) -> list[str]:
    with workdir() as directory, running(pair(directory, -1)) as hosts:
        alice, bob = hosts.alice, hosts.bob
        began = time.perf_counter()
        _, last = send(alice, count, 8)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            out = [s for s in alice.settlements() if s.direction == _OUT]
            incoming = [s for s in bob.settlements() if s.direction == _IN]
            if out and all(s.state == _DONE for s in out + incoming) and len(incoming) == len(out):
                break
            time.sleep(0.05)
        elapsed = time.perf_counter() - began
        created = {s.ledger_settlement_id: s.created.ToNanoseconds() for s in out}
        trips = [
            (s.updated.ToNanoseconds() - created[s.ledger_settlement_id]) / 1e6
            for s in incoming
            if s.ledger_settlement_id in created
        ]
    return [
        "| measure | value |",
        "|---|---:|",
        f"| packets fulfilled | {last.fulfilled} |",
        f"| packets refused (by code) | {dict(last.rejected_by_code) or 0} |",
        f"| settlements paid by Alice and credited by Bob | {len(out)} |",
        f"| settlements per second, end to end | {len(out) / elapsed:.1f} |",
        f"| debit to credit acknowledged, under this load, median | "
        f"{statistics.median(trips):.1f} ms |",
        f"| the same, p90 | {statistics.quantiles(trips, n=10)[-1]:.1f} ms |",
    ]


def cpu_name() -> str:
    """The CPU's model name, for the heading of a benchmark's output."""
    return next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer packets and rounds")
    args = parser.parse_args()
    count, rounds, settle_count = (300, 2, 100) if args.quick else (1000, 3, 300)
    cpu = cpu_name()
    print(
        f"# End to end ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, {cpu}, "
        f"Python {platform.python_version()})\n"
    )
    print(f"## Packets through Alice's host, SQLite balance middleware ({count} per round)\n")
    print("\n".join(packets(count, rounds)) + "\n")
    print(f"## Settlements ({settle_count} packets, each one settles)\n")
    print("\n".join(settling(settle_count)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
