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

Prints Markdown; asserts nothing. ``--quick`` for a short run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
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


def settle_one(alice: Host, bob: Host) -> float:
    """Packets until Alice's balance crosses her settle threshold once; from the debit that
    crossing makes (the outbox row created) to Bob's credit acknowledged, ms."""
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
                debit = sent[new[0].ledger_settlement_id].created.ToNanoseconds()
                return (new[0].updated.ToNanoseconds() - debit) / 1e6
        time.sleep(0.005)
    raise RuntimeError("a settlement was not credited within 120 s")


def latency(
    block_time: float | None, confirmations: int, times: int, *, host_path: bool = False
) -> tuple[float, float, float | None, float | None]:
    """(median settlement latency, median floor, median latency of the same hosts on the
    simulated ledger and median durable commit if ``host_path``), ms, in one run."""
    with (
        workdir() as directory,
        workdir() as simulated,
        ethereum_chain(
            directory,
            "ethereum",
            adaptors_dir(),
            block_time=block_time,
            confirmations=confirmations,
        ) as chain,
        running(Pair(directory, chain=chain)) as hosts,
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
                own.append(settle_one(host.alice, host.bob))
                synced += durable_commit(directory, 3)
    return (
        statistics.median(trips),
        statistics.median(bare),
        statistics.median(own) if own else None,
        statistics.median(synced) if synced else None,
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
    args = parser.parse_args()
    n = 5 if args.quick else 15
    modes = [
        ("automine", None, 1, n),
        ("`--block-time 1`", 1.0, 1, 3 if args.quick else 8),
        ("`--block-time 1`", 1.0, 12, 2 if args.quick else 4),
    ]
    print(f"Python {sys.version.split()[0]}, {platform.machine()}, {os.cpu_count()} CPUs\n")
    print(
        "| node | confirmations | settlement, debit to credit acknowledged (median) "
        "| node floor, send to receipt (median) | ratio |"
    )
    print("|---|---:|---:|---:|---:|")
    automine: tuple[float, float, float, float] | None = None
    for name, block_time, confirmations, times in modes:
        settled, bare, host, synced = latency(
            block_time, confirmations, times, host_path=automine is None
        )
        automine = automine or (settled, bare, host or 0.0, synced or 0.0)
        print(
            f"| {name} | {confirmations} | {settled:.1f} ms | {bare:.1f} ms "
            f"| {settled / bare:.1f}x |",
            flush=True,
        )
    assert automine is not None
    settled, bare, host, synced = automine
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
    count, rate = throughput(100 if args.quick else 300)
    print(
        f"\nSettlements per second in automine, every packet settling: {count} settlements, "
        f"{rate:.1f} per second."
    )


if __name__ == "__main__":
    main()
