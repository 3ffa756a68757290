"""Settlement on Ethereum (anvil) end to end, next to the node's own floor.

Two peered hosts (real processes), each with the Ethereum adaptor, on one anvil node; ETH.

1. Latency of one settlement: from Alice's debit (the outbox row the admin Settle creates, as a
   crossed threshold does) to Bob's credit acknowledged (his incoming row COMPLETED), from the
   rows' own timestamps, one settlement at a time. Per mode: anvil in automine (a block per
   transaction) at 1 confirmation; anvil with ``--block-time 1`` at 1 and at 12 confirmations.
2. The floor, measured in the same run on the same node: this process signs an ETH transfer,
   sends it raw and polls for its receipt every millisecond (send -> receipt).
3. The host's own path, interleaved with the automine settlements: the same two hosts and the
   same measurement on the simulated ledger (which answers at once), so that what the Ethereum
   adaptors add shows apart from what any settlement costs, under the same load.
4. Settlements per second in automine: a threshold of one gwei makes every packet settle; from
   the first packet until every settlement is paid by Alice and acknowledged by Bob.
5. A durable commit on this disk, interleaved with the automine settlements: a one-row SQLite
   transaction in WAL mode with ``synchronous=FULL`` (what each of the three durable writes on
   a settlement's critical path costs at least: Alice's debit, her adaptor's signed
   transaction, Bob's credit; the node's floor has none, anvil keeps its chain in memory).
6. Where an automine settlement's time goes, stage by stage (medians), from the rows'
   timestamps and the adaptors' own log lines ("settlement signed" with its prepare, sign and
   store times; "incoming settlement" with the time from the block's announcement to the
   report), all on this machine's one clock.

``--compare COMMIT``: instead, the automine latency with the Ethereum adaptor of ``COMMIT``
(its ``adaptors/``, extracted with ``git archive``; everything else is this tree's) and with
this tree's, each on its own anvil and pair of hosts, next to the simulated-ledger pair and the
floor, one settlement of each in turn.

Prints Markdown; asserts nothing. ``--quick`` for a short run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from eth_account import Account

from host.demo.adaptors import adaptors_dir
from host.demo.anvil import CHAIN_ID, DEV_KEYS, Anvil, address_of_key
from host.demo.ethereum import ethereum_chain
from host.demo.scenario import PACKET_AMOUNT
from host.demo.twohost import SETTLE_THRESHOLD, Host, Pair, Side, running
from host.pb.ilphost.admin.v1 import admin_pb2

_OUT = admin_pb2.SETTLEMENT_DIRECTION_OUTGOING
_IN = admin_pb2.SETTLEMENT_DIRECTION_INCOMING
_DONE = admin_pb2.SETTLEMENT_STATE_COMPLETED
#: Packets that take Alice's balance from 0 past her settle threshold (she settles to 0).
CROSSING = -SETTLE_THRESHOLD // PACKET_AMOUNT + 1


@contextmanager
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ilpeth"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def floor(node: Anvil, times: int) -> list[float]:
    """send -> receipt of a bare signed ETH transfer, ms."""
    key = DEV_KEYS[4]
    sender, to = address_of_key(key), address_of_key(DEV_KEYS[3])
    nonce = int(node.call("eth_getTransactionCount", sender, "pending"), 16)
    trips = []
    for i in range(times):
        tx = {
            "type": 2,
            "chainId": CHAIN_ID,
            "nonce": nonce + i,
            "to": to,
            "value": 1,
            "gas": 21_000,
            "maxFeePerGas": 100 * 10**9,
            "maxPriorityFeePerGas": 10**9,
        }
        raw = "0x" + bytes(Account.sign_transaction(tx, key).raw_transaction).hex()
        began = time.perf_counter()
        tx_hash = node.call("eth_sendRawTransaction", raw)
        while node.call("eth_getTransactionReceipt", tx_hash) is None:
            time.sleep(0.001)
        trips.append((time.perf_counter() - began) * 1000)
    return trips


def durable_commit(directory: Path, times: int) -> list[float]:
    """A one-row SQLite commit with synchronous=FULL in ``directory``, ms."""
    db = sqlite3.connect(directory / "fsync.db", isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
        trips = []
        for i in range(times):
            began = time.perf_counter()
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO t VALUES (?)", (i,))
            db.execute("COMMIT")
            trips.append((time.perf_counter() - began) * 1000)
        return trips
    finally:
        db.close()


@dataclass(frozen=True)
class Settled:
    """One settlement: its ledger id and the rows' times, ns since the epoch."""

    ledger_id: str
    debit: int
    credited: int  # Bob's incoming row created: his engine has the adaptor's report
    acknowledged: int  # ... COMPLETED: credited and acknowledged to his adaptor

    @property
    def ms(self) -> float:
        return (self.acknowledged - self.debit) / 1e6


