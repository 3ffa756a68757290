"""The scale curve of ``ilp-host run``: concurrency, peer accounts, memory, database size.

1. **Concurrency.** Packets/s and p50/p99 latency through ``ilp-host run`` (durable SQLite
   balances) at concurrency 1, 4, 16, 64 and 256, next to the JavaScript reference connector
   (npm ilp-connector 23.0.2, balances in memory) at the same concurrency: the contenders,
   sender and receiver of bench/bench_vs_ilp_connector.py (one Node process,
   bench/ilp_loadgen.js, over ilp-plugin-http).
2. **Peer accounts.** The same at concurrency 16 through a host with N sender accounts and N
   receiver accounts (N = 1, 10, 100: 2N peer accounts, every one a child of the host); the
   n-th packet goes from sender n % N to receiver n % N, so the packets and their balance
   updates spread over every account. Ratio to N = 1.
3. **Memory per peer account.** After those rounds (every account used), the resident set
   (VmRSS, /proc) of each host's ``ilp-host run`` process, and beside it its adaptor's; per
   account: (host RSS at N - host RSS at N = 1) / (2N - 2).
4. **Database size.** Two pairs of hosts on the simulated ledger (host.demo.twohost, as
   bench/bench_e2e.py runs them): one on new stores, one whose stores hold 1M settlements
   (Alice's outgoing ones to Bob, Bob's incoming ones from Alice, the same amounts: the books
   agree). The rows are written with the hosts stopped, through plain sqlite3 in transactions of
   100k rows, each row made by the store's own mapping (host.store.rows.settlement_values of an
   engine Settlement, completed): what the store would have written for each settlement. The
   filled pair is kept under the work directory (``--workdir``) and reused by the next run.
   Interleaved, on each pair: packets/s at concurrency 16 (Alice's SendPackets to Bob's local
   receiver), one settlement's round trip (admin Settle of one cent until Bob's incoming row is
   COMPLETED), settlements per second (K such Settles in a row until Bob acknowledged all), and
   the admin queries an operator runs, timed as RPCs and as the CLI commands
   (``ilp-host settlements``, ``accounts``, ``status``, ``reconcile``, whose peer.reconcile
   sums every settlement of the account on both hosts: Store.settled_totals).

Rounds are interleaved; the tables give medians of the rounds (and of the per-round medians
for latencies). Prints Markdown, asserts nothing.

    .venv/bin/python bench/bench_scale.py [--quick] [--only concurrency,accounts,database]
        [--accounts 1,10,100] [--settlements 1000000] [--workdir bench/.work] [--keep]

Needs `make setup` (tests/interop/node_modules holds ilp-connector and ilp-plugin-http).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack, closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_e2e import cpu_name, packet_rounds  # noqa: E402
from bench_vs_ilp_connector import (  # noqa: E402
    AMOUNT,
    ILP_HOST,
    NODE_MODULES,
    Loadgen,
    Processes,
    free_ports,
    host_config,
    loadgen,
    start_js,
    start_run,
)

from host.connector.local import nearest_rank  # noqa: E402
from host.demo.scenario import PACKET_AMOUNT  # noqa: E402
from host.demo.twohost import Host, Pair, Side, running  # noqa: E402
from host.engine.model import Direction, Settlement, SettlementState, incoming_id  # noqa: E402
from host.pb.ilphost.admin.v1 import admin_pb2  # noqa: E402
from host.store import sqlite_totals  # noqa: E402
from host.store.rows import SETTLEMENT_COLUMNS, settlement_values  # noqa: E402
from host.store.sqlite_schema import MIGRATIONS  # noqa: E402

CONCURRENCY = (1, 4, 16, 64, 256)
_IN = admin_pb2.SETTLEMENT_DIRECTION_INCOMING
_DONE = admin_pb2.SETTLEMENT_STATE_COMPLETED
#: Settled amounts of the filler rows: one cent at the hosts' scales (6 and the ledger's 2).
FILL_AMOUNT, FILL_LEDGER_AMOUNT = 10_000, 1
FILL_BATCH = 100_000
#: The settle threshold of the database pairs: Alice's packets settle now and then, as in
#: bench_e2e.py, so that the credit limit is never reached.
THRESHOLD = -1_000_000


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@dataclass
class Series:
    """One contender at one load, over the rounds."""

    pps: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    rejects: list[str] = field(default_factory=list)

    def add(self, result: dict[str, Any]) -> float:
        latencies = result["latencies_ms"]
        rate = float(result["fulfilled"] / result["seconds"])
        self.pps.append(rate)
        self.p50.append(nearest_rank(latencies, 0.5))
        self.p99.append(nearest_rank(latencies, 0.99))
        if result["rejected"]:
            self.rejects.append(f"{result['rejected']} rejected, first: {result['first_reject']}")
        return rate

    def cells(self) -> str:
        return (
            f"{statistics.median(self.pps):.0f} | {statistics.median(self.p50):.1f} | "
            f"{statistics.median(self.p99):.1f}"
        )


def ratio(a: Series, b: Series) -> str:
    return f"{statistics.median(a.pps) / statistics.median(b.pps):.2f}x"


async def warm(gen: Loadgen, destination: str, name: str, workdir: Path) -> None:
    answer = await gen.request(op="warm", destination=destination, seconds=60)
    if not answer.get("ok"):
        raise RuntimeError(f"{name}: packets are not fulfilled: {answer.get('last')} ({workdir})")


async def run(gen: Loadgen, count: int, concurrency: int, **where: Any) -> dict[str, Any]:
    return await gen.request(op="run", count=count, concurrency=concurrency, amount=AMOUNT, **where)


# -- 1. concurrency -----------------------------------------------------------------------------


async def concurrency_curve(args: argparse.Namespace, workdir: Path) -> list[str]:
    contenders = {"js": start_js, "run": start_run}
    series = {(name, c): Series() for name in contenders for c in CONCURRENCY}
    async with AsyncExitStack() as stack:
        started: dict[str, tuple[Loadgen, str]] = {}
        for name, start in contenders.items():
            say(f"starting {name} ...")
            gen, destination = await start(stack, workdir)
            await warm(gen, destination, name, workdir)
            started[name] = gen, destination
        for round_no in range(1, args.rounds + 1):
            for c in CONCURRENCY:
                for name, (gen, destination) in started.items():
                    result = await run(gen, args.count(c), c, destination=destination)
                    rate = series[name, c].add(result)
                    say(f"round {round_no} {name} c={c}: {rate:.0f} pkt/s")
    rows = [
        "| concurrency | packets per round | ilp-host run pkt/s | p50 ms | p99 ms "
        "| JS connector pkt/s | p50 ms | p99 ms | run / JS |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in CONCURRENCY:
        ours, js = series["run", c], series["js", c]
        rows.append(
            f"| {c} | {args.count(c)} | {ours.cells()} | {js.cells()} | {ratio(ours, js)} |"
        )
    rows += rejects({f"{name} c={c}": s for (name, c), s in series.items()})
    return rows


def rejects(series: dict[str, Series]) -> list[str]:
    return [
        f"\n{label}: {line}" for label, s in series.items() for line in s.rejects[:2] if s.rejects
    ]


# -- 2. and 3. peer accounts and memory ---------------------------------------------------------


def rss_kib(pid: int) -> int:
    """VmRSS of a process, in KiB (0 once it is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in text.splitlines() if line[:6] == "VmRSS:"), 0)


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (its adaptors, for a host)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # The parent's pid is the second field after the command's closing parenthesis.
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


