"""The crash tests' layer over host.demo.twohost: the simulated ledger and two peered hosts,
Alice and Bob, started with failpoints armed (sdk.failpoints) and ready to settle at once.

Each host is ``ilp-host run`` supervising the simledger-python adaptor, or, engine
``external`` (proposal 2), ``ilp-host connector`` + ``ilp-host engine`` from one config file,
each of which can be killed and restarted on its own. By default no packet triggers a
settlement: the tests settle through the admin API.

The checks read what an operator or an auditor would read: the admin API of each host, the
ledger's book (its SQLite file, read-only queries), and, to prove that a crash happened at the
intended point, the host's engine database and the adaptor's state file while a process is down.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from host.demo import twohost
from host.demo.twohost import ACCOUNT_SCALE, Side
from host.pb.ilphost.admin.v1 import admin_pb2
from sdk.pb.ilphost.types.v1 import types_pb2

FUNDING = 100_000  # cents minted into alice-ledger
OUTGOING = admin_pb2.SETTLEMENT_DIRECTION_OUTGOING
INCOMING = admin_pb2.SETTLEMENT_DIRECTION_INCOMING
COMPLETED = admin_pb2.SETTLEMENT_STATE_COMPLETED
FAILED = admin_pb2.SETTLEMENT_STATE_FAILED
SERVING = admin_pb2.PROCESS_STATE_SERVING
_T = TypeVar("_T")
#: A threshold at the credit limit: packets never trigger a settlement by themselves.
NO_AUTOMATIC_SETTLEMENT = -2_000_000
#: The adaptors' restart backoff (initial, max seconds): a killed adaptor returns quickly.
RESTART = (0.2, 2.0)


class Host(twohost.Host):
    """A host of the pair, with readers of the files its processes leave (even while down)."""

    def engine_rows(self) -> list[tuple[str, str, str]]:
        """(id, direction, state) of every settlement in the engine database, read directly
        (for a host that is down: what its crash left on disk)."""
        return _query(self.engine_db, "SELECT id, direction, state FROM settlements ORDER BY seq")

    def adaptor_incoming(self) -> list[tuple[str, int]]:
        """(settlement id, acknowledged) of every incoming transfer in the adaptor's state."""
        return _query(
            self.adaptor_db, "SELECT settlement_id, acknowledged FROM incoming ORDER BY sequence"
        )

    def peer_ledger_account(self) -> str | None:
        """The peer's ledger account, once the adaptors exchanged them (None before)."""
        rows = _query(
            self.adaptor_db, "SELECT ledger_account FROM peers WHERE account_id = ?", (self.peer,)
        )
        return rows[0][0] if rows else None

    def adaptor_sent_keys(self) -> list[str]:
        """The SendMoney idempotency keys the adaptor has claimed (it has started paying)."""
        return [
            row[0] for row in _query(self.adaptor_db, "SELECT idempotency_key FROM sdk_payments")
        ]