def settle_one(alice: Host, bob: Host) -> Settled:
    """Packets until Alice's balance crosses her settle threshold once; from the debit that
    crossing makes (the outbox row created) to Bob's credit acknowledged."""
    before = {s.id for s in bob.settlements() if s.direction == _IN}
    outgoing = len(alice.settlements())
    request = admin_pb2.SendPacketsRequest(
        destination="test.bob.bench", amount=PACKET_AMOUNT, count=CROSSING, concurrency=1
    )
    deadline = time.monotonic() + 120
    # Packets refused while the peer link comes up do not count: send until one settles.
    while len(alice.settlements()) == outgoing and time.monotonic() < deadline:
        list(alice.connector.SendPackets(request, timeout=60))
    while time.monotonic() < deadline:
        new = [s for s in bob.settlements() if s.direction == _IN and s.id not in before]
        if new and new[0].state == _DONE:
            # Bob may credit before Alice's engine has recorded the payment's id: wait for it.
            sent = {s.ledger_settlement_id: s for s in alice.settlements() if s.direction == _OUT}
            if new[0].ledger_settlement_id in sent:
                return Settled(
                    new[0].ledger_settlement_id,
                    sent[new[0].ledger_settlement_id].created.ToNanoseconds(),
                    new[0].created.ToNanoseconds(),
                    new[0].updated.ToNanoseconds(),
                )
        time.sleep(0.005)
    raise RuntimeError("a settlement was not credited within 120 s")


#: The stages of an automine settlement, in order (see ``stages``).
STAGES = (
    ("debit to SendMoney begun", "Alice's host → adaptor"),
    ("fees, gas and liquidity before signing", "Alice's adaptor"),
    ("sign", "Alice's adaptor"),
    ("store the signed transaction (disk sync)", "Alice's adaptor"),
    ("broadcast, mined, block announced to Bob's adaptor", "node"),
    ("read the block and its receipts, report", "Bob's adaptor"),
    ("report to Bob's engine (WatchEvents), credit committed", "Bob's adaptor → host"),
    ("credit to acknowledged (ReceiveMoney)", "Bob's host → adaptor"),
)


def _log_lines(host: Host, message: str) -> dict[str, dict[str, object]]:
    """The host's JSON log lines of its adaptor saying ``message``, by their key field
    (``tx`` or ``settlement``)."""
    found = {}
    for line in host.log_text().splitlines():
        if message not in line:
            continue
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if entry.get("@message") == message:
                found[str(entry.get("tx") or entry.get("settlement"))] = entry
    return found


def _ns(entry: dict[str, object]) -> int:
    stamp = str(entry["adaptor_timestamp"]).replace("Z", "+00:00")
    return int(datetime.fromisoformat(stamp).timestamp() * 1e9)