@dataclass
class Spread:
    """A host with ``n`` sender and ``n`` receiver accounts, and its load generator."""

    n: int
    gen: Loadgen
    pid: int
    destinations: list[str]


async def start_spread(stack: AsyncExitStack, workdir: Path, n: int) -> Spread:
    """``ilp-host run`` with the child accounts sender0..sender<n-1> (each its own plugin of
    the load generator: the host tells its peers by their tokens) and receiver0..receiver<n-1>
    (all posting to the load generator's one receiver, which takes one token)."""
    host_port, receiver_port, *sender_ports = free_ports(2 + n)
    receiver_url = f"http://127.0.0.1:{receiver_port}/"
    peers = [
        (
            f"sender{k}",
            "child",
            f"http://127.0.0.1:{port}/",
            f"sender-{k}-token",
            f"sender-{k}-token",
        )
        for k, port in enumerate(sender_ports)
    ] + [
        (f"receiver{k}", "child", receiver_url, f"receiver-{k}-unused", "bench-receiver-token")
        for k in range(n)
    ]
    name = f"accounts-{n}"
    config = workdir / f"{name}.toml"
    text = host_config(workdir / name, "test.host", host_port, peers)
    # The load generator's plugins speak no CCP: no route exchange with them, as ilp-connector
    # has it for children (this host would ask each again after a refused route control,
    # backing off to every 2 minutes: with thousands of children, work for nothing).
    no_routes = 'relation = "child"\nsend_routes = false\nreceive_routes = false\n'
    config.write_text(text.replace('relation = "child"\n', no_routes))
    procs = Processes()
    stack.push_async_callback(procs.stop)
    await procs.start("run", "-c", str(config), log=workdir / f"{name}.log")
    host_url = f"http://127.0.0.1:{host_port}/"
    senders = [
        {"port": port, "url": host_url, "token": f"sender-{k}-token"}
        for k, port in enumerate(sender_ports)
    ]
    receiver = {"port": receiver_port, "url": host_url, "token": "bench-receiver-token"}
    gen = await stack.enter_async_context(loadgen(senders, receiver))
    destinations = [f"test.host.receiver{k}.bench" for k in range(n)]
    await warm(gen, destinations[0], name, workdir)
    # Every pair once before the rounds: each account has moved money when the rounds start.
    await run(gen, 2 * n, 1, destinations=destinations)
    return Spread(n, gen, procs.procs[0].pid, destinations)


