"""A connector tier on PostgreSQL, with real processes: Alice runs two ``ilp-host connector``
instances behind her one ILP address and two ``ilp-host engine`` instances, all four on one
PostgreSQL database (her clearing books and her engine's store side by side); Bob runs
``ilp-host run``.

What it proves, in order:

- the credit limit holds across the connector instances: a packet one instance would let
  through on its own is refused because of what the other one cleared;
- a packet that takes Alice to her threshold settles on the ledger, once, though two engines
  follow the books (each change applied once, whichever engine sees it);
- a connector instance SIGKILLed mid-traffic loses nothing and doubles nothing: once it is
  back (its resolver asks Bob about the packets it had in flight), Bob's books, Alice's shared
  books, Alice's engine and the ledger agree, and ``ilp-host reconcile`` says so.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from host.demo import twohost
from host.demo.twohost import Side, free_ports
from host.pb.ilphost.admin.v1 import admin_pb2
from tests.crash.harness import FUNDING, INCOMING, OUTGOING, books_problems
from tests.postgres_server import PostgresServer

pytestmark = pytest.mark.slow

PACKET = 100_000  # micro-dollars
THRESHOLD = -1_000_000  # Alice settles (back to 0) once she owes Bob this much
COMPLETED = admin_pb2.SETTLEMENT_STATE_COMPLETED


class Tier:
    """The pair, with Alice's second connector and engine (``second``) on her database."""

    def __init__(self, directory: Path, url: str) -> None:
        extra = f'[engine]\ndatabase = "{url}"\n'
        self.pair = twohost.Pair(
            directory,
            (Side(engine="external", threshold=THRESHOLD, extra=extra), Side()),
            funding=FUNDING,
        )
        alice = self.pair.alice
        text = alice.config.read_text()
        text = text.replace("[connector]\n", f'[connector]\ndatabase = "{url}"\n', 1)
        alice.config.write_text(text)
        (directory / "second").mkdir()
        self.second = twohost.Host("alice", "bob", directory / "second", "external")
        (port,) = free_ports(1)
        text = text.replace(str(alice.state_dir), str(self.second.state_dir))
        text = text.replace(str(alice.adaptor_db), str(self.second.adaptor_db))
        own_port = f"port = {self._port(text)}\n"
        self.second.config.write_text(text.replace(own_port, f"port = {port}\n", 1))

    @staticmethod
    def _port(text: str) -> int:
        section = text.split("[connector]\n", 1)[1]
        line = next(line for line in section.splitlines() if line.startswith("port = "))
        return int(line.removeprefix("port = "))

    def send(
        self,
        host: twohost.Host,
        amount: int,
        count: int,
        concurrency: int = 1,
        progress: threading.Event | None = None,
    ) -> int:
        """Alice sends ``count`` packets of ``amount`` to Bob through ``host``'s connector;
        how many were fulfilled. ``progress`` is set once a few were."""
        request = admin_pb2.SendPacketsRequest(
            destination="test.bob.demo", amount=amount, count=count, concurrency=concurrency
        )
        last = admin_pb2.SendPacketsResponse()
        for last in host.connector.SendPackets(request, timeout=twohost.DEADLINE):
            if progress is not None and last.fulfilled >= 3:
                progress.set()
        assert last.done, f"{last}{self.pair.logs()}"
        return last.fulfilled

    def views(self) -> list[int | None]:
        """Bob's account as each running Alice connector holds it."""
        return [host.connector_view()[0] for host in (self.pair.alice, self.second)]


@pytest.fixture
def tier(tmp_path: Path, postgres: PostgresServer) -> Iterator[Tier]:
    tier = Tier(tmp_path, postgres.new_schema())
    pair = tier.pair
    try:
        pair.start_ledger()
        pair.start_hosts()
        pair.wait_exchanged()
        tier.second.start()
        pair.wait_for(
            "the second engine's account and the second connector's books",
            lambda: (
                True
                if tier.second.account() and tier.second.connector_view()[0] is not None
                else None
            ),
        )
        yield tier
    finally:
        tier.second.stop()
        pair.close()


def reconcile(host: twohost.Host) -> dict[str, object]:
    """``ilp-host reconcile bob --json`` on Alice's first instance, as an operator runs it."""
    result = subprocess.run(
        [sys.executable, "-m", "host.cli", "reconcile", host.peer, "--json",
         "--attempts", "20", "-c", str(host.config)],
        capture_output=True, text=True, cwd=host.directory, timeout=120, check=False,
    )  # fmt: skip
    outcome: dict[str, object] = json.loads(result.stdout or "{}")
    outcome["exit_status"] = result.returncode
    return outcome