def stages(alice: Host, bob: Host, settled: list[Settled]) -> list[float] | None:
    """Median ms per stage (STAGES) of ``settled``, from the rows and the adaptors' log lines;
    None if the adaptor does not log its stages (an older one)."""
    signed, found = _log_lines(alice, "settlement signed"), _log_lines(bob, "incoming settlement")
    rows = []
    for s in settled:
        sign, seen = signed.get(s.ledger_id), found.get(s.ledger_id)
        if sign is None or seen is None or "store_ms" not in sign or seen.get("read_ms") is None:
            return None
        prepare, signing, store = (
            float(str(sign[k])) for k in ("prepare_ms", "sign_ms", "store_ms")
        )
        read = float(str(seen["read_ms"]))
        signed_at, reported = _ns(sign) / 1e6, _ns(seen) / 1e6
        began = signed_at - prepare - signing - store
        rows.append(
            (
                began - s.debit / 1e6,
                prepare,
                signing,
                store,
                reported - read - signed_at,
                read,
                s.credited / 1e6 - reported,
                (s.acknowledged - s.credited) / 1e6,
            )
        )
    return [statistics.median(column) for column in zip(*rows, strict=True)]


@dataclass
class Figures:
    """Medians of one run, ms (the host's path, the durable commit and the stages only when
    asked)."""

    settled: float
    floor: float
    host: float | None = None
    synced: float | None = None
    stages: list[float] | None = None


def latency(
    block_time: float | None,
    confirmations: int,
    times: int,
    *,
    host_path: bool = False,
    adaptors: Path | None = None,
) -> Figures:
    """Settlement latency and the floor, and if ``host_path`` the same hosts on the simulated
    ledger, a durable commit and the stages, interleaved in one run; with the Ethereum
    adaptor of ``adaptors`` (default: this tree's)."""
    with (
        workdir() as directory,
        workdir() as simulated,
        ethereum_chain(
            directory,
            "ethereum",
            adaptors or adaptors_dir(),
            block_time=block_time,
            confirmations=confirmations,
        ) as chain,
        running(Pair(directory, chain=chain, log_format="json")) as hosts,
        contextlib.ExitStack() as stack,
    ):
        alice, bob = hosts.alice, hosts.bob
        host = stack.enter_context(running(Pair(simulated))) if host_path else None
        settle_one(alice, bob)  # warm-up
        if host is not None:
            settle_one(host.alice, host.bob)
        trips, bare, own, synced = [], [], [], []
        for _ in range(times):  # interleaved: all see the same load of the machine
            trips.append(settle_one(alice, bob))
            bare += floor(chain.node, 1 if block_time else 3)
            if host is not None:
                own.append(settle_one(host.alice, host.bob).ms)
                synced += durable_commit(directory, 3)
        return Figures(
            statistics.median(t.ms for t in trips),
            statistics.median(bare),
            statistics.median(own) if own else None,
            statistics.median(synced) if synced else None,
            stages(alice, bob, trips) if host_path else None,
        )


def compare(before: Path, times: int) -> None:
    """The automine figures of the Ethereum adaptor in ``before`` and of this tree's, each on
    its own anvil and pair of hosts, with the simulated-ledger pair and the floor, settlement
    by settlement in turn: every figure sees the same load of the machine."""
    with (
        workdir() as old_dir,
        workdir() as new_dir,
        workdir() as simulated,
        ethereum_chain(old_dir, "ethereum", before) as old_chain,
        ethereum_chain(new_dir, "ethereum", adaptors_dir()) as new_chain,
        running(Pair(old_dir, chain=old_chain)) as old,
        running(Pair(new_dir, chain=new_chain)) as new,
        running(Pair(simulated)) as host,
    ):
        for pair in (old, new, host):
            settle_one(pair.alice, pair.bob)  # warm-up
        trips: dict[str, list[float]] = {"before": [], "after": [], "host": [], "floor": []}
        for _ in range(times):
            trips["before"].append(settle_one(old.alice, old.bob).ms)
            trips["after"].append(settle_one(new.alice, new.bob).ms)
            trips["host"].append(settle_one(host.alice, host.bob).ms)
            trips["floor"] += floor(new_chain.node, 3)
    median = {name: statistics.median(values) for name, values in trips.items()}
    print(
        f"{times} settlements each; the host's own path (simulated ledger) {median['host']:.1f} "
        f"ms, the node floor {median['floor']:.1f} ms.\n"
    )
    print("| adaptor | settlement | added by the adaptors | added / floor | settlement / floor |")
    print("|---|---:|---:|---:|---:|")
    for name in ("before", "after"):
        added = median[name] - median["host"]
        print(
            f"| {name} | {median[name]:.1f} ms | {added:.1f} ms | {added / median['floor']:.1f}x "
            f"| {median[name] / median['floor']:.1f}x |"
        )