async def accounts_curve(args: argparse.Namespace, workdir: Path) -> list[str]:
    c = 16
    series = {n: Series() for n in args.accounts}
    async with AsyncExitStack() as stack:
        hosts = []
        for n in args.accounts:
            say(f"starting a host with {2 * n} peer accounts ...")
            hosts.append(await start_spread(stack, workdir, n))
        for round_no in range(1, args.rounds + 1):
            for host in hosts:
                result = await run(host.gen, args.count(c), c, destinations=host.destinations)
                rate = series[host.n].add(result)
                say(f"round {round_no} accounts={2 * host.n}: {rate:.0f} pkt/s")
        await asyncio.sleep(1)  # let the last batch's garbage go before reading memory
        memory = {
            h.n: (rss_kib(h.pid), sum(rss_kib(child) for child in children(h.pid))) for h in hosts
        }
    one = series[1]
    rows = [
        f"Concurrency {c}, {args.count(c)} packets per round.\n",
        "| sender + receiver accounts | pkt/s | p50 ms | p99 ms | ratio to 2 accounts "
        "| host RSS MiB | adaptor RSS MiB |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in args.accounts:
        host_rss, adaptor_rss = memory[n]
        rows.append(
            f"| {n} + {n} | {series[n].cells()} | {ratio(series[n], one)} "
            f"| {host_rss / 1024:.1f} | {adaptor_rss / 1024:.1f} |"
        )
    base = memory[1][0]
    rows.append("")
    for n in args.accounts[1:]:
        rows.append(
            f"Memory per peer account of the host process, {2 * n} accounts against 2: "
            f"{(memory[n][0] - base) / (2 * n - 2):.1f} KiB.  "
        )
    rows += rejects({f"{2 * n} accounts": s for n, s in series.items()})
    return rows


# -- 4. database size ---------------------------------------------------------------------------


def sides() -> tuple[Side, Side]:
    side = Side(threshold=THRESHOLD)
    return side, side


def fill(alice: Host, bob: Host, count: int) -> None:
    """Write ``count`` completed settlements into the stopped hosts' stores: Alice's outgoing
    ones to Bob and, for each, Bob's incoming one from Alice (the same ledger id and amount)."""
    began = time.time() - 30 * 86400  # a month of history, one row every few seconds
    step = 30 * 86400 / count
    with (
        closing(sqlite3.connect(alice.engine_db, isolation_level=None)) as a,
        closing(sqlite3.connect(bob.engine_db, isolation_level=None)) as b,
    ):
        insert = f"INSERT INTO settlements ({SETTLEMENT_COLUMNS}) VALUES ({', '.join('?' * 14)})"
        for start in range(0, count, FILL_BATCH):
            outgoing, incoming = [], []
            for i in range(start, min(count, start + FILL_BATCH)):
                at = began + i * step
                ledger_id = f"fill-{i}"
                row = Settlement(
                    id=secrets.token_hex(16),
                    account_id="bob",
                    adaptor="simledger",
                    direction=Direction.OUTGOING,
                    state=SettlementState.COMPLETED,
                    amount=FILL_AMOUNT,
                    ledger_amount=FILL_LEDGER_AMOUNT,
                    ledger_settlement_id=ledger_id,
                    attempts=1,
                    created_at=at,
                    updated_at=at + 0.05,
                )
                outgoing.append(settlement_values(row, str))
                incoming.append(
                    settlement_values(
                        Settlement(
                            id=incoming_id("simledger", ledger_id),
                            account_id="alice",
                            adaptor="simledger",
                            direction=Direction.INCOMING,
                            state=SettlementState.COMPLETED,
                            amount=FILL_AMOUNT,
                            ledger_amount=FILL_LEDGER_AMOUNT,
                            ledger_settlement_id=ledger_id,
                            created_at=at + 0.03,
                            updated_at=at + 0.05,
                        ),
                        str,
                    )
                )
            for conn, rows in ((a, outgoing), (b, incoming)):
                conn.execute("BEGIN")
                conn.executemany(insert, rows)
                conn.execute("COMMIT")
            say(f"  {min(count, start + FILL_BATCH)} settlements written")
        for conn in (a, b):  # the rows went in behind the store's back: count them
            conn.execute("BEGIN")
            sqlite_totals.recount(conn)
            conn.execute("COMMIT")


def filled_pair(workdir: Path, count: int) -> Path:
    """The directory of a pair whose stores hold ``count`` settlements, made if not cached."""
    directory = workdir / f"scale-{count}-settlements"
    marker = directory / "filled"
    stamp = f"{count} settlements, schema version {len(MIGRATIONS)}\n"
    if marker.exists() and marker.read_text() == stamp:
        say(f"reusing {directory}")
        return directory
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    say(f"filling {directory} with {count} settlements ...")
    began = time.perf_counter()
    pair = Pair(directory, sides())
    with running(pair):  # the stores, their accounts and the adaptors' exchange, made by hosts
        pass
    fill(pair.alice, pair.bob, count)
    marker.write_text(stamp)
    say(f"filled in {time.perf_counter() - began:.0f} s")
    return directory


@contextmanager
def resumed(pair: Pair) -> Iterator[Pair]:
    """A pair started on the files of an earlier run: the ledger is funded and the adaptors
    know each other's ledger accounts already, so there is no exchange to wait for; ready once
    both engines have their peer account and a packet gets through."""
    try:
        pair.restart_ledger()
        pair.start_hosts()
        pair.wait_for(
            "both hosts' engines to have their peer account",
            lambda: True if all(host.exchanged()[0] for host in pair.hosts) else None,
        )
        pair.wait_for(
            "a packet from Alice to Bob", lambda: True if pair.send(1, 1).fulfilled else None
        )
        yield pair
    finally:
        pair.close()


def incoming_done(bob: Host, limit: int) -> set[str]:
    """Ids of Bob's completed incoming settlements among his ``limit`` newest."""
    reply = bob.admin.ListSettlements(admin_pb2.ListSettlementsRequest(limit=limit), timeout=30)
    return {s.id for s in reply.settlements if s.direction == _IN and s.state == _DONE}


def settle_and_wait(alice: Host, bob: Host, times: int) -> float:
    """Alice settles one cent ``times`` times in a row (each sent when the previous one
    returned); the seconds until Bob acknowledged every one."""
    window = times + 20
    before = incoming_done(bob, window)
    began = time.perf_counter()
    for _ in range(times):
        alice.admin.Settle(
            admin_pb2.SettleRequest(account_id="bob", amount={"value": "10000", "scale": 6}),
            timeout=30,
        )
    deadline = time.monotonic() + 120
    while len(incoming_done(bob, window) - before) < times:
        if time.monotonic() > deadline:
            raise RuntimeError(f"Bob did not acknowledge {times} settlements in 120 s")
        time.sleep(0.002)
    return time.perf_counter() - began


def owe_at_least(alice: Host, micro: int) -> None:
    """Send packets until Alice owes Bob at least ``micro`` (admin Settle pays only debts)."""
    owed = -int(alice.account().clearing_balance.value)
    if owed < micro:
        packet_rounds(alice, (micro - owed) // PACKET_AMOUNT + 1, 1, 1)


def quiet(pair: Pair) -> None:
    """Wait until neither host has a settlement with work left among its newest 50."""
    busy = {
        admin_pb2.SETTLEMENT_STATE_PENDING,
        admin_pb2.SETTLEMENT_STATE_SUBMITTED,
        admin_pb2.SETTLEMENT_STATE_CREDITED,
    }

    def settled() -> bool | None:
        for host in pair.hosts:
            reply = host.admin.ListSettlements(admin_pb2.ListSettlementsRequest(limit=50))
            if any(s.state in busy for s in reply.settlements):
                return None
        return True

    pair.wait_for("the settlements in flight to complete", settled)


def timed(call: Callable[[], object], times: int) -> tuple[float, object]:
    """Median wall time of ``call`` in ms, and what it returned the last time."""
    spent = []
    result = None
    for _ in range(times):
        began = time.perf_counter()
        result = call()
        spent.append((time.perf_counter() - began) * 1000)
    return statistics.median(spent), result


def admin_queries(pair: Pair) -> dict[str, Callable[[], object]]:
    alice = pair.alice
    config = str(alice.config)

    def cli(*argv: str) -> Callable[[], object]:
        return lambda: subprocess.run(
            [str(ILP_HOST), *argv, "-c", config], capture_output=True, timeout=120
        )

    def rpc(method: Callable[..., object], request: object) -> Callable[[], object]:
        return lambda: method(request, timeout=120)

    admin = alice.admin
    return {
        "ListSettlements (newest 20)": rpc(
            admin.ListSettlements, admin_pb2.ListSettlementsRequest(limit=20)
        ),
        "ListSettlements (account bob, newest 20)": rpc(
            admin.ListSettlements, admin_pb2.ListSettlementsRequest(account_id="bob", limit=20)
        ),
        "ListAccounts": rpc(admin.ListAccounts, admin_pb2.ListAccountsRequest()),
        "ListAdaptors + ListPeers": lambda: (
            admin.ListAdaptors(admin_pb2.ListAdaptorsRequest(), timeout=120),
            alice.connector.ListPeers(admin_pb2.ListPeersRequest(), timeout=120),
        ),
        "Reconcile bob (settled totals on both hosts)": rpc(
            alice.connector.Reconcile, admin_pb2.ReconcileRequest(peer="bob")
        ),
        "`ilp-host settlements`": cli("settlements"),
        "`ilp-host accounts`": cli("accounts"),
        "`ilp-host status`": cli("status"),
        "`ilp-host reconcile bob`": cli("reconcile", "bob"),
    }


@dataclass
class StoreFigures:
    """One pair of hosts over the rounds (ms for times, per second for rates)."""

    pps: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    trip: list[float] = field(default_factory=list)
    throughput: list[float] = field(default_factory=list)
    queries: dict[str, list[float]] = field(default_factory=dict)
    verdict: str = ""
    failures: dict[str, str] = field(default_factory=dict)


def measure_store(pair: Pair, figures: StoreFigures, args: argparse.Namespace) -> None:
    alice, bob = pair.alice, pair.bob
    rate, p50, p99 = packet_rounds(alice, args.count(16), 1, 16)
    figures.pps.append(rate)
    figures.p50.append(p50)
    figures.p99.append(p99)
    quiet(pair)
    owe_at_least(alice, 10_000 * (args.trips + args.burst) + 100_000)
    quiet(pair)
    figures.trip.append(
        statistics.median(settle_and_wait(alice, bob, 1) * 1000 for _ in range(args.trips))
    )
    figures.throughput.append(args.burst / settle_and_wait(alice, bob, args.burst))
    quiet(pair)
    for name, call in admin_queries(pair).items():
        # A CLI command costs a Python start-up (a second or more on a busy machine): fewer.
        times = args.cli_times if name.startswith("`") else args.rpc_times
        spent, result = timed(call, times)
        figures.queries.setdefault(name, []).append(spent)
        if isinstance(result, subprocess.CompletedProcess) and result.returncode:
            output = (result.stdout + result.stderr).decode(errors="replace").strip()
            figures.failures[name] = f"exit status {result.returncode}: {output[-300:]}"
    reply = alice.connector.Reconcile(admin_pb2.ReconcileRequest(peer="bob"), timeout=120)
    outcome = reply.reconciliation
    figures.verdict = outcome.status + (f" ({outcome.detail})" if outcome.detail else "")


def database_curve(args: argparse.Namespace, workdir: Path) -> list[str]:
    directory = filled_pair(args.workdir, args.settlements)
    figures = {"empty": StoreFigures(), "filled": StoreFigures()}
    (workdir / "empty").mkdir()
    with (
        running(Pair(workdir / "empty", sides())) as empty,
        resumed(Pair(directory, sides())) as filled,
    ):
        pairs = {"empty": empty, "filled": filled}
        for pair in pairs.values():
            packet_rounds(pair.alice, 50, 1, 4)  # warm-up
        for round_no in range(1, args.rounds + 1):
            for name, pair in pairs.items():
                measure_store(pair, figures[name], args)
                say(f"round {round_no} {name} store: {figures[name].pps[-1]:.0f} pkt/s")
    empty_f, filled_f = figures["empty"], figures["filled"]
    n = f"{args.settlements:,}"

    def row(what: str, values: Callable[[StoreFigures], list[float]], fmt: str) -> str:
        e, f = statistics.median(values(empty_f)), statistics.median(values(filled_f))
        return f"| {what} | {e:{fmt}} | {f:{fmt}} | {f / e:.2f}x |"

    rows = [
        f"| measure | new stores | {n} settlements in each | ratio |",
        "|---|---:|---:|---:|",
        row(f"packets/s, c=16 ({args.count(16)} per round)", lambda s: s.pps, ".0f"),
        row("packet latency p50, ms", lambda s: s.p50, ".1f"),
        row("packet latency p99, ms", lambda s: s.p99, ".1f"),
        row(f"settlement round trip, ms (median of {args.trips})", lambda s: s.trip, ".1f"),
        row(f"settlements/s ({args.burst} in a row)", lambda s: s.throughput, ".1f"),
    ]
    for name in empty_f.queries:
        rows.append(row(f"{name}, ms", lambda s, name=name: s.queries[name], ".1f"))
    rows.append(
        f"\nReconcile's verdict: {empty_f.verdict} (new stores), {filled_f.verdict} (filled)."
    )
    for label, f in (("new stores", empty_f), ("filled", filled_f)):
        rows += [f"\n{name} ({label}, last round): {text}" for name, text in f.failures.items()]
    return rows


# -- the run ------------------------------------------------------------------------------------

SECTIONS = {
    "concurrency": (
        "Concurrency (durable SQLite balances against the JS connector)",
        concurrency_curve,
    ),
    "accounts": ("Peer accounts (concurrency 16) and memory per account", accounts_curve),
    "database": ("Database size", database_curve),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer packets and rounds")
    parser.add_argument(
        "--only",
        type=lambda s: s.split(","),
        default=list(SECTIONS),
        help="sections, comma-separated: " + ",".join(SECTIONS),
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=ROOT / "bench" / ".work",
        help="where the filled stores are kept between runs (default bench/.work)",
    )
    parser.add_argument(
        "--accounts",
        type=lambda s: [int(n) for n in s.split(",")],
        default=[1, 10, 100],
        help="the host's sender (and receiver) accounts, comma-separated, 1 first",
    )
    parser.add_argument("--settlements", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="keep the logs of this run")
    args = parser.parse_args()
    if unknown := set(args.only) - set(SECTIONS):
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))}")
    if not (NODE_MODULES / "ilp-connector").is_dir():
        parser.error(f"{NODE_MODULES.relative_to(ROOT)} lacks ilp-connector: run `make setup`")
    per_worker = 8 if args.quick else 16
    args.count = lambda c: max(300 if args.quick else 1000, per_worker * c)
    args.rounds = 2 if args.quick else 3
    args.trips, args.burst = (5, 20) if args.quick else (15, 50)
    args.rpc_times, args.cli_times = (1, 1) if args.quick else (3, 2)
    began = time.perf_counter()
    print(
        f"# Scale ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, {cpu_name()}, "
        f"Python {platform.python_version()}, load {os.getloadavg()[0]:.2f} at the start)\n"
    )
    workdir = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    try:
        for key in args.only:
            title, section = SECTIONS[key]
            result = section(args, workdir)
            if asyncio.iscoroutine(result):
                result = asyncio.run(result)
            print(f"## {title}\n\n" + "\n".join(result) + "\n", flush=True)
    finally:
        if args.keep:
            say(f"logs in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"{args.rounds} interleaved rounds, medians; {time.perf_counter() - began:.0f} s "
        f"in all, load {os.getloadavg()[0]:.2f} at the end."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
