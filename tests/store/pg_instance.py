"""One host instance of the several-instances test: the engine on a shared PostgreSQL database,
paying on a real simledger, until killed.

    python -m tests.store.pg_instance URL LEDGER NAME SEED [--ready FILE] [--drain]

It applies balance changes (keys ``<NAME>-<n>``) to the accounts in ACCOUNTS, which cross the
settle threshold often, delivers every incoming transfer the test made on the ledger (all
instances deliver all of them, in their own order, as the adaptors of one ledger account would),
and carries the outbox with a short lease. Payments are ledger Transfers whose id is
``<our ledger account>:<settlement id>``, the simledger adaptors' rule: the ledger pays one
transfer id once, whichever instance asks, which is what makes adaptors of one ledger account
idempotent across instances. With ``--drain`` it changes no balance: it works the outbox until
nothing has work left, then exits 0. ``--ready FILE``: the file is created once the instance
works (its start-up, imports included, takes a while on a busy machine).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
from pathlib import Path

import grpc

from host.engine import Engine, Policy, SettlementState
from host.engine.errors import PermanentSettlementError, TransientSettlementError
from host.engine.ports import SendResult
from host.pb.ilphost.simledger.v1 import simledger_pb2, simledger_pb2_grpc
from host.store.postgres import PostgresStore
from sdk.backoff import Backoff
from sdk.pb.ilphost.types.v1 import types_pb2

OURS = "ours-ledger"
#: Account id -> the peer's ledger account.
ACCOUNTS = {f"peer{n}": f"peer{n}-ledger" for n in range(4)}
SCALE = 2
POLICY = Policy(settle_threshold=-500, settle_to=0, min_balance=-(10**9), max_balance=10**9)
#: Incoming transfers the test makes: ``in-<n>`` from ``peer<n % 4>``, amount ``AMOUNT(n)``.
INCOMING = 24
#: Short, so that the rows of a killed instance come back soon; longer than a payment may take
#: (TRANSFER_TIMEOUT), as the outbox requires, even on a machine busy with other work.
LEASE = 3.0
TRANSFER_TIMEOUT = 2.5
#: Retries within a second: the ledger's faults are frequent here, and a drained outbox is the
#: end of the test, not a wait of a minute.
BACKOFF = Backoff(initial=0.05, multiplier=2.0, cap=1.0)


def incoming_amount(n: int) -> int:
    return 100 + 7 * n


class LedgerPort:
    """The SettlementPort of the simledger adaptors, reduced to what this test needs."""

    def __init__(self, stub: simledger_pb2_grpc.SimLedgerStub) -> None:
        self._stub = stub

    async def send_money(
        self, account_id: str, ledger_amount: int, idempotency_key: str
    ) -> SendResult:
        transfer_id = f"{OURS}:{idempotency_key}"
        try:
            await self._stub.Transfer(
                simledger_pb2.TransferRequest(
                    transfer_id=transfer_id,
                    from_account_id=OURS,
                    to_account_id=ACCOUNTS[account_id],
                    amount=types_pb2.Amount(value=str(ledger_amount), scale=SCALE),
                ),
                timeout=TRANSFER_TIMEOUT,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise TransientSettlementError(exc.details() or "unavailable") from exc
            raise PermanentSettlementError(exc.details() or exc.code().name) from exc
        return SendResult(transfer_id, completed=True)

    async def acknowledge_incoming(self, settlement_id: str) -> None:
        """The ledger has no acknowledgement: an adaptor records it in its own state."""


async def main(url: str, ledger: str, name: str, seed: int, ready: str | None, drain: bool) -> int:
    rng = random.Random(seed)
    store = await PostgresStore.open(url)
    channel = grpc.aio.insecure_channel(ledger)
    port = LedgerPort(simledger_pb2_grpc.SimLedgerStub(channel))
    engine = Engine(store, {"sim": port}, lease=LEASE, outbox_batch=8, backoff=BACKOFF)
    for account in ACCOUNTS:
        await engine.create_account(
            account, adaptor="sim", asset_code="USD", asset_scale=SCALE, ledger_scale=SCALE,
            policy=POLICY,
        )  # fmt: skip
    await engine.reconcile()
    outbox = asyncio.create_task(engine.run_outbox())
    if ready is not None:
        await asyncio.to_thread(Path(ready).touch)
    if drain:
        reported = asyncio.get_running_loop().time()
        while True:
            rows = await store.list_settlements(None, 100_000)
            left = [r for r in rows if r.state is not SettlementState.COMPLETED]
            if not left:
                return 0
            if any(r.state is SettlementState.FAILED for r in left):
                print(f"refused for good: {left}", file=sys.stderr, flush=True)
                return 3
            if asyncio.get_running_loop().time() - reported > 10:
                print(f"still working on: {left}", file=sys.stderr, flush=True)
                reported = asyncio.get_running_loop().time()
            engine.outbox.wake()
            await asyncio.sleep(0.1)
    deliveries = list(range(INCOMING))
    rng.shuffle(deliveries)
    for n in range(100_000):
        account = rng.choice(sorted(ACCOUNTS))
        await engine.apply_balance_change(account, -rng.randint(50, 400), f"{name}-{n}")
        if deliveries and rng.random() < 0.3:
            k = deliveries.pop()
            await engine.receive_settlement(f"in-{k}", f"peer{k % 4}", incoming_amount(k))
        if n % 5 == 0:
            engine.outbox.wake()  # rows of other instances, or freed by a dead one's lease
        await asyncio.sleep(rng.random() * 0.01)
    outbox.cancel()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("ledger")
    parser.add_argument("name")
    parser.add_argument("seed", type=int)
    parser.add_argument("--ready")
    parser.add_argument("--drain", action="store_true")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.url, args.ledger, args.name, args.seed, args.ready, args.drain)))