def throughput(count: int) -> tuple[int, float]:
    """(settlements, settlements per second) with every packet settling, automine."""
    with (
        workdir() as directory,
        ethereum_chain(directory, "ethereum", adaptors_dir()) as chain,
        running(Pair(directory, (Side(threshold=-1), Side(threshold=-1)), chain=chain)) as hosts,
    ):
        alice, bob = hosts.alice, hosts.bob
        settle_one(alice, bob)  # the links are up and one settlement went through
        before = len([s for s in alice.settlements() if s.direction == _OUT])
        request = admin_pb2.SendPacketsRequest(
            destination="test.bob.bench", amount=PACKET_AMOUNT, count=count, concurrency=8
        )
        began = time.perf_counter()
        list(alice.connector.SendPackets(request, timeout=600))
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            out = [s for s in alice.settlements() if s.direction == _OUT]
            incoming = [s for s in bob.settlements() if s.direction == _IN]
            if all(s.state == _DONE for s in out + incoming) and len(incoming) == len(out):
                break
            time.sleep(0.05)
        elapsed = time.perf_counter() - began
    return len(out) - before, (len(out) - before) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer settlements per mode")
    parser.add_argument(
        "--compare",
        metavar="COMMIT",
        help="a commit whose Ethereum adaptor to compare with this tree's",
    )
    args = parser.parse_args()
    n = 5 if args.quick else 15
    print(f"Python {sys.version.split()[0]}, {platform.machine()}, {os.cpu_count()} CPUs\n")
    if args.compare is not None:
        with workdir() as before:
            archive = subprocess.run(
                ["git", "archive", args.compare, "adaptors"], check=True, capture_output=True
            ).stdout
            subprocess.run(["tar", "-x", "-C", str(before)], input=archive, check=True)
            compare(before / "adaptors", 2 * n)
        return
    modes = [
        ("automine", None, 1, n),
        ("`--block-time 1`", 1.0, 1, 3 if args.quick else 8),
        ("`--block-time 1`", 1.0, 12, 2 if args.quick else 4),
    ]
    print(
        "| node | confirmations | settlement, debit to credit acknowledged (median) "
        "| node floor, send to receipt (median) | ratio |"
    )
    print("|---|---:|---:|---:|---:|")
    automine: Figures | None = None
    for name, block_time, confirmations, times in modes:
        f = latency(block_time, confirmations, times, host_path=automine is None)
        automine = automine or f
        print(
            f"| {name} | {confirmations} | {f.settled:.1f} ms | {f.floor:.1f} ms "
            f"| {f.settled / f.floor:.1f}x |",
            flush=True,
        )
    assert automine is not None and automine.host is not None and automine.synced is not None
    settled, bare, host, synced = automine.settled, automine.floor, automine.host, automine.synced
    print(
        f"\nThe host's own path (the same hosts on the simulated ledger, interleaved with the "
        f"automine settlements): {host:.1f} ms; the Ethereum adaptors add "
        f"{settled - host:.1f} ms to it, {(settled - host) / bare:.1f}x the node floor."
    )
    print(
        f"\nA durable SQLite commit on this disk, interleaved with them: {synced:.2f} ms "
        f"(three on a settlement's critical path: {3 * synced:.1f} ms, "
        f"{3 * synced / bare:.1f}x the node floor, which has none)."
    )
    if automine.stages is not None:
        print("\nWhere an automine settlement's time goes (medians; they need not add up):\n")
        print("| stage | process | took |\n|---|---|---:|")
        for (stage, process), took in zip(STAGES, automine.stages, strict=True):
            print(f"| {stage} | {process} | {took:.1f} ms |")
    count, rate = throughput(100 if args.quick else 300)
    print(
        f"\nSettlements per second in automine, every packet settling: {count} settlements, "
        f"{rate:.1f} per second."
    )


if __name__ == "__main__":
    main()
