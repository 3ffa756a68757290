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
   ledger's transfer id, from the rows' own timestamps.
4. Its floor, interleaved with those settlements on the same ledger: one ledger commit plus two
   RPC hops, measured as the bench's own Transfer on the ledger (one hop and the commit,
   between two accounts of its own) plus a GetLedgerInfo (one more hop, no work), both unary
   gRPC calls on the ledger's unix socket.

Prints Markdown; asserts nothing. ``--quick`` for a short run; ``--singles-only`` for 3. and 4.
alone; ``--compare DIR`` for 3. and 4. of an older tree (a checkout or ``git worktree`` at DIR,
its ledger, hosts and adaptors run DIR's code) and of this one, side by side in one run,
settlements alternating between the two, with the medians of each.
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
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import grpc

from host.demo.scenario import PACKET_AMOUNT
from host.demo.twohost import LEDGER_SCALE, Host, Pair, Side, running
from host.pb.ilphost.admin.v1 import admin_pb2
from host.pb.ilphost.simledger.v1 import simledger_pb2, simledger_pb2_grpc
from sdk.pb.ilphost.types.v1 import types_pb2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_vs_ilp_connector import cpu_seconds

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


def round_trip(alice: Host, bob: Host) -> float:
    """One settlement (an admin Settle of one cent: the debit and outbox row a crossed threshold
    makes): from Alice's debit to Bob's credit acknowledged, by the rows' timestamps, ms. Bob's
    rows are looked at every 10 ms only, to disturb the hosts little (the poll does not time)."""
    before = {s.id for s in bob.settlements()}
    row = alice.admin.Settle(
        admin_pb2.SettleRequest(account_id="bob", amount=types_pb2.Amount(value="10000", scale=6)),
        timeout=30,
    ).settlement
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        time.sleep(0.01)
        new = [
            s
            for s in bob.settlements()
            if s.id not in before and s.direction == _IN and s.state == _DONE
        ]
        if new:
            sent = next(s for s in alice.settlements() if s.id == row.id)
            if new[0].ledger_settlement_id == sent.ledger_settlement_id:
                return (new[0].updated.ToNanoseconds() - row.created.ToNanoseconds()) / 1e6
    raise RuntimeError("a settlement was not credited within 30 s")


class Floor:
    """One ledger commit plus two RPC hops on the pair's ledger (see the module docstring)."""

    def __init__(self, pair: Pair) -> None:
        self._channel = grpc.insecure_channel(pair.ledger_target)
        self._ledger = simledger_pb2_grpc.SimLedgerStub(self._channel)
        self._transfers = 0
        for account in ("bench-payer", "bench-payee"):
            self._ledger.CreateAccount(
                simledger_pb2.CreateAccountRequest(account_id=account), timeout=10
            )
        self._ledger.Mint(
            simledger_pb2.MintRequest(
                transfer_id=f"bench-fund-{uuid.uuid4().hex}",
                account_id="bench-payer",
                amount=types_pb2.Amount(value="1000000", scale=LEDGER_SCALE),
            ),
            timeout=10,
        )

    def commit(self) -> float:
        """A Transfer of one cent between the bench's accounts (one hop and the commit), ms."""
        request = simledger_pb2.TransferRequest(
            transfer_id=f"bench-{uuid.uuid4().hex}",
            from_account_id="bench-payer",
            to_account_id="bench-payee",
            amount=types_pb2.Amount(value="1", scale=LEDGER_SCALE),
        )
        began = time.perf_counter()
        self._ledger.Transfer(request, timeout=10)
        return (time.perf_counter() - began) * 1000

    def hop(self) -> float:
        """A GetLedgerInfo (one hop, nothing to do), ms."""
        began = time.perf_counter()
        self._ledger.GetLedgerInfo(simledger_pb2.GetLedgerInfoRequest(), timeout=10)
        return (time.perf_counter() - began) * 1000

    def close(self) -> None:
        self._channel.close()


def round_trips(pair: Pair, times: int) -> tuple[list[float], list[float], list[float]]:
    """``times`` settlements one at a time, each followed by a measure of the floor (a commit
    and a hop): the three lists of ms, so that all see the same load of the machine."""
    floor = Floor(pair)
    trips, commits, hops = [], [], []
    try:
        for _ in range(times):
            trips.append(round_trip(pair.alice, pair.bob))
            commits.append(floor.commit())
            hops.append(floor.hop())
    finally:
        floor.close()
    return trips, commits, hops


def host_pids(*hosts: Host) -> set[int]:
    """The processes of ``hosts`` (their adaptors are their children)."""
    return {process.pid for host in hosts for process in host.processes.values()}


def packet_rounds(
    pair: Pair, count: int, rounds: int, concurrency: int
) -> tuple[float, float, float, float]:
    """Medians over ``rounds`` of packets/s, median latency and p99 latency (ms), and the CPU
    milliseconds both hosts spent per packet (the steadier figure on a shared machine)."""
    rates, medians, p99s, cpus = [], [], [], []
    pids = host_pids(pair.alice, pair.bob)
    for _ in range(rounds):
        cpu_before = cpu_seconds(pids)
        elapsed, last = send(pair.alice, count, concurrency)
        cpus.append(1000 * (cpu_seconds(pids) - cpu_before) / max(1, last.fulfilled))
        rates.append(last.fulfilled / elapsed)
        medians.append(last.median_latency_ms)
        p99s.append(last.p99_latency_ms)
    median = statistics.median
    return median(rates), median(medians), median(p99s), median(cpus)


def single_settlements(settlements: int) -> tuple[float, float, float, float]:
    """3. and 4. alone, after 60 packets (so that Alice owes Bob): the medians of the round
    trip, the ledger Transfer and GetLedgerInfo, and the largest round trip, ms."""
    with workdir() as directory, running(pair(directory, -1_000_000)) as hosts:
        send(hosts.alice, 60, 4)
        round_trips(hosts, 2)  # warm-up
        trips, commits, hops = round_trips(hosts, settlements)
    trip, commit, hop = (statistics.median(x) for x in (trips, commits, hops))
    return trip, commit, hop, max(trips)


#: A settle threshold the packets of a comparison do not reach: its settlements are its own.
COMPARE_THRESHOLD = -1_900_000


@contextmanager
def older_pair(older: Path, directory: Path) -> Iterator[Pair]:
    """A pair whose ledger, hosts and adaptors run the code of the tree at ``older`` (its
    processes start with PYTHONPATH on it, and its in-tree adaptors)."""
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(older)
    try:
        context = running(
            Pair(directory, (Side(threshold=COMPARE_THRESHOLD),) * 2, adaptors=older / "adaptors")
        )
        hosts = context.__enter__()
    finally:
        if saved is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = saved
    try:
        yield hosts
    finally:
        context.__exit__(None, None, None)


def compare(older: Path, rounds: int, settlements: int) -> list[str]:
    """The tree at ``older`` (before) and this one (after) side by side: two pairs of hosts on
    two ledgers, running together; ``rounds`` rounds of ``settlements`` settlements on each,
    one settlement at a time, alternating between the pairs, each followed by a measure of its
    pair's floor, so that both see the same load."""
    with (
        workdir() as first,
        workdir() as second,
        older_pair(older, first) as before,
        running(pair(second, COMPARE_THRESHOLD)) as after,
    ):
        pairs = {"before": before, "after": after}
        # Enough owed for every settlement of one cent, below the credit limit.
        owed = (2 + rounds * settlements) * 10_000
        for hosts in pairs.values():
            send(hosts.alice, owed // PACKET_AMOUNT + 1, 4)
            round_trips(hosts, 2)  # warm-up
        floors = {name: Floor(hosts) for name, hosts in pairs.items()}
        figures: dict[str, list[tuple[float, float, float]]] = {"before": [], "after": []}
        medians: dict[str, list[float]] = {"before": [], "after": []}
        try:
            for number in range(rounds):
                trips: dict[str, list[float]] = {"before": [], "after": []}
                order = ["before", "after"] if number % 2 == 0 else ["after", "before"]
                for _ in range(settlements):
                    for name in order:
                        trip = round_trip(pairs[name].alice, pairs[name].bob)
                        figures[name].append((trip, floors[name].commit(), floors[name].hop()))
                        trips[name].append(trip)
                for name in order:
                    medians[name].append(statistics.median(trips[name]))
        finally:
            for floor in floors.values():
                floor.close()
    rows = [
        "| tree | settlement | ledger Transfer | GetLedgerInfo | floor | settlement / floor "
        "| rounds (settlement) |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for name in ("before", "after"):
        trip, commit, hop = (statistics.median(f[i] for f in figures[name]) for i in range(3))
        each = ", ".join(f"{value:.1f}" for value in medians[name])
        rows.append(
            f"| {name} | {trip:.1f} ms | {commit:.2f} ms | {hop:.2f} ms | {commit + hop:.2f} ms "
            f"| {trip / (commit + hop):.2f}x | {each} |"
        )
    after_trip = statistics.median(f[0] for f in figures["after"])
    before_trip = statistics.median(f[0] for f in figures["before"])
    rows += ["", f"after / before: {after_trip / before_trip:.2f}"]
    return rows


def packets(count: int, rounds: int, settlements: int) -> list[str]:
    rows = [
        "| concurrency | packets/s (median of rounds) | median latency | p99 latency "
        "| CPU of both hosts per packet |",
        "|---:|---:|---:|---:|---:|",
    ]
    with workdir() as directory, running(pair(directory, -1_000_000)) as hosts:
        alice = hosts.alice
        send(alice, 50, 4)  # warm-up
        for concurrency in (1, 16):
            rate, median, p99, cpu = packet_rounds(hosts, count, rounds, concurrency)
            rows.append(
                f"| {concurrency} | {rate:.0f} | {median:.2f} ms | {p99:.2f} ms | {cpu:.2f} ms |"
            )
        round_trips(hosts, 2)  # warm-up
        trips, commits, hops = round_trips(hosts, settlements)
    trip, commit, hop = (statistics.median(x) for x in (trips, commits, hops))
    floor = commit + hop
    rows += [
        "",
        f"One settlement alone ({settlements} in a row, each an admin Settle of one cent), "
        "from Alice's debit to Bob's credit acknowledged, next to the floor measured after each:",
        "",
        "| measure (median) | ms |",
        "|---|---:|",
        f"| settlement, debit to credit acknowledged | {trip:.1f} |",
        f"| ledger Transfer (one hop and the commit) | {commit:.2f} |",
        f"| GetLedgerInfo (one hop) | {hop:.2f} |",
        f"| floor: one ledger commit plus two RPC hops (the two above) | {floor:.2f} |",
        f"| settlement / floor | {trip / floor:.1f}x |",
        f"| settlement, max | {max(trips):.1f} |",
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
    parser.add_argument("--singles", type=int, help="single settlements to time (default 30)")
    parser.add_argument(
        "--singles-only", action="store_true", help="only the single settlements and the floor"
    )
    parser.add_argument("--compare", type=Path, metavar="DIR", help="an older tree to compare")
    parser.add_argument("--rounds", type=int, default=3, help="rounds with --compare")
    args = parser.parse_args()
    count, rounds, settle_count = (300, 2, 100) if args.quick else (1000, 3, 300)
    singles = args.singles or (10 if args.quick else 30)
    if args.singles_only:
        print(" ".join(f"{x:.3f}" for x in single_settlements(singles)))
        return 0
    if args.compare is not None:
        load = os.getloadavg()[0]
        rows = compare(args.compare.resolve(), args.rounds, singles)
        print(
            f"# One settlement against its floor, {args.compare} (before) and this tree (after), "
            f"side by side, {args.rounds} rounds of {singles} each "
            f"({time.strftime('%Y-%m-%d %H:%M')}, "
            f"load {load:.1f} -> {os.getloadavg()[0]:.1f})\n"
        )
        print("\n".join(rows))
        return 0
    cpu = cpu_name()
    print(
        f"# End to end ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, {cpu}, "
        f"Python {platform.python_version()})\n"
    )
    print(f"## Packets through Alice's host, SQLite balance middleware ({count} per round)\n")
    print("\n".join(packets(count, rounds, singles)) + "\n")
    print(f"## Settlements ({settle_count} packets, each one settles)\n")
    print("\n".join(settling(settle_count)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