def _query(path: Path, sql: str, parameters: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of a read query on another process's SQLite file (WAL: it sees what committed)."""
    if not path.exists():  # connect() would create it, empty, under the process that owns it
        raise AssertionError(f"{path} does not exist (yet)")
    connection = sqlite3.connect(path, timeout=10)
    try:
        return [tuple(row) for row in connection.execute(sql, parameters).fetchall()]
    finally:
        connection.close()


class Pair(twohost.Pair):
    """The ledger and both hosts, with the crash tests' actions and verdict."""

    host_class = Host
    alice: Host
    bob: Host

    def __init__(
        self,
        directory: Path,
        alice_threshold: int = NO_AUTOMATIC_SETTLEMENT,
        *,
        engines: tuple[str, str] = ("internal", "internal"),
        bob_threshold: int = NO_AUTOMATIC_SETTLEMENT,
    ) -> None:
        """``engines``: where Alice's and Bob's engines run (see twohost.ENGINE_PLACES)."""
        sides = (
            Side(engine=engines[0], threshold=alice_threshold),
            Side(engine=engines[1], threshold=bob_threshold),
        )
        super().__init__(directory, sides, funding=FUNDING, restart=RESTART)

    def wait_for(self, what: str, check: Callable[[], _T | None]) -> _T:
        """twohost's wait, failing the test (AssertionError) rather than with HarnessError."""
        try:
            return super().wait_for(what, check)
        except twohost.HarnessError as exc:
            raise AssertionError(str(exc)) from None

    def wait_ready(self, host: Host, *, link: bool = True) -> None:
        """The host's adaptor serves and its account exists; with ``link``, its peer link is
        also READY (at first start: the adaptors exchanged ledger accounts over it). A
        restarted host's link stays IDLE until it carries something."""

        def ready() -> bool | None:
            if host.adaptor().state != SERVING:
                return None
            host.account()  # NOT_FOUND until the adaptor served and the account was created
            if link:
                request = admin_pb2.ListPeersRequest()
                peers = host.connector.ListPeers(request, timeout=5).peers
                ready = types_pb2.CONNECTIVITY_STATE_READY
                if not peers or any(p.link.state != ready for p in peers):
                    return None
            return True

        self.wait_for(
            f"{host.name}'s adaptor and account" + (" and peer link" if link else ""), ready
        )

    def send_packets(self, amount: int, count: int, concurrency: int = 4) -> int:
        """Alice sends ``count`` packets of ``amount`` to Bob; all must be fulfilled. The total."""
        last = self.send(amount, count, concurrency)
        assert last.done and last.fulfilled == count, f"packets: {last}{self.logs()}"
        return amount * count

    def settle(self, amount: int, key: str) -> admin_pb2.Settlement:
        """Admin Settle on Alice for account bob (account scale)."""
        request = admin_pb2.SettleRequest(
            account_id="bob",
            amount=types_pb2.Amount(value=str(amount), scale=ACCOUNT_SCALE),
            idempotency_key=key,
        )
        return self.alice.admin.Settle(request, timeout=30).settlement

    # -- reading the ledger -----------------------------------------------------------------

    def balance_on_file(self, account_id: str) -> int:
        """The balance of ``account_id`` in the ledger's file (what committed with the
        transfers that :meth:`transfers_from` reads)."""
        rows = _query(
            self.ledger_db, "SELECT balance FROM accounts WHERE account_id = ?", (account_id,)
        )
        return int(rows[0][0]) if rows else 0

    def transfers_from(self, account_id: str) -> list[tuple[str, str, int]]:
        """(transfer id, payee, amount) of every transfer out of ``account_id``, in order."""
        rows = _query(
            self.ledger_db,
            "SELECT transfer_id, to_account_id, amount FROM transfers "
            "WHERE from_account_id = ? ORDER BY sequence",
            (account_id,),
        )
        return [(t, to, int(amount)) for t, to, amount in rows]

    # -- the verdict ------------------------------------------------------------------------

    def settled_books(self, sent: int, settlements: int) -> None:
        """Wait until Alice's ``settlements`` are completed and credited by Bob, then check
        that the ledger paid each exactly once and both sides' balances add up."""

        def quiet() -> tuple[list[admin_pb2.Settlement], list[admin_pb2.Settlement]] | None:
            # A split host's engine catches up with its connector's log asynchronously: read the
            # books once it has.
            if not all(host.in_step() for host in self.hosts):
                return None
            out = [s for s in self.alice.settlements() if s.direction == OUTGOING]
            inc = [s for s in self.bob.settlements() if s.direction == INCOMING]
            failed = [s for s in out + inc if s.state == FAILED]
            assert not failed, f"FAILED settlements: {failed}{self.logs()}"
            done = len(out) == settlements and all(s.state == COMPLETED for s in out)
            if done and len(inc) == settlements and all(s.state == COMPLETED for s in inc):
                return out, inc
            return None

        outgoing, incoming = self.wait_for(
            f"{settlements} settlement(s) completed by Alice and acknowledged by Bob", quiet
        )
        problems = books_problems(
            sent=sent,
            outgoing=outgoing,
            incoming=incoming,
            transfers=self.transfers_from("alice-ledger"),
            alice=self.alice.account(),
            bob=self.bob.account(),
            alice_ledger=self.ledger_balance("alice-ledger"),
            bob_ledger=self.ledger_balance("bob-ledger"),
        )
        assert not problems, "the books do not add up:\n  " + "\n  ".join(problems) + self.logs()
        for host in self.hosts:
            self.wait_for(
                f"{host.name}'s connector to hold the balance her engine holds",
                lambda host=host: host.in_step() or None,
            )


def books_problems(
    *,
    sent: int,
    outgoing: list[admin_pb2.Settlement],
    incoming: list[admin_pb2.Settlement],
    transfers: list[tuple[str, str, int]],
    alice: admin_pb2.Account,
    bob: admin_pb2.Account,
    alice_ledger: int,
    bob_ledger: int,
) -> list[str]:
    """What does not add up, once every settlement is final (empty: all is well). Pure.

    - The ledger: exactly one transfer out of alice-ledger per settlement, with the id the
      adaptor derives from the settlement id (its idempotency key), to bob-ledger, for the
      settlement's ledger amount; nothing else; balances moved by exactly that.
    - Alice: balance = -sent + every amount debited for settlement (+ leftover).
    - Bob: credited each of Alice's ledger payments once; balance = sent - credited.
    """
    problems = []
    expected = sorted(
        (f"alice-ledger:{s.id}", "bob-ledger", int(s.ledger_amount.value)) for s in outgoing
    )
    if sorted(transfers) != expected:
        problems.append(f"ledger transfers out of alice-ledger {transfers}, expected {expected}")
    paid = sum(int(s.ledger_amount.value) for s in outgoing)
    if (alice_ledger, bob_ledger) != (FUNDING - paid, paid):
        problems.append(
            f"ledger balances alice {alice_ledger} bob {bob_ledger}, expected "
            f"{FUNDING - paid} and {paid}"
        )
    debited = sum(int(s.amount.value) for s in outgoing) + int(alice.leftover.value)
    if int(alice.clearing_balance.value) != -sent + debited:
        problems.append(
            f"Alice's balance {alice.clearing_balance.value} != -sent {sent} + debited {debited}"
        )
    if int(alice.pending_settlement.value) != 0:
        problems.append(f"Alice still has {alice.pending_settlement.value} pending settlement")
    paid_ids = sorted(s.ledger_settlement_id for s in outgoing)
    credited_ids = sorted(s.id.split(":", 2)[2] for s in incoming)
    if paid_ids != sorted(t[0] for t in expected) or credited_ids != paid_ids:
        problems.append(f"Alice paid {paid_ids}, Bob credited {credited_ids}")
    credited = sum(int(s.amount.value) for s in incoming)
    if int(bob.clearing_balance.value) != sent - credited:
        problems.append(
            f"Bob's balance {bob.clearing_balance.value} != sent {sent} - credited {credited}"
        )
    return problems


@contextlib.contextmanager
def running_pair(
    alice_armed: tuple[str, ...] = (),
    bob_armed: tuple[str, ...] = (),
    alice_threshold: int = NO_AUTOMATIC_SETTLEMENT,
    engines: tuple[str, str] = ("internal", "internal"),
    bob_threshold: int = NO_AUTOMATIC_SETTLEMENT,
) -> Iterator[Pair]:
    """A fresh ledger and both hosts (their engines where ``engines`` say), started with these
    failpoints armed, and ready to settle."""
    directory = Path(tempfile.mkdtemp(prefix="ilpcr"))  # short: unix socket paths
    pair = Pair(directory, alice_threshold, engines=engines, bob_threshold=bob_threshold)
    try:
        pair.start_ledger()
        pair.start_hosts((alice_armed, bob_armed))
        for host in pair.hosts:
            # Not the peer link: one exchange of ledger accounts (a message and its reply) over
            # either link informs both adaptors, and the other link stays IDLE until used.
            pair.wait_ready(host, link=False)
        for host in pair.hosts:
            # Before this, SendMoney is refused (FAILED_PRECONDITION) and incoming transfers
            # wait: a crash test must start from a pair that can settle at once.
            pair.wait_for(
                f"{host.name}'s adaptor to learn {host.peer}-ledger",
                lambda host=host: (
                    True if host.peer_ledger_account() == f"{host.peer}-ledger" else None
                ),
            )
        yield pair
    finally:
        pair.close()
        shutil.rmtree(directory, ignore_errors=True)