def test_a_connector_tier_shares_limits_settles_once_and_survives_a_sigkill(tier: Tier) -> None:
    pair, first, second = tier.pair, tier.pair.alice, tier.second

    # The limit across instances: 9 packets through the first leave -900 000; through the
    # second, 1 100 001 more would pass its own view of the books but crosses -2 000 000.
    assert tier.send(first, PACKET, 9) == 9
    assert tier.send(second, 1_100_001, 1) == 0
    assert tier.views() == [-900_000, -900_000]
    # Exactly to the limit: fulfilled, and past the threshold: one settlement of 2 000 000.
    assert tier.send(second, 1_100_000, 1) == 1
    pair.wait_for(
        "Alice's settlement completed and both connectors back at 0",
        lambda: (
            True
            if [s.state for s in first.settlements()] == [COMPLETED] and tier.views() == [0, 0]
            else None
        ),
    )

    # Traffic through both; the second dies mid-way and comes back.
    fulfilled = [0, 0]
    under_way = threading.Event()

    def traffic(index: int, host: twohost.Host) -> None:
        try:
            count = 400 if index else 40  # the second's run outlasts the kill
            fulfilled[index] = tier.send(host, PACKET, count, 2, under_way if index else None)
        except grpc.RpcError:  # the killed instance's stream breaks: Bob's books will tell
            fulfilled[index] = -1

    threads = [
        threading.Thread(target=traffic, args=(0, first)),
        threading.Thread(target=traffic, args=(1, second)),
    ]
    for thread in threads:
        thread.start()
    assert under_way.wait(twohost.DEADLINE), "no packet went through the second connector"
    second.kill("connector")
    for thread in threads:
        thread.join(twohost.DEADLINE)
    # The second's stream broke with it (-1), unless the credit limit had refused the rest of
    # its packets at once (settlements restore room only as fast as the ledger pays).
    assert fulfilled[0] > 0 and fulfilled[1] != 0
    second.start(roles=("connector",))

    def quiet() -> tuple[list[admin_pb2.Settlement], list[admin_pb2.Settlement]] | None:
        if not all(host.in_step() for host in (first, second, pair.bob)):
            return None
        out = [s for s in first.settlements() if s.direction == OUTGOING]
        inc = [s for s in pair.bob.settlements() if s.direction == INCOMING]
        if len(inc) == len(out) and all(s.state == COMPLETED for s in out + inc):
            return out, inc
        return None

    outgoing, incoming = pair.wait_for("every settlement completed and credited", quiet)
    assert len(outgoing) >= 2
    bob = pair.bob.account()
    # What Bob fulfilled, from his books: his balance plus what Alice paid him.
    sent = int(bob.clearing_balance.value) + sum(int(s.amount.value) for s in incoming)
    known = fulfilled[0] + (3 if fulfilled[1] == -1 else fulfilled[1])
    assert sent >= 2_000_000 + known * PACKET
    problems = books_problems(
        sent=sent,
        outgoing=outgoing,
        incoming=incoming,
        transfers=_transfers(pair),
        alice=first.account(),
        bob=bob,
        alice_ledger=pair.ledger_balance("alice-ledger"),
        bob_ledger=pair.ledger_balance("bob-ledger"),
    )
    assert not problems, "\n".join(problems) + pair.logs()
    balance = int(first.account().clearing_balance.value)
    assert tier.views() == [balance, balance]
    assert int(second.account().clearing_balance.value) == balance  # one engine store
    outcome = reconcile(first)
    assert outcome["status"] == "agree" and outcome["exit_status"] == 0, outcome


def _transfers(pair: twohost.Pair) -> list[tuple[str, str, int]]:
    """(transfer id, payee, amount) of every transfer out of alice-ledger, from the ledger."""
    connection = sqlite3.connect(pair.ledger_db, timeout=10)
    try:
        rows = connection.execute(
            "SELECT transfer_id, to_account_id, amount FROM transfers "
            "WHERE from_account_id = 'alice-ledger' ORDER BY sequence"
        ).fetchall()
    finally:
        connection.close()
    return [(t, to, int(amount)) for t, to, amount in rows]
