"""Three engine instances on one PostgreSQL database, killed at random while the ledger loses
replies: every settlement is paid exactly once, none is left behind, every incoming one is
credited once, and the books agree with the ledger.

What the tier run (test_store_postgres_tier.py: whole ``ilp-host run`` instances, packets, the
``engine.after-send-money`` failpoint, reconciliation with the peer) does not check, and this
test does: a ledger that answers payments UNAVAILABLE after committing them (a lost reply,
retried with the same key by whichever instance holds the row then), four accounts settling
at once (their rows claimed across instances with SKIP LOCKED), and the rows of a killed
instance taken over by the others once its short lease runs out, not by its restart. Each
instance is a real process (tests/store/pg_instance.py: the engine, the PostgreSQL store,
payments on a real simledger). After the chaos, one more instance drains the outbox.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import grpc
import pytest

from host.engine import Direction, SettlementState
from host.pb.ilphost.simledger.v1 import simledger_pb2, simledger_pb2_grpc
from host.simledger.process import start_ledger
from host.store.postgres import PostgresStore
from sdk import failpoints
from sdk.pb.ilphost.types.v1 import types_pb2
from tests.postgres_server import PostgresServer
from tests.store.pg_instance import ACCOUNTS, INCOMING, OURS, SCALE, incoming_amount

REPO = Path(__file__).resolve().parents[2]
INSTANCES = 3
#: SIGKILLs; bounded in time.
KILLS = 5
#: ... while they made at least this many settlements.
SETTLEMENTS = 20
SETTLED = "SELECT count(*) FROM settlements WHERE direction = 'outgoing'"
CHAOS_DEADLINE = 120.0
FUNDING = 10**9
T = TypeVar("T")


def until_ok(call: Callable[[], T]) -> T:
    """A ledger call retried while the fault knob answers UNAVAILABLE (it is idempotent)."""
    for _ in range(50):
        try:
            return call()
        except grpc.RpcError as exc:
            if exc.code() is not grpc.StatusCode.UNAVAILABLE:  # type: ignore[attr-defined]
                raise
    raise AssertionError("the ledger stayed unavailable")


def amount(value: int) -> types_pb2.Amount:
    return types_pb2.Amount(value=str(value), scale=SCALE)


def spawn(url: str, ledger: str, name: str, seed: int, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env.pop(failpoints.ENV_FAILPOINTS, None)
    return subprocess.Popen(
        [sys.executable, "-m", "tests.store.pg_instance", url, ledger, name, str(seed), *args],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@pytest.mark.slow
def test_three_instances_killed_at_random_pay_every_settlement_exactly_once(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    url = postgres.new_schema()
    rng = random.Random(15)
    with start_ledger(
        tmp_path / "ledger.db",
        f"unix:{tmp_path}/ledger.sock",
        ["--seed", "15", "--fail-after-commit-per-mille", "100"],
    ) as ledger, grpc.insecure_channel(ledger.target) as channel:  # fmt: skip
        book = simledger_pb2_grpc.SimLedgerStub(channel)
        for account in (OURS, *ACCOUNTS.values()):
            until_ok(
                lambda a=account: book.CreateAccount(
                    simledger_pb2.CreateAccountRequest(account_id=a)
                )
            )
            until_ok(
                lambda a=account: book.Mint(
                    simledger_pb2.MintRequest(
                        transfer_id=f"mint-{a}", account_id=a, amount=amount(FUNDING)
                    )
                )
            )
        for n in range(INCOMING):
            until_ok(lambda n=n: book.Transfer(simledger_pb2.TransferRequest(
                transfer_id=f"in-{n}", from_account_id=f"peer{n % 4}-ledger",
                to_account_id=OURS, amount=amount(incoming_amount(n)))))  # fmt: skip

        # Chaos: three instances; now and then one is SIGKILLed and a new one takes its place.
        generation = 0
        running: list[subprocess.Popen[str]] = []
        died: list[subprocess.Popen[str]] = []
        started: dict[int, Path] = {}

        def start() -> None:
            nonlocal generation
            generation += 1
            ready = tmp_path / f"g{generation}.ready"
            process = spawn(url, ledger.target, f"g{generation}", generation, "--ready", str(ready))
            started[process.pid] = ready
            running.append(process)

        for _ in range(INSTANCES):
            start()
        deadline = time.monotonic() + CHAOS_DEADLINE
        kills = 0
        try:
            while time.monotonic() < deadline and not (
                kills >= KILLS and int(postgres.psql(SETTLED, url)) >= SETTLEMENTS
            ):
                time.sleep(rng.uniform(0.5, 1.5))
                for process in [p for p in running if p.poll() is not None]:
                    running.remove(process)
                    died.append(process)
                    start()
                # Only working instances: a kill during start-up proves nothing.
                victims = [p for p in running if started[p.pid].exists()]
                if not victims:
                    continue
                victim = rng.choice(victims)
                victim.send_signal(signal.SIGKILL)
                victim.wait()
                running.remove(victim)
                died.append(victim)
                kills += 1
                start()
        finally:
            for process in running:
                process.kill()
                process.wait()
            died.extend(running)
        logs = [process.communicate()[1] for process in died]
        for log in logs:
            assert "Traceback" not in log, log
        assert kills >= KILLS

        drain = spawn(url, ledger.target, "drain", 0, "--drain")
        try:
            _, drain_log = drain.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            drain.kill()
            _, drain_log = drain.communicate()
        assert drain.returncode == 0, drain_log

        async def books() -> tuple[list, list]:  # type: ignore[type-arg]
            store = await PostgresStore.open(url)
            try:
                return await store.list_accounts(), await store.list_settlements(None, 100_000)
            finally:
                await store.close()

        accounts, rows = asyncio.run(books())
        outgoing = [r for r in rows if r.direction is Direction.OUTGOING]
        incoming = [r for r in rows if r.direction is Direction.INCOMING]
        assert all(r.state is SettlementState.COMPLETED for r in rows)
        assert len(outgoing) >= SETTLEMENTS
        # Every settlement is one ledger transfer of its amount to its peer...
        for row in outgoing:
            request = simledger_pb2.GetTransferRequest(transfer_id=f"{OURS}:{row.id}")
            transfer = until_ok(lambda r=request: book.GetTransfer(r)).transfer
            assert transfer.to_account_id == ACCOUNTS[row.account_id]
            assert int(transfer.amount.value) == row.ledger_amount
        # ... and the ledger paid nothing else: our account lost exactly their sum.
        received = sum(incoming_amount(n) for n in range(INCOMING))
        ours = until_ok(lambda: book.GetAccount(simledger_pb2.GetAccountRequest(account_id=OURS)))
        paid = sum(r.ledger_amount for r in outgoing)
        assert int(ours.account.balance.value) == FUNDING + received - paid
        # Incoming transfers: each credited at most once, for its own amount and account.
        for row in incoming:
            n = int(row.ledger_settlement_id.removeprefix("in-"))
            assert (row.account_id, row.ledger_amount) == (f"peer{n % 4}", incoming_amount(n))
        assert len({r.ledger_settlement_id for r in incoming}) == len(incoming) >= 1
        # The books: balance = applied changes + settled - credited, per account.
        applied = dict.fromkeys(ACCOUNTS, 0)
        for request in postgres.psql(
            "SELECT request FROM idempotency WHERE scope = 'balance'", url
        ).splitlines():
            account, delta = request.split()
            applied[account] += int(delta)
        for a in accounts:
            settled = sum(r.amount for r in outgoing if r.account_id == a.id)
            credited = sum(r.amount for r in incoming if r.account_id == a.id)
            assert a.balance == applied[a.id] + settled - credited
            assert a.policy.settle_threshold < a.balance  # every crossing settled
